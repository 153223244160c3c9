"""benchmarks/compare_results.py: two runs compare by the identity their results record, not by where they sit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_results.py"


def write(root: Path, rel: str, accuracy: float) -> None:
    path = root / rel / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    identity = {"target": "t", "init": "scratch", "run": "scratch", "seed": 0, "features": "fused", "classifier": "svm"}
    path.write_text(json.dumps({"identity": identity, "accuracy": accuracy, "features": str(path.parent)}))


def compare(a: Path, b: Path, *args: str) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), *args], capture_output=True, text=True)
    return result.returncode, json.loads(result.stdout)


def test_results_in_two_layouts_pair_up_by_identity(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    write(old, "classify/t/scratch/fused/svm", 0.8)
    write(new, "classify/t/scratch/seed0/fused/svm", 0.8)
    code, report = compare(old, new, "--ignore-key", "features")
    assert code == 0 and report["metrics_compared"] == 1 and not report["only_in_a"], report
    # the path-valued key differs between the layouts, and is reported when it is not left out
    code, report = compare(old, new)
    assert code == 1 and list(report["metrics_differ"]) == ["classify/t/scratch/fused/svm/metrics.json"], report


def test_a_changed_number_is_reported_with_its_place(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "classify/t/scratch/seed0/fused/svm", 0.8)
    write(b, "classify/t/scratch/seed0/fused/svm", 0.75)
    code, report = compare(a, b, "--ignore-key", "features")
    assert code == 1
    assert "accuracy" in report["metrics_differ"]["classify/t/scratch/seed0/fused/svm/metrics.json"]
