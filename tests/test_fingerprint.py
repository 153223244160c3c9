"""Content fingerprints of raw data: content decides, file times do not."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medxfer.fingerprint import (
    ABSENT,
    dataset_fingerprint,
    fingerprint,
    generated_fingerprint,
    raw_paths,
    sidecar_key,
    write_fingerprint,
)


def make_tree(root: Path) -> None:
    for rel, text in {"a/1.png": "one", "a/2.png": "two", "b/3.png": "three", "labels.csv": "path,label\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_times_and_hidden_files_do_not_change_the_fingerprint(tmp_path):
    make_tree(tmp_path / "raw")
    before = fingerprint([tmp_path / "raw"])
    for path in (tmp_path / "raw").rglob("*"):
        os.utime(path, ns=(1, 1))  # what a checkout does: same bytes, other times
    (tmp_path / "raw" / ".snakemake_timestamp").write_text("")
    after = fingerprint([tmp_path / "raw"])
    assert after == before
    assert before["files"] == 4 and before["bytes"] == len("onetwothreepath,label\n")


def test_edited_added_renamed_and_removed_files_change_it(tmp_path):
    raw = tmp_path / "raw"
    make_tree(raw)
    original = fingerprint([raw])["sha256"]
    seen = {original}
    (raw / "a" / "1.png").write_text("ONE")  # same size, other content
    seen.add(fingerprint([raw])["sha256"])
    (raw / "a" / "4.png").write_text("four")
    seen.add(fingerprint([raw])["sha256"])
    (raw / "a" / "4.png").rename(raw / "b" / "4.png")
    seen.add(fingerprint([raw])["sha256"])
    assert len(seen) == 4
    (raw / "b" / "4.png").unlink()
    (raw / "a" / "1.png").write_text("one")
    assert fingerprint([raw])["sha256"] == original  # back to the same bytes: the same fingerprint


def test_sidecar_caches_hashes_by_size_and_mtime(tmp_path):
    raw, sidecar = tmp_path / "raw", tmp_path / "cache" / "hashes.json"
    make_tree(raw)
    first = fingerprint([raw], sidecar)
    cached = json.loads(sidecar.read_text())
    assert len(cached) == 4
    # a wrong cached hash is trusted while size and mtime match: proof that unchanged files are not re-read
    name = str(raw / "a" / "1.png")
    cached[sidecar_key(name)][2] = "0" * 64
    sidecar.write_text(json.dumps(cached))
    assert fingerprint([raw], sidecar)["sha256"] != first["sha256"]
    os.utime(name, ns=(5, 5))  # a new mtime makes it re-hash the file: the true fingerprint again
    assert fingerprint([raw], sidecar) == first
    assert json.loads(sidecar.read_text())[sidecar_key(name)][1] == 5


def test_missing_data_and_dataset_paths(tmp_path):
    assert fingerprint([tmp_path / "nothing"])["sha256"] == ABSENT
    make_tree(tmp_path / "raw")
    outside = tmp_path / "labels_elsewhere.csv"
    outside.write_text("path,label\na/1.png,x\n")
    entry = {"format": "csv", "root": str(tmp_path / "raw"), "manifest": str(outside)}
    assert raw_paths(entry) == [tmp_path / "raw", outside]
    inside = entry | {"manifest": str(tmp_path / "raw" / "labels.csv")}
    assert raw_paths(inside) == [tmp_path / "raw"]
    npz = {"format": "npz", "root": str(tmp_path), "file": "x.npz"}
    assert raw_paths(npz) == [tmp_path / "x.npz"]
    digest = dataset_fingerprint("mine", entry, tmp_path / "side")
    outside.write_text("path,label\na/1.png,y\n")
    assert dataset_fingerprint("mine", entry, tmp_path / "side") != digest
    assert (tmp_path / "side" / "mine.json").is_file()


def test_write_fingerprint_records_settings_and_digest(tmp_path):
    make_tree(tmp_path / "raw")
    record = write_fingerprint(tmp_path / "raw", tmp_path / "raw.json", seed=3)
    assert json.loads((tmp_path / "raw.json").read_text()) == record
    assert record["seed"] == 3 and record["sha256"] == fingerprint([tmp_path / "raw"])["sha256"]


def test_generated_data_count_by_settings_until_edited(tmp_path):
    """Absent (not generated yet) and as generated give one value, so a value recorded before generation holds."""
    entry = {"format": "csv", "root": str(tmp_path / "raw"), "manifest": str(tmp_path / "raw" / "labels.csv")}
    stamp, side = tmp_path / "raw.json", tmp_path / "side"
    before = generated_fingerprint("demo", entry, stamp, {"seed": 3}, side)
    make_tree(tmp_path / "raw")
    write_fingerprint(tmp_path / "raw", stamp, seed=3)
    assert generated_fingerprint("demo", entry, stamp, {"seed": 3}, side) == before
    assert generated_fingerprint("demo", entry, stamp, {"seed": 4}, side) != before  # other settings, other data

    (tmp_path / "raw" / "a" / "1.png").write_text("edited by hand")
    edited = generated_fingerprint("demo", entry, stamp, {"seed": 3}, side)
    assert edited == dataset_fingerprint("demo", entry, side) != before
    (tmp_path / "raw" / "a" / "1.png").write_text("one")  # as generated again
    assert generated_fingerprint("demo", entry, stamp, {"seed": 3}, side) == before
    stamp.unlink()  # without the generator's record, content decides
    assert generated_fingerprint("demo", entry, stamp, {"seed": 3}, side) == dataset_fingerprint("demo", entry, side)
