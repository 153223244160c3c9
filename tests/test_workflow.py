"""The real Snakefile on a tiny config, end to end, in a temp dir."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medxfer import models

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run_dir(tiny_local_run: Path) -> Path:
    return tiny_local_run  # shared with tests/test_slurm.py (tests/conftest.py)


def test_second_run_has_nothing_to_do(run_dir):
    result = snakemake(run_dir, "--cores", "2", "--dry-run")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_checkpoints_load_and_describe_themselves(run_dir):
    checkpoints = sorted((run_dir / "results").glob("*/*/*/model.json")) + sorted(
        (run_dir / "results").glob("finetune/*/*/*/model.json")
    )
    assert len(checkpoints) == 2 + 2 * 2 * 2
    for meta_path in checkpoints:
        model, meta = models.load(meta_path.parent)
        assert meta["arch"] in ("resnet10t", "resnet18")
        assert meta["input_size"][0] == meta["in_chans"] and len(meta["data_sha256"]) == 64
        assert model.num_classes == len(meta["classes"])
    ct_meta = json.loads((run_dir / "results/finetune/demo_ct/indomain/resnet10t/model.json").read_text())
    assert ct_meta["in_chans"] == 2 and ct_meta["classes"] == ["normal", "lesion"]


def test_feature_matrices_have_expected_shapes(run_dir):
    manifest = pd.read_csv(run_dir / "results/datasets/demo_mura/manifest.csv")
    counts = manifest["split"].value_counts()
    dims = {"resnet10t": 512, "resnet18": 512}
    for arch, dim in dims.items():
        data = np.load(run_dir / f"results/features/demo_mura/indomain/{arch}.npz")
        for split in ("train", "val", "test"):
            assert data[f"X_{split}"].shape == (counts[split], dim)
            assert np.isfinite(data[f"X_{split}"]).all()
    fused = np.load(run_dir / "results/fused/demo_mura/indomain/features.npz")
    assert fused["X_train"].shape == (counts["train"], sum(dims.values()))


def test_metrics_are_valid_probabilities(run_dir):
    files = list((run_dir / "results").glob("classify/*/*/*/*/metrics.json"))
    assert len(files) == 2 * 2 * 3 * 4
    for path in files + list((run_dir / "results").glob("finetune/*/*/*/metrics.json")):
        metrics = json.loads(path.read_text())
        for key in ("accuracy", "f1", "balanced_accuracy"):
            assert 0.0 <= metrics[key] <= 1.0, (path, key)
        assert -1.0 <= metrics["cohen_kappa"] <= 1.0
        assert math.isnan(metrics["roc_auc"]) or 0.0 <= metrics["roc_auc"] <= 1.0


def test_summary_compares_inits_features_and_classifiers(run_dir):
    summary = pd.read_csv(run_dir / "results/report/summary.csv")
    assert set(summary["init"]) == {"scratch", "indomain"}
    assert set(summary["features"]) == {"resnet10t", "resnet18", "fused"}
    assert set(summary["classifier"]) == {"cnn", "logreg", "svm", "random_forest", "knn"}
    assert len(summary) == 2 * 2 * 2 + 2 * 2 * 3 * 4
    assert summary.groupby("target")["best"].any().all()
    table = (run_dir / "results/report/summary.md").read_text()
    assert "## demo_mura" in table and "## demo_ct" in table and "cohen_kappa" in table
    nested = json.loads((run_dir / "results/report/metrics.json").read_text())
    assert 0 <= nested["demo_ct"]["indomain"]["fused"]["svm"]["accuracy"] <= 1


def test_heatmaps_open_and_match_image_size(run_dir):
    pngs = 0
    for index_path in (run_dir / "results/explain").glob("*/*/*/index.csv"):
        index = pd.read_csv(index_path)
        assert len(index) == 2
        for method in ("gradcam", "lime"):
            for rel in index[f"{method}_png"]:
                with Image.open(index_path.parent / rel) as img:
                    assert img.size == (64, 64) and img.mode == "RGB"
                pngs += 1
        heat = np.load(index_path.parent / "heatmaps.npz")
        assert heat["gradcam"].shape == (2, 64, 64) and 0 <= heat["gradcam"].min() <= heat["gradcam"].max() <= 1
    assert pngs == 8 * 2 * 2


def test_no_identifying_dicom_fields_in_results(run_dir):
    labels = pd.read_csv(run_dir / "data/demo/ct/labels.csv")
    secrets = set(labels["patient_id"]) | {"Demo^"}
    for path in (run_dir / "results").rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json", ".md", ".log"):
            text = path.read_text(errors="ignore")
            assert not any(s in text for s in secrets), path
