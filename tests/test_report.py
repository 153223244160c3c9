import json

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from medxfer.metrics import classification_metrics
from medxfer.report import summarize_results


def test_metrics_match_sklearn_binary():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    proba = np.stack([1 - p1, p1], axis=1)
    result = classification_metrics(y, proba)
    pred = proba.argmax(1)
    assert result["accuracy"] == skm.accuracy_score(y, pred)
    assert result["f1"] == skm.f1_score(y, pred)
    assert result["cohen_kappa"] == skm.cohen_kappa_score(y, pred)
    assert result["roc_auc"] == skm.roc_auc_score(y, p1)


def test_metrics_multiclass_macro_and_single_class_auc():
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.eye(3)[[0, 1, 2, 1, 1, 0]] * 0.8 + 0.2 / 3
    result = classification_metrics(y, proba)
    assert result["f1"] == skm.f1_score(y, proba.argmax(1), average="macro")
    assert 0 < result["roc_auc"] <= 1
    assert np.isnan(classification_metrics(np.zeros(3, int), np.full((3, 2), 0.5))["roc_auc"])


def write_metrics(path, accuracy, kappa):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"accuracy": accuracy, "balanced_accuracy": accuracy, "f1": accuracy,
                                "cohen_kappa": kappa, "roc_auc": 0.9, "n": 10}))
    return path


def test_summary_rows_best_and_tables(tmp_path):
    r = tmp_path / "results"
    paths = [
        write_metrics(r / "finetune/t1/scratch/resnet10t/metrics.json", 0.7, 0.4),
        write_metrics(r / "finetune/t1/indomain/resnet10t/metrics.json", 0.8, 0.6),
        write_metrics(r / "classify/t1/indomain/fused/svm/metrics.json", 0.85, 0.7),
        write_metrics(r / "classify/t1/scratch/resnet10t/knn/metrics.json", 0.6, 0.2),
    ]
    table = summarize_results(paths, tmp_path / "s.csv", tmp_path / "m.json", tmp_path / "s.md")
    csv = pd.read_csv(tmp_path / "s.csv")
    assert len(csv) == 4 and csv["best"].sum() == 1
    best = csv[csv["best"]].iloc[0]
    assert (best["init"], best["features"], best["classifier"]) == ("indomain", "fused", "svm")
    assert table.iloc[0]["init"] == "scratch"
    nested = json.loads((tmp_path / "m.json").read_text())
    assert nested["t1"]["indomain"]["fused"]["svm"]["cohen_kappa"] == 0.7
    md = (tmp_path / "s.md").read_text()
    assert "## t1" in md and "**svm**" in md and "| scratch |" in md
