"""Graded labels end to end: the graded metrics, the cumulative-link head, and a graded demo set through fine-tuning,
features and a classifier (real torch and sklearn computations on CPU)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
import torch
from conftest import ingest_and_cache

from medxfer import demo, models
from medxfer.classify import train_classifier
from medxfer.config import ConfigError, validate
from medxfer.features import extract_features
from medxfer.fusion import is_ordinal, load_feature_file
from medxfer.metrics import (
    ORDINAL_METRICS,
    bootstrap_metrics,
    classification_metrics,
    paired_bootstrap,
    replicate_bootstrap,
)
from medxfer.prediction_files import read_predictions
from medxfer.sections import ClassifySection, DecisionSection, FeaturesSection, FinetuneTraining
from medxfer.train import finetune_model

GRADES = list(demo.FRACTURE_GRADES)
ARGMAX = DecisionSection.from_config({})


def graded_entry(root: Path, **overrides) -> dict:
    entry = {
        "format": "csv",
        "root": str(root),
        "manifest": str(root / "labels.csv"),
        "classes": GRADES,
        "ordinal": True,
        "masks": str(root / "masks"),
    }
    conf = validate(
        {"datasets": {"grades": entry | overrides}, "finetune": {"targets": ["grades"], "inits": ["scratch"]}}
    )
    return conf["datasets"]["grades"]


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The generated graded fracture set, ingested and cached at 64 px: (manifest, images)."""
    root = tmp_path_factory.mktemp("grades")
    demo.synthesize_fracture_grades(root / "data", 12, 64, 3)
    return ingest_and_cache(graded_entry(root / "data"), "grades", root / "cached")


def test_graded_metrics_equal_sklearn_and_appear_only_for_ordinal_tasks() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    proba = rng.dirichlet(np.ones(4), 300)
    proba[np.arange(300), y] += 0.4
    proba /= proba.sum(axis=1, keepdims=True)
    predicted = proba.argmax(axis=1)
    graded_result = classification_metrics(y, proba, ordinal=True)
    assert graded_result["quadratic_kappa"] == pytest.approx(skm.cohen_kappa_score(y, predicted, weights="quadratic"))
    assert graded_result["mean_absolute_error"] == pytest.approx(skm.mean_absolute_error(y, predicted))
    assert graded_result["ordinal"] is True
    plain = classification_metrics(y, proba)
    assert not set(ORDINAL_METRICS) & set(plain) and "ordinal" not in plain
    low, high = bootstrap_metrics(y, proba, ordinal=True)["ci"]["quadratic_kappa"]
    assert low < graded_result["quadratic_kappa"] < high
    assert replicate_bootstrap(y, [proba, proba], ordinal=True)["mean_absolute_error"] == pytest.approx(
        graded_result["mean_absolute_error"]
    )
    same = paired_bootstrap(y, proba, proba, ordinal=True)["metrics"]["quadratic_kappa"]
    assert same["difference"] == 0 and same["ci"] == [0, 0]


def test_a_miss_by_three_grades_costs_more_than_a_miss_by_one() -> None:
    """Same accuracy and the same unweighted kappa: only the graded metrics see how far the misses are."""
    y = np.repeat(np.arange(4), 10)
    near, far = y.copy(), y.copy()
    near[y == 0], far[y == 0] = 1, 3  # every grade-0 case missed, by one grade or by three
    near_metrics = classification_metrics(y, np.eye(4)[near], ordinal=True)
    far_metrics = classification_metrics(y, np.eye(4)[far], ordinal=True)
    assert near_metrics["accuracy"] == far_metrics["accuracy"] == 0.75
    assert near_metrics["cohen_kappa"] == pytest.approx(far_metrics["cohen_kappa"])
    assert near_metrics["quadratic_kappa"] > far_metrics["quadratic_kappa"] + 0.3
    assert far_metrics["mean_absolute_error"] == pytest.approx(3 * near_metrics["mean_absolute_error"])


def test_the_cumulative_link_head_orders_grades_and_round_trips(tmp_path: Path) -> None:
    model = models.create("resnet10t", 4, 1, head="ordinal").eval()
    head = model.get_classifier()
    assert isinstance(head, models.CumulativeLinkHead) and models.head_prefix(model) == "fc"
    with torch.no_grad():
        head.weight.normal_(std=0.1)
        features = torch.randn(64, head.in_features)
        log_proba = head(features)
        proba = log_proba.exp()
        assert torch.allclose(proba.sum(dim=1), torch.ones(64), atol=1e-5)
        assert torch.allclose(torch.softmax(log_proba, dim=1), proba, atol=1e-6)  # what every reader computes
        score = (features @ head.weight.T + head.bias).squeeze(1)
        order = score.argsort()
        at_most = proba.cumsum(dim=1)[order, :-1]  # P(grade <= k), by increasing score
        assert (at_most[1:] <= at_most[:-1] + 1e-6).all(), "a higher score must never make a low grade likelier"
        expected_grade = (proba[order] * torch.arange(4)).sum(dim=1)
        assert (expected_grade[1:] >= expected_grade[:-1] - 1e-6).all()
    images = torch.randint(0, 255, (3, 1, 64, 64), dtype=torch.uint8)
    meta = {"arch": "resnet10t", "classes": GRADES, "in_chans": 1, "input_size": 64}
    models.save(tmp_path, model, meta)
    loaded, saved_meta = models.load(tmp_path)
    assert saved_meta["head"] == "ordinal"
    with torch.no_grad():
        assert torch.equal(loaded(models.normalize(images)), model(models.normalize(images)))


def test_the_config_refuses_an_ordinal_head_or_flag_without_graded_classes(tmp_path: Path) -> None:
    entry = {"format": "csv", "root": str(tmp_path), "manifest": str(tmp_path / "labels.csv")}
    with pytest.raises(ConfigError, match=r"finetune\.head.*'plain' does not say 'ordinal: true'"):
        validate(
            {"datasets": {"plain": entry}, "finetune": {"targets": ["plain"], "inits": ["scratch"], "head": "ordinal"}}
        )
    with pytest.raises(ConfigError, match=r"datasets\.plain\.ordinal.*classes, at least three, in grade order"):
        validate(
            {"datasets": {"plain": entry | {"ordinal": True}}, "finetune": {"targets": ["plain"], "inits": ["scratch"]}}
        )


def test_a_graded_set_through_finetuning_features_and_a_classifier(graded, tmp_path: Path) -> None:
    manifest, images = graded
    params = FinetuneTraining.from_config({"epochs": 2, "batch_size": 16, "head": "ordinal"})
    with pytest.raises(ValueError, match=r"manifest\.csv: head 'ordinal' needs graded labels"):
        finetune_model(manifest, images, "resnet10t", "scratch", params, tmp_path / "refused", decision=ARGMAX)
    cnn = tmp_path / "cnn"
    metrics = finetune_model(
        manifest, images, "resnet10t", "scratch", params, cnn, decision=ARGMAX, ordinal=True, threads=2
    )
    table, proba = read_predictions(cnn / "predictions.csv")
    y = table["label"].to_numpy()
    assert metrics["ordinal"] is True and metrics["head"] == "ordinal" and set(ORDINAL_METRICS) <= set(metrics["val"])
    assert metrics["quadratic_kappa"] == pytest.approx(
        skm.cohen_kappa_score(y, proba.argmax(axis=1), weights="quadratic")
    )
    meta = json.loads((cnn / "model.json").read_text())
    assert meta["head"] == "ordinal" and meta["ordinal"] is True and meta["classes"] == GRADES

    features = tmp_path / "features.npz"
    extract_features([cnn], manifest, images, [features], FeaturesSection.from_config({}))
    assert is_ordinal(load_feature_file(features))
    out = tmp_path / "logreg"
    result = train_classifier(
        features,
        "logreg",
        {"C": 1.0},
        out / "model.skops",
        out / "predictions.csv",
        out / "metrics.json",
        decision=ARGMAX,
        classify=ClassifySection.from_config({}),
        n_bootstrap=50,
    )
    predicted = pd.read_csv(out / "predictions.csv")["prediction"].to_numpy()
    assert result["ordinal"] is True
    assert result["mean_absolute_error"] == pytest.approx(np.abs(predicted - y).mean())
    assert len(result["ci"]["quadratic_kappa"]) == 2


def _graded_result(root: Path, rel: str, y: np.ndarray, proba: np.ndarray) -> Path:
    """A CNN's metrics.json and predictions.csv as finetune_model writes them for a graded target."""
    from conftest import result_identity

    folder = root / rel
    folder.mkdir(parents=True)
    table = pd.DataFrame({"image_id": [f"i{k}" for k in range(len(y))], "label": y})
    for k, grade in enumerate(GRADES):
        table[f"prob_{grade}"] = proba[:, k]
    table.to_csv(folder / "predictions.csv", index=False)
    metrics = classification_metrics(y, proba, ordinal=True) | {"val": {"roc_auc": 0.7}} | result_identity(rel)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder / "metrics.json"


def test_the_report_of_a_graded_target_has_qwk_and_mae_over_seeds(tmp_path: Path) -> None:
    from medxfer.report import summarize_results

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 120)
    probas = []
    for _ in range(3):
        logits = rng.normal(0, 1, (120, 4))
        logits[np.arange(120), np.clip(y + rng.integers(-1, 2, 120), 0, 3)] += 2.5  # mostly right or one grade off
        probas.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    runs = ["scratch", "scratch-seed1", "scratch-seed2"]
    paths = [_graded_result(tmp_path, f"finetune/g/{run}/netA", y, p) for run, p in zip(runs, probas, strict=True)]
    out = tmp_path / "report"
    summarize_results(
        paths,
        out / "s.csv",
        out / "m.json",
        out / "s.md",
        n_bootstrap=100,
        out_benchmark_md=out / "b.md",
        out_benchmark_csv=out / "b.csv",
    )
    bench = pd.read_csv(out / "b.csv").iloc[0]
    qwks = [skm.cohen_kappa_score(y, p.argmax(axis=1), weights="quadratic") for p in probas]
    assert bench["quadratic_kappa"] == pytest.approx(np.mean(qwks), abs=1e-4)
    assert bench["quadratic_kappa_sd"] == pytest.approx(np.std(qwks, ddof=1), abs=1e-4)
    maes = [np.abs(p.argmax(axis=1) - y).mean() for p in probas]
    assert bench["mean_absolute_error"] == pytest.approx(np.mean(maes), abs=1e-4)
    assert bench["quadratic_kappa_lo"] < bench["quadratic_kappa"] < bench["quadratic_kappa_hi"]
    assert "| QWK | MAE |" in (out / "b.md").read_text()
    summary = pd.read_csv(out / "s.csv")
    assert summary["ordinal"].all() and summary["quadratic_kappa"].notna().all()
    assert "quadratic_kappa" in (out / "s.md").read_text()
