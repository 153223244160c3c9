"""Classic-ML classifiers on (fused) deep features, behind one registry so the config names them by a short key.

As in Alzubaidi et al. 2023, the CNNs only provide features; the final decision comes from SVM (RBF or linear),
logistic regression, random forest, k-NN, gradient boosting, an MLP or a soft-voting ensemble of them.

Honest evaluation: hyperparameters are chosen by cross-validation on train+val only (folds grouped by study
when studies exist, so images of one study never sit on both sides of a fold); the chosen model is refitted on
train+val and the test split is used once, for predictions.csv and metrics.json. In a classifier's config a
list is a grid of candidates searched by CV; any other value is fixed.
"""

from __future__ import annotations

import importlib.abc
import itertools
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, VotingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from threadpoolctl import threadpool_limits

from medxfer.fusion import feature_identity, load_feature_file
from medxfer.io import atomic_path, read_json, write_json
from medxfer.log import mark_work_start
from medxfer.metrics import (
    N_BOOTSTRAP,
    choose_threshold,
    classification_metrics,
    evaluate,
    read_predictions,
    roc_points,
    write_predictions,
)

ClassifierBuilder = Callable[[Mapping[str, Any], int, int], Pipeline]
CLASSIFIERS: dict[str, ClassifierBuilder] = {}
ENSEMBLE = "ensemble"
CV_FOLDS = 3
OOF = "oof.csv"

# Module prefixes whose types a saved classifier may contain; anything else in a .skops file is refused.
_TRUSTED_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.")
_SEED = {"random_state": "set from seed"}
_THREADS = {"n_jobs": "set from threads"}


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


def _calibrated(estimator: BaseEstimator, threads: int) -> CalibratedClassifierCV:
    """Platt-scaled probabilities for an SVM (SVC(probability=True) is deprecated since sklearn 1.9); 3 folds: cheap."""
    return CalibratedClassifierCV(estimator, method="sigmoid", cv=3, ensemble=False, n_jobs=threads)


@register_classifier("svm")
def _svm(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    """Kernel SVM, RBF by default (`kernel` is configurable)."""
    reserved = _SEED | {"probability": "probabilities come from sigmoid calibration"}
    svc = _configure("svm", SVC(kernel="rbf", random_state=seed), params, reserved)
    return Pipeline([("scaler", StandardScaler()), ("clf", _calibrated(svc, threads))])


@register_classifier("svm_linear")
def _svm_linear(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    """Linear SVM (liblinear): scales to many images and the thousands of fused dimensions."""
    svc = _configure("svm_linear", LinearSVC(dual="auto", max_iter=5000, random_state=seed), params, _SEED)
    return Pipeline([("scaler", StandardScaler()), ("clf", _calibrated(svc, threads))])


@register_classifier("logreg")
def _logreg(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    logreg = _configure("logreg", LogisticRegression(max_iter=2000, random_state=seed), params, _SEED | _THREADS)
    return Pipeline([("scaler", StandardScaler()), ("clf", logreg)])


@register_classifier("random_forest")
def _random_forest(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    forest = RandomForestClassifier(random_state=seed, n_jobs=threads)
    return Pipeline([("clf", _configure("random_forest", forest, params, _SEED | _THREADS))])


@register_classifier("knn")
def _knn(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    knn = _configure("knn", KNeighborsClassifier(n_jobs=threads), params, _THREADS)
    return Pipeline([("scaler", StandardScaler()), ("clf", knn)])


@register_classifier("gradient_boosting")
def _gradient_boosting(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    """HistGradientBoosting: sklearn's fast boosting, no extra dependency (threads via threadpool_limits)."""
    boosting = HistGradientBoostingClassifier(early_stopping=False, random_state=seed)
    return Pipeline([("clf", _configure("gradient_boosting", boosting, params, _SEED))])


@register_classifier("mlp")
def _mlp(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    params = dict(params)
    if isinstance(params.get("hidden_layer_sizes"), list):  # YAML has no tuples
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    mlp = MLPClassifier(hidden_layer_sizes=(128,), max_iter=500, random_state=seed)
    return Pipeline([("scaler", StandardScaler()), ("clf", _configure("mlp", mlp, params, _SEED))])


@register_classifier(ENSEMBLE)
def _ensemble(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    """Soft voting (mean probability) over unfitted members given as `{"members": {name: fixed params}}`.

    train_classifier does not refit: it votes over the members' fitted models (`_fitted_ensemble`).
    """
    unknown = sorted(set(params) - {"members"})
    if unknown:
        raise ValueError(f"classifier '{ENSEMBLE}': unknown parameter(s) {unknown}; allowed: ['members']")
    members = params.get("members") or {}
    if not isinstance(members, Mapping) or len(members) < 2:
        raise ValueError(f"classifier '{ENSEMBLE}' needs at least two members with their parameters, got {members!r}")
    if ENSEMBLE in members:
        raise ValueError(f"classifier '{ENSEMBLE}' cannot contain itself")
    estimators = [(name, create_classifier(name, p, seed, threads)) for name, p in members.items()]
    return Pipeline([("clf", VotingClassifier(estimators, voting="soft"))])


def create_classifier(
    name: str, params: Mapping[str, Any] | None, seed: int, threads: int, reduce_to: int | None = None
) -> Pipeline:
    """Build an unfitted pipeline for a registered classifier; config errors name the classifier and key.

    `reduce_to`: standardise and project onto that many principal components first. Being part of the pipeline,
    the projection is refitted in every CV fold, so it never sees the rows it is scored on.
    """
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier '{name}'; allowed: {sorted(CLASSIFIERS)}")
    pipeline = CLASSIFIERS[name](dict(params or {}), int(seed), max(1, int(threads)))
    if reduce_to is None:
        return pipeline
    reduce = [("reduce_scaler", StandardScaler()), ("reduce_pca", PCA(n_components=int(reduce_to), random_state=seed))]
    return Pipeline([*reduce, *pipeline.steps])


class _SkipTorchShim(importlib.abc.MetaPathFinder):
    """Refuses sklearn's array-API shim for torch, the one package whose import pulls in torch."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "sklearn.externals.array_api_compat.torch":
            raise ImportError(f"{name} is not needed to save or load a classifier")


def _skops_io() -> Any:
    """skops.io without torch. Its list of trusted types walks every sklearn package; walking the torch shim imports
    torch, 1.5-2 s of every classifier job for types no sklearn estimator uses (the list comes out the same)."""
    if "skops.io" not in sys.modules and "torch" not in sys.modules:
        finder = _SkipTorchShim()
        sys.meta_path.insert(0, finder)
        try:
            import skops.io
        finally:
            sys.meta_path.remove(finder)
    import skops.io

    return skops.io


def load_classifier(path: str | os.PathLike) -> Pipeline:
    """Load a saved pipeline, trusting only sklearn/numpy types, so a tampered file cannot run foreign code."""
    untrusted = _skops_io().get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise ValueError(f"{path}: refusing to load types outside sklearn/numpy: {foreign}")
    return _skops_io().load(path, trusted=untrusted)


def split_grid(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fixed params and the list of candidate dicts (the product of every list-valued param, in config order)."""
    fixed = {k: v for k, v in params.items() if not isinstance(v, list)}
    grid = {k: v for k, v in params.items() if isinstance(v, list)}
    for key, values in grid.items():
        if not values:
            raise ValueError(f"parameter '{key}': an empty list leaves no candidate to choose from")
    candidates = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    return fixed, candidates


def fit_data(data: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The only rows model selection and fitting ever see: train + val (features, labels, study groups)."""
    x = np.concatenate([data["X_train"], data["X_val"]])
    y = np.concatenate([data["y_train"], data["y_val"]])
    groups = None
    if "study_train" in data and "study_val" in data:
        groups = np.concatenate([data["study_train"], data["study_val"]]).astype(str)
    return x, y, groups


def _folds(
    y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]] | None, str | None]:
    """Stratified (and study-grouped) (train, held-out) index pairs, fewer folds when a class has few studies/images.

    With one image per study, grouping changes nothing, and StratifiedKFold does in milliseconds what
    StratifiedGroupKFold's per-group Python loop takes seconds for (about 1 s per 5,000 images, every CV call).
    """
    units = pd.DataFrame({"y": y, "g": groups if groups is not None else np.arange(y.size)})
    smallest = int(units.groupby("y")["g"].nunique().min())
    n_splits = min(folds, smallest)
    if n_splits < 2:
        return None, f"a class has only {smallest} {'studies' if groups is not None else 'images'} in train+val"
    rows = np.zeros((y.size, 1))
    if groups is not None and np.unique(groups).size < groups.size:
        return list(StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed).split(rows, y, groups)), None
    return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(rows, y)), None


def select_hyperparameters(
    name: str,
    params: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    seed: int,
    threads: int,
    folds: int = CV_FOLDS,
    reduce_to: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Best params by mean CV ROC AUC (one-vs-rest macro for multi-class) and a report of every candidate.

    Every candidate goes through create_classifier, so grid values are checked like fixed ones.
    """
    fixed, candidates = split_grid(params)
    for candidate in candidates:
        create_classifier(name, fixed | candidate, seed, threads, reduce_to)
    if len(candidates) == 1:
        return fixed | candidates[0], {"candidates": 1, "skipped": "a single candidate: nothing to choose"}
    splits, reason = _folds(y, groups, folds, seed)
    if splits is None:
        return fixed | candidates[0], {"candidates": len(candidates), "skipped": f"{reason}; first candidate used"}
    scoring = "roc_auc" if np.unique(y).size == 2 else "roc_auc_ovr"
    results = []
    for candidate in candidates:
        model = create_classifier(name, fixed | candidate, seed, 1, reduce_to)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores = cross_val_score(model, x, y, cv=splits, scoring=scoring, n_jobs=threads, error_score=np.nan)
        ok = np.isfinite(scores).any()
        mean, std = (float(np.nanmean(scores)), float(np.nanstd(scores))) if ok else (float("nan"), None)
        results.append({"params": candidate, "mean": mean, "std": std})
    means = np.array([r["mean"] for r in results])
    if np.isnan(means).all():
        raise ValueError(f"classifier '{name}': every CV candidate failed; check the grid {params}")
    best = int(np.nanargmax(means))  # first of equals: the grid order breaks ties, reproducibly
    report = {
        "candidates": len(candidates),
        "folds": len(splits),
        "grouped_by": "study" if groups is not None else None,
        "scoring": scoring,
        "results": results,
        "best_score": results[best]["mean"],
    }
    return fixed | candidates[best], report


def classifier_proba(model: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities for every class in the file, with zeros for classes absent from the fitting data."""
    full = np.zeros((x.shape[0], n_classes), dtype=np.float64)
    if x.shape[0]:
        full[:, model.classes_] = model.predict_proba(x)
    return full


def out_of_fold_proba(
    model: Pipeline,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    n_classes: int,
    seed: int,
    threads: int,
    folds: int = CV_FOLDS,
) -> tuple[np.ndarray | None, str | None]:
    """Probabilities for every train+val case from a copy of the model that never saw it (the validation data a
    threshold is chosen on, and what the ensemble averages); None and the reason when a class has too few cases.

    The folds are those of the hyperparameter search (same seed), so members and ensemble see the same splits.
    """
    splits, reason = _folds(y, groups, folds, seed)
    if splits is None:
        return None, reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        oof = cross_val_predict(model, x, y, cv=splits, method="predict_proba", n_jobs=threads)
    full = np.zeros((x.shape[0], n_classes), dtype=np.float64)
    full[:, np.unique(y)] = oof
    return full, None


def validation_threshold(
    y: np.ndarray, oof: np.ndarray | None, metric: str, missing: str | None = None
) -> tuple[float | None, dict[str, Any]]:
    """The binary decision threshold that maximises `metric` on out-of-fold predictions on train+val.

    The test split plays no part. None (argmax) for argmax, multi-class, or without out-of-fold predictions
    (`missing` says why).
    """
    if metric == "argmax":
        return None, {"rule": metric, "threshold": None}
    if oof is None or np.isnan(oof).any():
        reason = missing or "no out-of-fold predictions"
        return None, {"rule": metric, "threshold": None, "skipped": f"{reason}: argmax"}
    if np.unique(y).size != 2 or oof.shape[1] != 2:
        return None, {"rule": metric, "threshold": None, "skipped": "not a binary task: argmax"}
    threshold = choose_threshold(y, oof, metric)
    return threshold, {"rule": metric, "threshold": threshold, "chosen_on": "out-of-fold predictions on train+val"}


def validation_metrics(
    data: Mapping[str, np.ndarray], oof: np.ndarray | None, threshold: float | None
) -> dict[str, Any] | None:
    """Metrics of the out-of-fold predictions on the val rows: what the report picks classifiers by, on the same
    split it picks CNNs by (a CV mean over train+val would score classifiers partly on the rows the CNN was trained
    on, and exists only for classifiers with a grid). None without out-of-fold predictions or val rows."""
    n_train, n_val = data["X_train"].shape[0], data["X_val"].shape[0]
    if oof is None or n_val == 0 or np.isnan(oof[n_train:]).any():
        return None
    return classification_metrics(data["y_val"], oof[n_train:], threshold) | {"predictions": "out of fold"}


def _fitted_ensemble(
    features_path: Path, member_metrics: Sequence[str | os.PathLike], fit_ids: np.ndarray, want_oof: bool
) -> tuple[dict[str, Any], Pipeline, np.ndarray | None]:
    """Soft voting over the members' saved, fitted models, and the mean of their out-of-fold probabilities.

    Each member's metrics.json must come from the same feature file; its model.skops and oof.csv sit beside it.
    Voting over the fitted members gives what refitting them would (same params, seed and folds) at no cost.
    """
    params: dict[str, dict[str, Any]] = {}
    estimators, oofs = [], []
    for path in map(Path, member_metrics):
        saved = read_json(path)
        if saved.get("features") != str(features_path) or "best_params" not in saved:
            raise ValueError(f"{path}: not a classifier result on {features_path} (features {saved.get('features')})")
        params[saved["classifier"]] = saved["best_params"]
        estimators.append((saved["classifier"], FrozenEstimator(load_classifier(path.with_name("model.skops")))))
        if want_oof:
            oof_path = path.with_name(OOF)
            if not oof_path.is_file():
                raise ValueError(f"{oof_path}: missing; the ensemble's threshold needs each member's {OOF}")
            table, proba = read_predictions(oof_path)
            if not np.array_equal(table["image_id"].to_numpy(str), fit_ids.astype(str)):
                raise ValueError(f"{oof_path}: its image_id rows are not the train+val rows of {features_path}")
            oofs.append(proba)
    if len(estimators) < 2:
        raise ValueError(f"classifier '{ENSEMBLE}' needs at least two members, got {sorted(params)}")
    model = Pipeline([("clf", VotingClassifier(estimators, voting="soft"))])
    return {"members": params}, model, np.mean(oofs, axis=0) if oofs else None


def train_classifier(
    features_path: str | os.PathLike,
    name: str,
    params: Mapping[str, Any] | None,
    model_path: str | os.PathLike,
    predictions_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    seed: int = 0,
    threads: int = 1,
    roc_path: str | os.PathLike | None = None,
    roc_plot: str | os.PathLike | None = None,
    confusion_plot: str | os.PathLike | None = None,
    member_metrics: Sequence[str | os.PathLike] = (),
    n_bootstrap: int = N_BOOTSTRAP,
    cv_folds: int = CV_FOLDS,
    decision: str = "argmax",
    pca_components: int | None = None,
    oof_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Select by CV and fit on train+val, predict test once; write model.skops, predictions.csv, metrics.json.

    Optional: ROC points as CSV (DVC-plottable) at `roc_path`, ROC and confusion-matrix PNGs, the out-of-fold
    train+val predictions at `oof_path` (NaN where a class has too few cases for folds). The ensemble votes over
    its members' fitted models, found beside their metrics.json files (`member_metrics`), and thresholds on the
    mean of their oof.csv.
    `decision`: argmax, or the metric whose best binary threshold is chosen out of fold on train+val.
    `pca_components`: features wider than this are standardised and PCA-reduced inside the pipeline (the cost of
    SVM and k-NN grows with the width; the fused set is usually reduced already, by the fusion).
    """
    params = dict(params or {})
    threads = max(1, int(threads))
    features_path = Path(features_path)
    data = load_feature_file(features_path)
    classes = [str(c) for c in data["classes"]]
    x_fit, y_fit, groups = fit_data(data)
    if data["X_train"].shape[0] == 0 or data["X_test"].shape[0] == 0:
        raise ValueError(f"{features_path}: train and test splits must not be empty")
    reduce_to = pca_components if pca_components is not None and x_fit.shape[1] > pca_components else None
    fold_rows = x_fit.shape[0] * (cv_folds - 1) // cv_folds
    if reduce_to is not None and reduce_to > fold_rows:
        raise ValueError(
            f"{features_path}: pca_components={reduce_to} exceeds the {fold_rows} rows of a CV training fold"
        )
    want_oof = oof_path is not None or decision != "argmax"
    mark_work_start()
    with threadpool_limits(limits=threads):
        try:
            if name == ENSEMBLE:
                fit_ids = np.concatenate([data["ids_train"], data["ids_val"]])
                best_params, model, oof = _fitted_ensemble(features_path, member_metrics, fit_ids, want_oof)
                missing = "a member has no out-of-fold predictions"
                cv: dict[str, Any] = {"skipped": "members' params were chosen by their own CV"}
            else:
                best_params, cv = select_hyperparameters(
                    name, params, x_fit, y_fit, groups, seed, threads, cv_folds, reduce_to
                )
                model = create_classifier(name, best_params, seed, threads, reduce_to)
                oof, missing = None, None
                if want_oof:
                    oof, missing = out_of_fold_proba(model, x_fit, y_fit, groups, len(classes), seed, threads, cv_folds)
            threshold, decided = validation_threshold(y_fit, oof, decision, missing)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x_fit, y_fit)  # the ensemble's members are fitted already: this only records the classes
            proba = classifier_proba(model, data["X_test"], len(classes))  # the one look at the test split
        except ValueError as exc:
            raise ValueError(f"classifier '{name}' with params {params} failed on {features_path}: {exc}") from exc

    with atomic_path(model_path) as tmp:
        _skops_io().dump(model, tmp)
    write_predictions(predictions_path, data, proba, threshold)
    if oof_path is not None:
        no_oof = np.full((x_fit.shape[0], len(classes)), np.nan)
        write_predictions(oof_path, data, no_oof if oof is None else oof, threshold, splits=("train", "val"))

    metrics = evaluate(data["y_test"], proba, data.get("study_test"), n_bootstrap, seed, threshold)
    val_metrics = validation_metrics(data, oof, threshold)
    features_identity = feature_identity(data, features_path)
    metrics |= {
        **({} if features_identity is None else {"identity": features_identity | {"classifier": name}}),
        **({} if val_metrics is None else {"val": val_metrics}),
        "decision": decided,
        "classifier": name,
        "params": params,
        "best_params": best_params,
        "cv": cv,
        "features": str(features_path),
        "classes": classes,
        "n_fit": int(x_fit.shape[0]),
        "n_features": int(x_fit.shape[1]),
        "pca_components": reduce_to,
        "seed": int(seed),
    }
    roc = roc_points(data["y_test"], proba, classes)
    if roc_path is not None:
        with atomic_path(roc_path) as tmp:
            roc.to_csv(tmp, index=False)
    if roc_plot is not None or confusion_plot is not None:
        from medxfer.plots import plot_confusion, plot_roc  # matplotlib only when plots are asked for

        title = f"{name} on {features_path.stem} (test, n={len(proba)})"
        if roc_plot is not None:
            plot_roc(roc, metrics["roc_auc"], roc_plot, title)
        if confusion_plot is not None:
            plot_confusion(np.array(metrics["confusion_matrix"]), classes, confusion_plot, title)
    write_json(metrics_path, metrics)
    return metrics


__all__ = [
    "CLASSIFIERS",
    "ENSEMBLE",
    "create_classifier",
    "fit_data",
    "load_classifier",
    "register_classifier",
    "select_hyperparameters",
    "train_classifier",
]
