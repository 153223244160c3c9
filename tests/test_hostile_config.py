"""Hostile config and manifest files, killed runs and file modes: each gives a clear error naming the file, or is
cleaned up, never a traceback or a stale output."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, dataset_config, snakemake_command, tiny_workdir
from PIL import Image

from medxfer.cache import cache_images
from medxfer.config import ConfigError, load, validate
from medxfer.ingest import IngestError, ingest_dataset
from medxfer.io import write_json, write_text
from medxfer.preflight import input_problems
from medxfer.readers import READERS

ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "medxfer.cli", *args], capture_output=True, text=True, cwd=cwd, env=ENV
    )


# --- manifests -------------------------------------------------------------------------------------------------


def csv_dataset(tmp_path, manifest_bytes: bytes) -> dict:
    """A csv data set of two real PNGs whose manifest holds exactly `manifest_bytes`."""
    root = tmp_path / "data"
    root.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8), 128).save(root / name)
    (root / "labels.csv").write_bytes(manifest_bytes)
    conf = validate(
        {
            "datasets": {"d": {"format": "csv", "root": str(root), "manifest": str(root / "labels.csv")}},
            "finetune": {"targets": ["d"], "inits": ["scratch"]},
        }
    )
    return conf["datasets"]["d"]


MANIFEST = "path,label\na.png,pneumonie_sévère\nb.png,normal\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_manifest_with_a_byte_order_mark_is_read(tmp_path, encoding):
    ds = csv_dataset(tmp_path, MANIFEST.encode(encoding))
    found = READERS["csv"](Path(ds["root"]), ds)
    assert [r["label_name"] for r in found.rows] == ["pneumonie_sévère", "normal"]
    assert [r["path"] for r in found.rows] == ["a.png", "b.png"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (MANIFEST.encode("latin-1"), "labels.csv: not UTF-8 (byte 0xe9 at line 2); save it as UTF-8"),
        (MANIFEST.encode("utf-16-le"), "labels.csv: NUL bytes from line 1 (UTF-16 without a byte-order mark?)"),
        (b"", "labels.csv: no rows (the file is empty)"),
        (b"path,label\n\n", "labels.csv: no rows (only a header: ['path', 'label'])"),
        (b"path,label\na.png,x\nb.png,y,extra\n", "labels.csv: not a valid CSV (Error tokenizing data"),
    ],
)
def test_unreadable_manifest_names_the_file_and_what_was_found(tmp_path, data, message):
    ds = csv_dataset(tmp_path, data)
    with pytest.raises(IngestError) as err:
        READERS["csv"](Path(ds["root"]), ds)
    assert str(err.value).startswith(str(Path(ds["root"]))) and message in str(err.value)


def test_failed_ingest_rerun_leaves_no_manifest_that_cache_would_use(demo_root, tmp_path):
    root = shutil.copytree(demo_root / "xray_source", tmp_path / "xray")
    ds = dataset_config(demo_root, "xray_source", root=str(root), manifest=str(root / "labels.csv"))
    out = tmp_path / "out"
    ingest_dataset("x", ds, out / "manifest.csv", out / "quarantine.csv")
    assert (out / "manifest.csv").is_file() and (out / "quarantine.csv").is_file()
    labels = root / "labels.csv"
    labels.write_bytes(labels.read_bytes().replace(b"\n", "\ncafé,".encode("latin-1"), 1))  # a Latin-1 line 2
    with pytest.raises(IngestError, match="not UTF-8"):
        ingest_dataset("x", ds, out / "manifest.csv", out / "quarantine.csv")
    assert not (out / "manifest.csv").exists() and not (out / "quarantine.csv").exists()
    with pytest.raises(FileNotFoundError, match="ingest the data set first"):
        cache_images(ds, out / "manifest.csv", out / "images_64.npy")


def test_cli_ingest_of_a_latin1_manifest_is_one_clear_line(tmp_path):
    ds = csv_dataset(tmp_path, MANIFEST.encode("latin-1"))
    config = tmp_path / "c.yaml"
    config.write_text(
        f"datasets: {{d: {{format: csv, root: {ds['root']}, manifest: {ds['manifest']}}}}}\n"
        "finetune: {targets: [d], inits: [scratch]}\n"
    )
    result = cli("ingest", str(config), "d", str(tmp_path / "out"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{ds['manifest']}: not UTF-8 (byte 0xe9 at line 2)" in result.stderr


# --- YAML configs ----------------------------------------------------------------------------------------------

VALID = "datasets:\n  a:\n    format: mura\n    root: x\nfinetune:\n  targets: [a]\n  inits: [scratch]\n"


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        (VALID + "seed: 1\nseed: 2\n", ":9:1:", "key 'seed' given twice (first on line 8)"),
        (VALID.replace("    root: x", "    root: x\n    root: y"), ":5:5:", "key 'root' given twice (first on line 4)"),
        (VALID.replace("  inits", "\tinits"), ":7:1:", "found character '\\t' that cannot start any token"),
        (VALID + "finetune: [\n", ":9:1:", "expected the node content"),
    ],
)
def test_yaml_problem_names_file_and_line(tmp_path, text, where, problem):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}{where}") and problem in str(err.value)
    if "\\t" in problem:
        assert "indent with spaces" in str(err.value)


def test_yaml_merge_keys_still_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {format: mura, root: x}\n" + VALID.replace("  a:\n", "  a:\n    <<: *b\n"))
    with pytest.raises(ConfigError, match="'base'"):  # an unknown top-level key, so the merge itself passed
        load(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [(VALID.encode("latin-1") + "# café\n".encode("latin-1"), "not UTF-8 (byte 0xe9 at line 8)"), (b"- a\n", "list")],
)
def test_config_file_that_is_not_utf8_or_not_keys(tmp_path, data, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_validate_config_with_a_tab_is_one_clear_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(VALID.replace("  inits", "\tinits"))
    result = cli("validate-config", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{path}:7:1:" in result.stderr


def test_snakemake_refuses_a_configfile_with_a_duplicate_key(tmp_path_factory):
    workdir = tiny_workdir(tmp_path_factory, "dupkey")
    bad = workdir / "bad.yaml"
    bad.write_text("seed: 1\nresults: r\nseed: 2\n")
    result = subprocess.run(
        snakemake_command(workdir, "-n", "--quiet", "--configfile", str(bad)), capture_output=True, text=True
    )
    assert result.returncode != 0
    assert f"{bad}:3:1: key 'seed' given twice (first on line 1)" in result.stderr + result.stdout


# --- what a config points at -----------------------------------------------------------------------------------


def test_validate_config_reports_every_missing_input_at_once(tmp_path):
    (tmp_path / "present").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        "datasets:\n"
        "  gone: {format: csv, root: nowhere, manifest: nowhere/labels.csv}\n"
        "  arrays: {format: npz, root: present, file: missing.npz}\n"
        "  unused: {format: mura, root: also_nowhere}\n"
        "finetune:\n"
        "  targets: [gone, arrays]\n"
        "  inits: [scratch, imagenet]\n"
        "  archs: [resnet18, resnet81]\n"
        "  imagenet_weights: {resnet18: w/resnet18.safetensors, resnet81: w/r81.safetensors}\n"
    )
    result = cli("validate-config", str(config), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    for problem in (
        f"'datasets.gone.root': folder nowhere (relative to {tmp_path}) not found",
        "'datasets.gone.manifest': file nowhere/labels.csv",
        "'datasets.arrays.file': file present/missing.npz",
        "'finetune.imagenet_weights.resnet18': file w/resnet18.safetensors",
        "'finetune.imagenet_weights.resnet81'",
        "'finetune.archs[1]': 'resnet81' is not a timm architecture (did you mean resnet18",
    ):
        assert problem in result.stderr, problem
    assert "unused" not in result.stderr  # no run uses it


def test_inputs_the_workflow_makes_itself_are_not_asked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/demo here, no results/weights
    conf = load(REPO / "config" / "config.yaml")
    conf["finetune"] |= {"archs": ["efficientnet_lite0"], "inits": ["scratch", "imagenet", "indomain"]}
    conf["finetune"]["imagenet_weights"] = {
        "efficientnet_lite0": "results/weights/efficientnet_lite0_imagenet.safetensors"
    }
    assert input_problems(conf) == []
    conf["datasets"]["demo_mura"]["root"] = "data/demo/mura_typo"
    problems = [p.split(":")[0] for p in input_problems(conf)]
    assert problems == ["config key 'datasets.demo_mura.root'", "config key 'datasets.demo_mura.masks'"]


# --- killed runs and file modes --------------------------------------------------------------------------------

HOLD = """
import sys, time
from medxfer.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"x" * 1_000_000)
    print(tmp, flush=True)
    time.sleep(60)
"""


def hold_temp(target: Path) -> tuple[subprocess.Popen, Path]:
    """A process inside atomic_path(target), its temp file written: what a job is while it runs."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True, env=ENV)
    return proc, Path(proc.stdout.readline().strip())


def write_in_new_process(target: Path) -> None:
    code = "import sys; from medxfer.io import write_text; write_text(sys.argv[1], 'done')"
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, env=ENV)


def test_next_run_removes_the_temp_file_a_killed_run_left(tmp_path):
    target = tmp_path / "images_64.npy"
    killed, left = hold_temp(target)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert left.is_file() and left.name.startswith(".images_64.npy.")  # what a killed run leaves
    time.sleep(0.05)  # the next run starts after the temp was last written
    write_in_new_process(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images_64.npy"]


def test_a_running_writers_temp_file_is_left_alone(tmp_path):
    target = tmp_path / "out.json"
    running, its_temp = hold_temp(target)
    try:
        write_in_new_process(target)
        assert its_temp.is_file() and target.read_text() == "done"
    finally:
        running.kill()
        running.wait()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        write_text(tmp_path / "b.txt", "b")
    finally:
        os.umask(old)
    for name in ("a.json", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
