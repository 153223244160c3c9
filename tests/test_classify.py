"""Classic-ML classifiers on feature files: registry, artifacts, skops round trip, and no fitting on test."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io

from medxfer.classify import CLASSIFIERS, create_classifier, load_classifier, train_classifier
from medxfer.io import read_json, save_npz

CLASSES = np.array(["normal", "benign", "malignant"])
N = {"train": 60, "val": 24, "test": 24}
NAMES = sorted(CLASSIFIERS)


def _write_blobs(path: Path, seed: int = 0, dim: int = 6, with_study: bool = False) -> Path:
    """Three well-separated Gaussian blobs: any reasonable classifier should score far above chance (1/3)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(len(CLASSES), dim))
    arrays: dict[str, np.ndarray] = {"classes": CLASSES}
    for split, n in N.items():
        y = (np.arange(n) % len(CLASSES)).astype(np.int64)
        arrays[f"X_{split}"] = (centres[y] + rng.normal(size=(n, dim))).astype(np.float32)
        arrays[f"y_{split}"] = y
        arrays[f"ids_{split}"] = np.array([f"{split}-{i:03d}" for i in range(n)])
        if with_study:
            arrays[f"study_{split}"] = np.array([f"study-{split}-{i // 2}" for i in range(n)])
    save_npz(path, **arrays)
    return path


def _train(features: Path, out: Path, name: str, params: dict | None = None) -> dict:
    return train_classifier(
        features, name, params or {}, out / "model.skops", out / "predictions.csv", out / "metrics.json", seed=0
    )


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_blobs(tmp_path_factory.mktemp("features") / "features.npz")


def test_registry_has_the_paper_classifiers() -> None:
    assert {"svm", "logreg", "random_forest", "knn"} <= set(CLASSIFIERS)


@pytest.mark.parametrize("name", NAMES)
def test_classifier_trains_and_writes_artifacts(name: str, blobs: Path, tmp_path: Path) -> None:
    metrics = _train(blobs, tmp_path, name)
    for artifact in ("model.skops", "predictions.csv", "metrics.json"):
        assert (tmp_path / artifact).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.skops", "predictions.csv"]

    saved = read_json(tmp_path / "metrics.json")
    assert saved == metrics
    for key in ("accuracy", "balanced_accuracy", "f1", "cohen_kappa", "roc_auc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["accuracy"] > 0.8 and metrics["roc_auc"] > 0.9
    assert metrics["val"]["n"] == N["val"] and metrics["val"]["accuracy"] > 0.8
    assert metrics["classifier"] == name and metrics["params"] == {}
    assert metrics["features"] == str(blobs)
    assert metrics["n"] == N["test"] and metrics["n_train"] == N["train"] and metrics["n_features"] == 6

    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions.columns) == ["image_id", "label", "prediction"] + [f"prob_{c}" for c in CLASSES]
    assert len(predictions) == N["test"]
    proba = predictions[[f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(predictions["prediction"], proba.argmax(axis=1))
    assert math.isclose(metrics["accuracy"], float((predictions["prediction"] == predictions["label"]).mean()))

    with np.load(blobs) as data:
        x_test = data["X_test"]
    path = tmp_path / "model.skops"
    loaded = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    np.testing.assert_array_equal(loaded.predict_proba(x_test), proba)
    np.testing.assert_array_equal(load_classifier(path).predict_proba(x_test), proba)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("name", NAMES)
def test_test_split_is_never_used_for_fitting(name: str, blobs: Path, tmp_path: Path) -> None:
    with np.load(blobs) as npz:
        data = {key: npz[key] for key in npz.files}
    rng = np.random.default_rng(7)
    data["X_test"] = rng.normal(loc=-3.0, scale=5.0, size=data["X_test"].shape).astype(np.float32)
    data["y_test"] = np.zeros_like(data["y_test"])  # a different label distribution too
    other = tmp_path / "other.npz"
    save_npz(other, **data)
    _train(blobs, tmp_path / "a", name)
    _train(other, tmp_path / "b", name)
    probe = rng.normal(scale=4.0, size=(32, 6)).astype(np.float32)
    model_a, model_b = load_classifier(tmp_path / "a" / "model.skops"), load_classifier(tmp_path / "b" / "model.skops")
    np.testing.assert_array_equal(model_a.predict_proba(probe), model_b.predict_proba(probe))


def test_training_is_deterministic(blobs: Path, tmp_path: Path) -> None:
    _train(blobs, tmp_path / "a", "random_forest", {"n_estimators": 20})
    _train(blobs, tmp_path / "b", "random_forest", {"n_estimators": 20})
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (tmp_path / "b" / "predictions.csv").read_bytes()
    assert read_json(tmp_path / "b" / "metrics.json")["params"] == {"n_estimators": 20}


def test_study_id_column_when_present(tmp_path: Path) -> None:
    features = _write_blobs(tmp_path / "features.npz", with_study=True)
    _train(features, tmp_path / "out", "logreg", {"C": 0.5})
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(predictions.columns[:4]) == ["image_id", "study_id", "label", "prediction"]
    assert predictions["study_id"].iloc[3] == "study-test-1"


def test_class_absent_from_train_gets_zero_probability(blobs: Path, tmp_path: Path) -> None:
    with np.load(blobs) as npz:
        data = {key: npz[key] for key in npz.files}
    keep = data["y_train"] != 2
    for key in ("X", "y", "ids"):
        data[f"{key}_train"] = data[f"{key}_train"][keep]
    save_npz(tmp_path / "two.npz", **data)
    metrics = _train(tmp_path / "two.npz", tmp_path / "out", "logreg")
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert (predictions["prob_malignant"] == 0.0).all()
    assert metrics["n_train"] == int(keep.sum()) and 0.0 <= metrics["accuracy"] <= 1.0


def test_unknown_classifier_names_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown classifier 'xgboost'.*knn.*logreg.*random_forest.*svm"):
        create_classifier("xgboost", {}, seed=0, threads=1)


def test_bad_params_name_classifier_and_param(blobs: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"classifier 'svm'.*'gama'.*allowed:.*'gamma'"):
        create_classifier("svm", {"gama": 0.1}, seed=0, threads=1)
    with pytest.raises(ValueError, match=r"classifier 'random_forest'.*'random_state'.*not configurable"):
        create_classifier("random_forest", {"random_state": 3}, seed=0, threads=1)
    with pytest.raises(ValueError, match=r"classifier 'logreg'.*'C' parameter"):
        _train(blobs, tmp_path, "logreg", {"C": -1.0})
    assert not (tmp_path / "model.skops").exists()


def test_create_classifier_applies_seed_threads_and_params() -> None:
    forest = create_classifier("random_forest", {"n_estimators": 7}, seed=11, threads=2)[-1]
    assert (forest.n_estimators, forest.random_state, forest.n_jobs) == (7, 11, 2)
    svm = create_classifier("svm", {"C": 3.0, "kernel": "linear"}, seed=5, threads=1)
    assert svm.get_params()["clf__estimator__C"] == 3.0 and svm.get_params()["clf__estimator__random_state"] == 5
