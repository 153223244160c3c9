"""DVC for real: a local-remote push/pull round trip, and the project's dvc.yaml on a copy of the tiny run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$", re.MULTILINE)


def run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    """A command in `cwd`; this interpreter's bin/ first on PATH (DVC's stage runs `snakemake`); must succeed."""
    env = os.environ | GIT_ENV | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def dvc(cwd: Path, *args: str) -> str:
    result = run(cwd, *DVC, *args)
    return result.stdout + result.stderr


def dvc_json(cwd: Path, *args: str) -> dict:
    return json.loads(run(cwd, *DVC, *args, "--json").stdout)


def init_repo(path: Path) -> None:
    run(path, "git", "init", "-q")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")


def commit(path: Path, message: str) -> None:
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", message)


def digests(root: Path, *paths: str) -> dict[str, str]:
    """sha256 of every file under the given paths (relative to root)."""
    files = [p for rel in paths for p in ([root / rel] if (root / rel).is_file() else (root / rel).rglob("*"))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def delete_and_pull(repo: Path, paths: list[str]) -> None:
    """Delete the tracked paths and the local DVC cache, then `dvc pull` them back from the remote."""
    for rel in paths:
        target = repo / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc(repo, "pull", "-q")


def test_push_pull_round_trip_with_a_local_remote(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data" / "raw" / "sub").mkdir(parents=True)
    (repo / "data" / "raw" / "labels.csv").write_text("path,label\nsub/a.bin,1\n")
    (repo / "data" / "raw" / "sub" / "a.bin").write_bytes(os.urandom(50_000))
    init_repo(repo)
    dvc(repo, "add", "-q", "data/raw")
    dvc(repo, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    commit(repo, "data")
    before = digests(repo, "data/raw")
    dvc(repo, "push", "-q")
    delete_and_pull(repo, ["data/raw"])
    assert digests(repo, "data/raw") == before and len(before) == 2
    assert "up to date" in dvc(repo, "status").lower()


@pytest.mark.workflow
def test_dvc_yaml_repro_metrics_plots_push_and_pull(run_dir, snakemake, tmp_path):
    """The project's dvc.yaml on a copy of the finished tiny run.

    `dvc repro` twice: Snakemake finds nothing to do, then DVC skips the stage. A classifier parameter change
    re-runs only that classifier and the summary, and shows in `dvc params diff` / `dvc metrics diff`; plots
    render. Then the results and a raw data set go through a local remote and back (new file times, in DVC's order)
    and Snakemake still has nothing to do.
    """
    work = tmp_path / "work"
    shutil.copytree(run_dir, work, symlinks=True)
    for rel in ("Snakefile", "dvc.yaml", ".gitignore"):
        shutil.copy2(REPO / rel, work / rel)
    for rel in ("workflow", "profiles", "envs", "src/medxfer"):
        shutil.copytree(REPO / rel, work / rel, ignore=shutil.ignore_patterns("__pycache__"))
    init_repo(work)
    commit(work, "code")

    first = dvc(work, "repro")
    assert "Nothing to be done" in first  # Snakemake found everything up to date: DVC only records the outputs
    second = dvc(work, "repro")
    assert "didn't change, skipping" in second and "Running stage" not in second
    assert snakemake(work, "--dry-run").stdout.count("Nothing to be done") == 1  # DVC's caching left times harmless

    (workspace,) = dvc_json(work, "metrics", "show").values()  # one revision: the workspace
    metrics = workspace["data"]["results/report/metrics.json"]["data"]
    assert 0 <= metrics["demo_mura"]["indomain"]["fused"]["svm"]["accuracy"] <= 1
    commit(work, "results")

    config = work / "config/config.yaml"
    assert "svm: {C: 1.0}" in config.read_text()
    config.write_text(config.read_text().replace("svm: {C: 1.0}", "svm: {C: 0.01}", 1))
    assert "classifiers.svm.C" in dvc(work, "params", "diff")
    third = dvc(work, "repro")
    # job headers: the classifier jobs (2 targets x 2 inits; each fits every classifier, the others to the same
    # numbers), the robustness sweeps of the best fused classifier (they read every fused classifier's results),
    # the bundles (they choose among the classifiers) and the one configured prediction, and the summary
    ran = JOB_HEADER.findall(third)
    expected = ["all"] + ["assess_robustness"] * 4 + ["export_bundle"] * 4 + ["predict", "summarize_results"]
    assert sorted(ran) == expected + ["train_classifiers"] * 4, ran
    diff = dvc_json(work, "metrics", "diff")["results/report/metrics.json"]
    changed = [k for k, v in diff.items() if v.get("diff")]
    assert any(".svm." in k for k in changed), changed
    assert not any(f".{clf}." in k for k in changed for clf in ("logreg", "knn", "random_forest", "cnn")), changed

    dvc(work, "plots", "show", "-o", "plots")
    html = (work / "plots" / "index.html").read_text()
    for title in ("ROC of the fused classifiers", "training curves", "confusion matrix"):
        assert title in html

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["workflow"]
    outs = [next(iter(o)) for o in stage["outs"] + stage["metrics"]]
    dvc(work, "add", "-q", "data/demo")
    dvc(work, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    commit(work, "params and data")
    before = digests(work, *outs, "data/demo")
    summary_time = (work / "results/report/summary.csv").stat().st_mtime_ns
    dvc(work, "push", "-q")
    delete_and_pull(work, [*outs, "data/demo"])
    assert digests(work, *outs, "data/demo") == before
    assert (work / "results/report/summary.csv").stat().st_mtime_ns != summary_time  # restored with new times
    result = snakemake(work, "--dry-run")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]
