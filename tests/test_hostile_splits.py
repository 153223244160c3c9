"""Hostile splits and labels: a patient or a picture (same bytes, or resized and re-encoded) in two given splits, the
near-duplicate list, and a label typo that would become a class of its own. Every image is made here with PIL."""

import logging
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_ingest import entry, run

from medxfer import duplicates
from medxfer.duplicates import near_duplicates, perceptual_hash
from medxfer.imaging import read_image
from medxfer.ingest import IngestError, ingest_dataset, pseudonymize

REPO = Path(__file__).resolve().parents[1]
SALT = {"privacy": {"salt": "test-salt"}}


def picture(seed: int, side: int = 96) -> np.ndarray:
    """A smooth random grey picture (upscaled 8x8 noise): like an X-ray, it keeps its look when resized."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC))


def save(path: Path, pixels: np.ndarray, side: int | None = None) -> Path:
    """Write `pixels` to `path` (format from the suffix), resized to `side` first if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    image = image.resize((side, side), Image.Resampling.LANCZOS) if side else image
    image.save(path, quality=90) if path.suffix == ".jpg" else image.save(path)
    return path


def hash_of(path: Path) -> int:
    return int(perceptual_hash(read_image(path, "xray")), 16)


def csv_set(root: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """PNG files and labels.csv for rows (path, label, patient_id, split); each file its own picture."""
    for seed, (path, *_) in enumerate(rows):
        save(root / path, picture(seed))
    pd.DataFrame(rows, columns=["path", "label", "patient_id", "split"]).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


# Patient P1 has an image in train and one in test; the others are each in one given split.
LEAKY_ROWS = [
    ("a0.png", "normal", "P1", "train"),
    ("a1.png", "normal", "P1", "test"),
    ("b.png", "normal", "P2", "train"),
    ("c.png", "pneumonia", "P3", "train"),
    ("d.png", "pneumonia", "P4", "test"),
    ("e.png", "normal", "P5", "val"),
    ("f.png", "pneumonia", "P6", "val"),
]


def test_patient_in_two_given_splits_stops_naming_the_pseudonym_and_files(tmp_path):
    manifest = csv_set(tmp_path / "raw", LEAKY_ROWS)
    ds = entry(tmp_path / "raw", format="csv", manifest=str(manifest), **SALT)
    with pytest.raises(IngestError, match="1 patient\\(s\\) in more than one split") as err:
        run(tmp_path, "leaky", ds)
    message = str(err.value)
    assert f"patient {pseudonymize('P1', 'test-salt')} in train: a0.png; test: a1.png" in message
    assert "P1" not in message  # only the pseudonym
    assert not (tmp_path / "manifest.csv").exists()


def test_leakage_drop_keeps_the_patient_in_its_earliest_split(tmp_path):
    manifest = csv_set(tmp_path / "raw", LEAKY_ROWS)
    ds = entry(tmp_path / "raw", format="csv", manifest=str(manifest), leakage="drop", max_reject_fraction=0.2, **SALT)
    table = run(tmp_path, "leaky", ds)
    assert "a1.png" not in set(table["path"]) and table.set_index("path").loc["a0.png", "split"] == "train"
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    quarantine = pd.read_csv(tmp_path / "quarantine.csv")
    assert quarantine["path"].tolist() == ["a1.png"]
    alias = pseudonymize("P1", "test-salt")
    assert (
        quarantine.loc[0, "reason"] == f"leakage: patient {alias} also in split 'train' (a0.png); dropped from 'test'"
    )
    assert "P1" not in (tmp_path / "quarantine.csv").read_text() + (tmp_path / "manifest.csv").read_text()


def mura_set(root: Path) -> tuple[dict, str, list[str]]:
    """MURA folders where patient00001 is in train/ and in valid/ (the test split)."""
    files = [f"train/XR_WRIST/patient0000{i}/study1_{('negative', 'positive')[i % 2]}/image1.png" for i in range(1, 7)]
    files += ["valid/XR_WRIST/patient00001/study2_positive/image1.png"]
    files += ["valid/XR_WRIST/patient00008/study1_negative/image1.png"]
    for seed, rel in enumerate(files):
        save(root / rel, picture(seed))
    return entry(root, format="mura", **SALT), "XR_WRIST/patient00001", [files[0], files[6]]


def npz_set(root: Path) -> tuple[dict, str, list[str]]:
    """A flat .npz with a split column where patient Q is in train and in test."""
    root.mkdir(parents=True)
    patients = ["Q", "R", "S", "T", "U", "Q", "V", "W"]
    split = ["train", "train", "train", "train", "val", "test", "test", "val"]
    images = np.stack([picture(seed, 32) for seed in range(8)])
    np.savez(root / "flat.npz", images=images, labels=np.array([0, 1] * 4), patient_ids=patients, split=split)
    return entry(root, format="npz", file="flat.npz", **SALT), "Q", ["flat.npz#images[0]", "flat.npz#images[5]"]


@pytest.mark.parametrize("layout", [mura_set, npz_set])
def test_patient_in_two_given_splits_stops_for_mura_folders_and_npz_splits(tmp_path, layout):
    ds, patient, files = layout(tmp_path / "raw")
    with pytest.raises(IngestError, match="patient\\(s\\) in more than one split") as err:
        run(tmp_path, "leaky", ds)
    message = str(err.value)
    assert f"patient {pseudonymize(patient, 'test-salt')} in " in message
    assert all(f in message for f in files)


def test_an_image_without_a_split_joins_its_patients_given_split(tmp_path):
    rows = [("x.png", "normal", "P1", "test"), ("y.png", "normal", "P1", "")]  # y would be split on its own
    rows += [(f"r{i}.png", ("normal", "pneumonia")[i % 2], f"Q{i}", ("train", "")[i % 2]) for i in range(12)]
    manifest = csv_set(tmp_path / "raw", rows)
    table = run(tmp_path, "partial", entry(tmp_path / "raw", format="csv", manifest=str(manifest))).set_index("path")
    assert table.loc["y.png", "split"] == "test"


def test_patients_sharing_a_picture_are_split_together(tmp_path):
    """Ten pairs of patients share one picture: five as identical bytes, five as a resized JPEG copy with the same
    perceptual hash. A random split would part at least one pair with probability ~0.999."""
    root, rows, seeds = tmp_path / "raw", [], iter(range(100))
    for k in range(10):
        label = ("normal", "pneumonia")[k % 2]
        while True:  # a picture whose JPEG copy keeps every hash bit (most do; bits at the median may flip)
            seed = next(seeds)
            first = save(root / f"p{k}a.png", picture(seed))
            second = save(root / f"p{k}b.png", picture(seed)) if k < 5 else save(root / f"p{k}b.jpg", picture(seed), 80)
            if hash_of(first) == hash_of(second):
                break
        rows += [(first.name, label, f"A{k}"), (second.name, label, f"B{k}")]
    pd.DataFrame(rows, columns=["path", "label", "patient_id"]).to_csv(root / "labels.csv", index=False)
    table = run(tmp_path, "pairs", entry(root, format="csv", manifest=str(root / "labels.csv")))
    assert len(table) == 20 and set(table["split"]) == {"train", "val", "test"}
    pair = table["path"].str.extract(r"^p(\d)")[0]
    assert table.groupby(pair)["split"].nunique().max() == 1
    assert len(pd.read_csv(tmp_path / "duplicates.csv")) == 0  # nothing left across splits


def folder_set(root: Path) -> Path:
    """train/ and test/ class folders; test/normal/copy.jpg is train/normal/img0.png resized to 80 px as JPEG."""
    for j, split in enumerate(("train", "test")):
        for k, label in enumerate(("normal", "pneumonia")):
            for i in range(3):
                save(root / split / label / f"img{i}.png", picture(100 * j + 10 * k + i))
    return save(root / "test" / "normal" / "copy.jpg", picture(0), 80)


def test_resized_jpeg_copy_in_another_split_stops_ingest(tmp_path):
    copy = folder_set(tmp_path / "raw")
    assert hash_of(copy) == hash_of(tmp_path / "raw" / "train" / "normal" / "img0.png")
    with pytest.raises(IngestError, match="1 perceptually identical image\\(s\\) in more than one split") as err:
        run(tmp_path, "copies", entry(tmp_path / "raw", format="imagefolder"))
    assert "train: train/normal/img0.png; test: test/normal/copy.jpg" in str(err.value)
    pairs = pd.read_csv(tmp_path / "duplicates.csv")
    assert pairs.iloc[0].tolist() == ["train/normal/img0.png", "train", "test/normal/copy.jpg", "test", 0]


def test_leakage_drop_quarantines_the_resized_copy(tmp_path):
    folder_set(tmp_path / "raw")
    ds = entry(tmp_path / "raw", format="imagefolder", leakage="drop", max_reject_fraction=0.1)
    table = run(tmp_path, "copies", ds)
    assert "test/normal/copy.jpg" not in set(table["path"]) and len(table) == 12
    reason = pd.read_csv(tmp_path / "quarantine.csv").set_index("path").loc["test/normal/copy.jpg", "reason"]
    assert reason.startswith("leakage: perceptually identical image (pHash ")
    assert reason.endswith("also in split 'train' (train/normal/img0.png); dropped from 'test'")
    assert not pd.read_csv(tmp_path / "duplicates.csv")["path_b"].eq("test/normal/copy.jpg").any()


def test_near_duplicates_are_listed_with_their_distance_not_stopped(tmp_path):
    root = tmp_path / "raw"
    for split in ("train", "test"):
        for k, label in enumerate(("normal", "pneumonia")):
            for i in range(3):
                save(root / split / label / f"img{i}.png", picture(200 + 10 * k + i + (split == "test") * 50))
    marked = picture(1).copy()
    marked[:16, :16] = 255  # a burnt-in marker on the same picture
    original, changed = (
        save(root / "train" / "normal" / "orig.png", picture(1)),
        save(root / "test" / "normal" / "m.png", marked),
    )
    distance = bin(hash_of(original) ^ hash_of(changed)).count("1")
    assert 0 < distance <= 4  # the precondition: near, not identical
    table = run(tmp_path / "o1", "near", entry(root, format="imagefolder"))
    assert len(table) == 14
    pairs = pd.read_csv(tmp_path / "o1" / "duplicates.csv")
    row = pairs[pairs["path_b"] == "test/normal/m.png"]
    assert row[["path_a", "distance"]].values.tolist() == [["train/normal/orig.png", distance]]
    assert pairs["distance"].is_monotonic_increasing and (pairs["split_a"] != pairs["split_b"]).all()
    run(tmp_path / "o2", "near", entry(root, format="imagefolder", near_duplicate_distance=distance - 1))
    assert not pd.read_csv(tmp_path / "o2" / "duplicates.csv")["path_b"].eq("test/normal/m.png").any()


def test_pair_search_in_blocks_equals_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 300, dtype=np.uint64)
    hashes[150:170] = hashes[:20] ^ (np.uint64(1) << rng.integers(0, 63, 20).astype(np.uint64))  # 1 bit apart
    hashes[170:180] = hashes[20:30]  # identical
    split = rng.choice(["train", "val", "test"], 300)
    table = pd.DataFrame(
        {"path": [f"i{n}" for n in range(300)], "split": split, "phash": [f"{h:016x}" for h in hashes]}
    )
    monkeypatch.setattr(duplicates, "BLOCK_PAIRS", 50)  # many small blocks
    found = near_duplicates(table, 20)
    order = {"train": 0, "val": 1, "test": 2}
    expected = set()
    for i, j in combinations(range(300), 2):
        distance = bin(int(hashes[i]) ^ int(hashes[j])).count("1")
        if split[i] != split[j] and distance <= 20:
            a, b = sorted((i, j), key=lambda n: order[split[n]])
            expected.add((f"i{a}", f"i{b}", distance))
    assert set(zip(found["path_a"], found["path_b"], found["distance"], strict=True)) == expected
    assert len(found) == len(expected) and {0, 1} <= set(found["distance"])


def typo_set(root: Path) -> Path:
    rows = [(f"n{i}.png", "normal", f"N{i}", "") for i in range(4)]
    rows += [(f"p{i}.png", "pneumonia", f"P{i}", "") for i in range(4)] + [("t.png", "pnuemonia", "T", "")]
    return csv_set(root, rows)


def test_a_label_typo_stops_ingest_naming_the_tiny_class(tmp_path, caplog):
    manifest = typo_set(tmp_path / "raw")
    ds = entry(tmp_path / "raw", format="csv", manifest=str(manifest))
    log = logging.getLogger("test-hostile-splits")
    with caplog.at_level(logging.INFO, "test-hostile-splits"), pytest.raises(IngestError) as err:
        ingest_dataset("typo", ds, tmp_path / "manifest.csv", tmp_path / "quarantine.csv", log=log)
    assert "class(es) ['pnuemonia'] have fewer than min_class_size=2 images" in str(err.value)
    assert "images per class: normal 4, pneumonia 4, pnuemonia 1" in caplog.text
    table = run(
        tmp_path / "o1", "typo", entry(tmp_path / "raw", format="csv", manifest=str(manifest), min_class_size=1)
    )
    assert sorted(set(table["label_name"])) == ["normal", "pneumonia", "pnuemonia"]
    fields = {
        "format": "csv",
        "manifest": str(manifest),
        "classes": ["normal", "pneumonia"],
        "max_reject_fraction": 0.2,
    }
    table = run(tmp_path / "o2", "typo", entry(tmp_path / "raw", **fields))  # with classes: quarantined instead
    assert len(table) == 8 and pd.read_csv(tmp_path / "o2" / "quarantine.csv")["path"].tolist() == ["t.png"]


def test_cli_ingest_writes_duplicates_csv(tmp_path):
    folder_set(tmp_path / "raw")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"datasets: {{m: {{format: imagefolder, root: {tmp_path / 'raw'}, leakage: drop, max_reject_fraction: 0.1}}}}\n"
        "finetune: {targets: [m], inits: [scratch]}\n"
    )
    cli = [sys.executable, "-m", "medxfer.cli", "ingest", str(config), "m", str(tmp_path / "out")]
    result = subprocess.run(cli, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    pairs = pd.read_csv(tmp_path / "out" / "duplicates.csv")
    assert list(pairs.columns) == ["path_a", "split_a", "path_b", "split_b", "distance"]
    assert "images per class: normal 6, pneumonia 6" in result.stderr
