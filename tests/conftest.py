"""Shared fixtures: small real data sets generated on disk and the tiny workflow run, once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# pytest-xdist workers share the cores: one torch/OpenMP thread each (set before torch is imported); tests that
# pass threads= to a stage still get theirs. Those then outnumber the cores, and OpenMP's default spin-waiting
# made them 5-10x slower (tests/test_train.py: 74 s on two workers, 30 s in one process); passive waiting yields.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def tiny_workdir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A fresh temp dir holding tests/workflow/tiny.yaml as its config/config.yaml."""
    workdir = tmp_path_factory.mktemp(name)
    (workdir / "config").mkdir()
    shutil.copy(REPO / "tests" / "workflow" / "tiny.yaml", workdir / "config" / "config.yaml")
    return workdir


def snakemake_command(workdir: Path, *args: str, python: str = sys.executable) -> list[str]:
    """The real Snakefile on `workdir`, from the given interpreter (one with the SLURM plugin for cluster runs)."""
    return [python, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]


def run_snakemake(
    workdir: Path, *args: str, python: str = sys.executable, timeout: float = 900
) -> subprocess.CompletedProcess:
    """The real Snakefile on `workdir` (its config/config.yaml), in a subprocess; output captured."""
    return subprocess.run(
        snakemake_command(workdir, *args, python=python), capture_output=True, text=True, timeout=timeout
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reads the tiny workflow run says so with the workflow or slurm mark: the unit layer
    (`-m "not workflow and not slurm"`) must never start that run (minutes) for one test."""
    unmarked = [
        item.nodeid
        for item in items
        if "run_dir" in getattr(item, "fixturenames", ())
        and not item.get_closest_marker("workflow")
        and not item.get_closest_marker("slurm")
    ]
    if unmarked:
        raise pytest.UsageError("tests that use run_dir need @pytest.mark.workflow: " + ", ".join(unmarked))


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadscope` on the layer of the tiny workflow run: two lanes, the SLURM tests (tests/test_slurm.py) on
    one worker and all the others in order on the other, since they edit the local run's inputs and config and put
    them back. The cluster run mostly waits on sbatch, so the lanes overlap well. The lanes go by file: the
    controller sees only test ids, and xdist_group marks do not reach it with pytest 9.2 (pytest-xdist#1386)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TwoLanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "slurm" if nodeid.startswith("tests/test_slurm.py") else "local-run"

    return TwoLanes(config, log)


@pytest.fixture(scope="session")
def snakemake():
    return run_snakemake


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole workflow run locally once on tests/workflow/tiny.yaml (`--cores 2`); shared by every workflow test
    (dry runs after) and the SLURM tests (which compare their results with it). Under pytest-xdist the first worker
    that asks runs it and the others wait for it (a file lock beside the workers' temp folders).

    $MEDXFER_TEST_RUN_DIR names an already finished tiny run to reuse instead (development only: tests edit it and
    put their edits back).
    """
    if os.environ.get("MEDXFER_TEST_RUN_DIR"):
        return Path(os.environ["MEDXFER_TEST_RUN_DIR"])
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return run_tiny_workflow(tmp_path_factory)
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    done, failed = shared / "tiny-run.path", shared / "tiny-run.failed"
    with FileLock(shared / "tiny-run.lock"):
        if failed.is_file():
            pytest.fail(failed.read_text())
        if not done.is_file():
            try:
                done.write_text(str(run_tiny_workflow(tmp_path_factory)))
            except pytest.fail.Exception as error:
                failed.write_text(str(error))
                raise
        return Path(done.read_text())


def run_tiny_workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tiny_workdir(tmp_path_factory, "workflow")
    result = run_snakemake(workdir, "--cores", "2", timeout=1800)  # ~4 min alone on 2 cores, 15 on shared ones
    if result.returncode != 0:
        pytest.fail(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return workdir


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medxfer import demo

    root = tmp_path_factory.mktemp("demo")
    demo.synthesize_xray_source(root / "xray_source", 96, 64, 3)
    demo.synthesize_mura(root / "mura", 16, 64, 3)
    demo.synthesize_ct(root / "ct", 14, 64, 3)
    return root


def dataset_config(demo: Path, kind: str, **overrides) -> dict:
    """A validated data set entry for one generated demo set."""
    from medxfer.config import validate

    entries = {
        "xray_source": {
            "format": "csv",
            "root": str(demo / "xray_source"),
            "manifest": str(demo / "xray_source" / "labels.csv"),
            "masks": str(demo / "xray_source" / "masks"),
        },
        "mura": {"format": "mura", "root": str(demo / "mura"), "masks": str(demo / "mura" / "masks")},
        "ct": {
            "format": "dicom",
            "root": str(demo / "ct"),
            "manifest": str(demo / "ct" / "labels.csv"),
            "modality": "ct",
            "windows": [[40, 400], [-600, 1500]],
            "masks": str(demo / "ct" / "masks"),
        },
    }
    entry = entries[kind] | overrides
    conf = validate({"datasets": {kind: entry}, "finetune": {"targets": [kind], "inits": ["scratch"]}})
    return conf["datasets"][kind]


@pytest.fixture(scope="session")
def cached(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Ingested + cached demo sets: name -> (manifest, images)."""
    out = tmp_path_factory.mktemp("cached")
    kinds = ("xray_source", "mura", "ct")
    return {kind: ingest_and_cache(dataset_config(demo_root, kind), kind, out / kind) for kind in kinds}


def ingest_and_cache(entry: dict, name: str, out: Path, threads: int = 2) -> tuple[Path, Path]:
    """One validated data set entry ingested and cached under `out` at 64 px: (manifest, images)."""
    from medxfer.cache import cache_images
    from medxfer.ingest import ingest_dataset

    manifest, images = out / "manifest.csv", out / "images_64.npy"
    ingest_dataset(name, entry, manifest, out / "quarantine.csv", seed=0)
    cache_images(entry, manifest, images, threads=threads)
    return manifest, images


def result_identity(rel: str) -> dict:
    """{"identity": ...} as the workflow writes it into a result's metrics.json, for a test result at `rel`:
    finetune/<target>/<init>/seed<k>/<arch> or classify/<target>/<init>/seed<k>/<features>/<classifier> (seed 0
    first), or without the seed level, finetune/<target>/<run>/<arch> with `run` = <init>[-seed<k>]."""
    from medxfer.identity import identity

    stage, target, run, *rest = rel.strip("/").split("/")
    if rest and rest[0].startswith("seed") and rest[0][4:].isdigit():
        seed_level, rest = rest[0][4:], rest[1:]
        run = run if seed_level == "0" else f"{run}-seed{seed_level}"
    init, _, seed = run.partition("-seed")
    features, classifier = (rest[0], "cnn") if stage == "finetune" else rest[:2]
    return {"identity": identity(target, init, int(seed or 0), run, features, classifier)}
