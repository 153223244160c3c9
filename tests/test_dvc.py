"""DVC for real: a local-remote push/pull round trip, and the project's dvc.yaml on a copy of the tiny run."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    """A command in `cwd`; this interpreter's bin/ first on PATH (DVC's stage runs `snakemake`); must succeed."""
    env = os.environ | GIT_ENV | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def dvc(cwd: Path, *args: str) -> str:
    result = run(cwd, *DVC, *args)
    return result.stdout + result.stderr


def init_repo(path: Path) -> None:
    run(path, "git", "init", "-q")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")


def same_trees(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(p) for p in files_a], shallow=False)
    return files_a == files_b and not mismatch and not errors


def push_delete_pull(repo: Path, remote: Path, *tracked: str) -> dict[str, Path]:
    """`dvc add` the paths, push to a local remote, delete them and the cache, `dvc pull`; returns the originals."""
    originals = {}
    for rel in tracked:
        originals[rel] = remote.parent / "originals" / rel
        shutil.copytree(repo / rel, originals[rel], symlinks=True)
    dvc(repo, "add", "-q", *tracked)
    dvc(repo, "remote", "add", "-d", "local", str(remote))
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "data")
    dvc(repo, "push", "-q")
    for rel in tracked:
        shutil.rmtree(repo / rel)
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc(repo, "pull", "-q")
    return originals


def test_push_pull_round_trip_with_a_local_remote(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data" / "raw" / "sub").mkdir(parents=True)
    (repo / "data" / "raw" / "labels.csv").write_text("path,label\nsub/a.bin,1\n")
    (repo / "data" / "raw" / "sub" / "a.bin").write_bytes(os.urandom(50_000))
    init_repo(repo)
    originals = push_delete_pull(repo, tmp_path / "remote", "data/raw")
    assert (repo / "data" / "raw.dvc").is_file()
    assert same_trees(repo / "data" / "raw", originals["data/raw"])
    assert "up to date" in dvc(repo, "status").lower()


@pytest.mark.workflow
def test_pulled_data_and_results_rerun_nothing(run_dir, snakemake, tmp_path):
    """DVC restores files with new times in its own order; content fingerprints and checksums make that a no-op."""
    work = tmp_path / "work"
    shutil.copytree(run_dir, work, symlinks=True)
    init_repo(work)
    before = (work / "results/report/summary.csv").stat().st_mtime_ns
    originals = push_delete_pull(work, tmp_path / "remote", "data/demo/mura", "results")
    for rel, original in originals.items():
        assert same_trees(work / rel, original), rel
    assert (work / "results/report/summary.csv").stat().st_mtime_ns != before  # times did change
    result = snakemake(work, "--dry-run")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


@pytest.mark.workflow
def test_dvc_yaml_repro_metrics_and_plots(run_dir, snakemake, tmp_path):
    """The project's dvc.yaml on a copy of the finished tiny run: repro is a no-op twice, then a parameter change
    re-runs one classifier and shows in `dvc params diff` / `dvc metrics diff`; plots render."""
    work = tmp_path / "work"
    shutil.copytree(run_dir, work, symlinks=True)
    for rel in ("Snakefile", "dvc.yaml"):
        shutil.copy2(REPO / rel, work / rel)
    for rel in ("workflow", "profiles", "src/medxfer"):
        shutil.copytree(REPO / rel, work / rel, ignore=shutil.ignore_patterns("__pycache__"))
    init_repo(work)
    run(work, "git", "add", "-A")
    run(work, "git", "commit", "-qm", "code")

    first = dvc(work, "repro")
    assert "Nothing to be done" in first  # Snakemake found everything up to date: DVC only records the outputs
    second = dvc(work, "repro")
    assert "didn't change, skipping" in second and "Running stage" not in second
    assert "up to date" in dvc(work, "status").lower()
    result = snakemake(work, "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr  # DVC's caching left the file times harmless

    shown = json.loads(dvc(work, "metrics", "show", "--json"))
    metrics = shown["workspace"]["data"]["results/report/metrics.json"]["data"]
    assert 0 <= metrics["demo_mura"]["indomain"]["fused"]["svm"]["accuracy"] <= 1
    run(work, "git", "add", "-A")
    run(work, "git", "commit", "-qm", "results")

    config = work / "config/config.yaml"
    assert "svm: {C: 1.0}" in config.read_text()
    config.write_text(config.read_text().replace("svm: {C: 1.0}", "svm: {C: 0.01}", 1))
    assert "classifiers.svm.C" in dvc(work, "params", "diff")
    third = dvc(work, "repro")
    # Snakemake re-ran the svm jobs (2 targets x 2 inits) and the summary, nothing else
    assert third.count("rule train_classifier:") == 4 and third.count("rule summarize_results:") == 1
    assert third.count("rule ") == 4 + 1 + 1  # + localrule all
    diff = json.loads(dvc(work, "metrics", "diff", "--json"))["results/report/metrics.json"]
    changed = [k for k, v in diff.items() if v.get("diff")]
    assert any(".svm." in k for k in changed), changed
    assert not any(f".{clf}." in k for k in changed for clf in ("logreg", "knn", "random_forest", "cnn")), changed

    dvc(work, "plots", "show", "-o", "plots")
    html = (work / "plots" / "index.html").read_text()
    for title in ("ROC of the fused classifiers", "training curves", "confusion matrix"):
        assert title in html
