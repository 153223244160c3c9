"""Classic-ML classifiers on (fused) deep features, behind one registry so the config names them by a short key.

As in Alzubaidi et al. 2023, the CNNs only provide features; the final decision comes from SVM, logistic
regression, random forest or k-NN. Each classifier is fitted on the train split only: val is kept for model
selection and test is touched once, for the reported predictions and metrics.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import skops.io
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from medxfer.fusion import load_feature_file
from medxfer.io import atomic_path, write_json
from medxfer.metrics import classification_metrics

ClassifierBuilder = Callable[[Mapping[str, Any], int, int], Pipeline]
CLASSIFIERS: dict[str, ClassifierBuilder] = {}

# Module prefixes whose types a saved classifier may contain; anything else in a .skops file is refused.
_TRUSTED_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.")


def register_classifier(name: str) -> Callable[[ClassifierBuilder], ClassifierBuilder]:
    """Add a builder `(params, seed, threads) -> Pipeline` to CLASSIFIERS under `name` (like timm's registry)."""

    def decorator(builder: ClassifierBuilder) -> ClassifierBuilder:
        if name in CLASSIFIERS:
            raise ValueError(f"classifier '{name}' is already registered")
        CLASSIFIERS[name] = builder
        return builder

    return decorator


def _configure(name: str, estimator: BaseEstimator, params: Mapping[str, Any], reserved: Mapping[str, str]) -> Any:
    """Apply user params, refusing unknown ones and those medxfer sets itself (seed, threads), by name."""
    for key in params:
        if key in reserved:
            raise ValueError(f"classifier '{name}': parameter '{key}' is not configurable ({reserved[key]})")
    try:
        return estimator.set_params(**dict(params))
    except ValueError as exc:
        allowed = sorted(set(estimator.get_params(deep=False)) - set(reserved))
        bad = [key for key in params if key not in allowed]
        raise ValueError(f"classifier '{name}': unknown parameter(s) {bad}; allowed: {allowed}") from exc


@register_classifier("svm")
def _svm(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    # Platt-scaled probabilities via CalibratedClassifierCV: SVC(probability=True) is deprecated since sklearn 1.9.
    svc = _configure(
        "svm",
        SVC(random_state=seed),
        params,
        {"random_state": "set from seed", "probability": "probabilities come from sigmoid calibration"},
    )
    calibrated = CalibratedClassifierCV(svc, method="sigmoid", cv=5, ensemble=False, n_jobs=threads)
    return Pipeline([("scaler", StandardScaler()), ("clf", calibrated)])


@register_classifier("logreg")
def _logreg(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    logreg = _configure(
        "logreg",
        LogisticRegression(max_iter=2000, random_state=seed),
        params,
        {"random_state": "set from seed", "n_jobs": "set from threads"},
    )
    return Pipeline([("scaler", StandardScaler()), ("clf", logreg)])


@register_classifier("random_forest")
def _random_forest(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    forest = _configure(
        "random_forest",
        RandomForestClassifier(random_state=seed, n_jobs=threads),
        params,
        {"random_state": "set from seed", "n_jobs": "set from threads"},
    )
    return Pipeline([("clf", forest)])


@register_classifier("knn")
def _knn(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    knn = _configure("knn", KNeighborsClassifier(n_jobs=threads), params, {"n_jobs": "set from threads"})
    return Pipeline([("scaler", StandardScaler()), ("clf", knn)])


def create_classifier(name: str, params: Mapping[str, Any] | None, seed: int, threads: int) -> Pipeline:
    """Build an unfitted pipeline for a registered classifier; config errors name the classifier and key."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier '{name}'; allowed: {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[name](dict(params or {}), int(seed), max(1, int(threads)))


def load_classifier(path: str | os.PathLike) -> Pipeline:
    """Load a saved pipeline, trusting only sklearn/numpy types, so a tampered file cannot run foreign code."""
    untrusted = skops.io.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise ValueError(f"{path}: refusing to load types outside sklearn/numpy: {foreign}")
    return skops.io.load(path, trusted=untrusted)


def _predict_proba(model: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities for every class in the file, with zeros for classes absent from the train split."""
    full = np.zeros((x.shape[0], n_classes), dtype=np.float64)
    if x.shape[0]:
        full[:, model.classes_] = model.predict_proba(x)
    return full


def train_classifier(
    features_path: str | os.PathLike,
    name: str,
    params: Mapping[str, Any] | None,
    model_path: str | os.PathLike,
    predictions_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    seed: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """Fit on train, score val and test, write model.skops, predictions.csv (test) and metrics.json; return metrics."""
    params = dict(params or {})
    threads = max(1, int(threads))
    data = load_feature_file(features_path)
    classes = [str(c) for c in data["classes"]]
    x_train, y_train = data["X_train"], data["y_train"]
    if x_train.shape[0] == 0 or data["X_test"].shape[0] == 0:
        raise ValueError(f"{features_path}: train and test splits must not be empty")
    model = create_classifier(name, params, seed, threads)
    with threadpool_limits(limits=threads):
        try:
            model.fit(x_train, y_train)
            proba = {split: _predict_proba(model, data[f"X_{split}"], len(classes)) for split in ("val", "test")}
        except ValueError as exc:
            raise ValueError(f"classifier '{name}' with params {params} failed on {features_path}: {exc}") from exc

    with atomic_path(model_path) as tmp:
        skops.io.dump(model, tmp)

    columns: dict[str, Any] = {"image_id": data["ids_test"]}
    if "study_test" in data:
        columns["study_id"] = data["study_test"]
    columns["label"] = data["y_test"]
    columns["prediction"] = proba["test"].argmax(axis=1)
    for index, class_name in enumerate(classes):
        columns[f"prob_{class_name}"] = proba["test"][:, index]
    with atomic_path(predictions_path) as tmp:
        pd.DataFrame(columns).to_csv(tmp, index=False)

    metrics: dict[str, Any] = classification_metrics(data["y_test"], proba["test"])
    val_metrics = classification_metrics(data["y_val"], proba["val"]) if data["y_val"].size else {"n": 0}
    metrics.update(
        {
            "classifier": name,
            "params": params,
            "features": str(features_path),
            "classes": classes,
            "n_train": int(x_train.shape[0]),
            "n_features": int(x_train.shape[1]),
            "seed": int(seed),
            "val": val_metrics,
        }
    )
    write_json(metrics_path, metrics)
    return metrics


__all__ = ["CLASSIFIERS", "create_classifier", "load_classifier", "register_classifier", "train_classifier"]
