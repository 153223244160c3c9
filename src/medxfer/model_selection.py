"""Honest model selection on train+val: CV folds, the hyperparameter search, out-of-fold predictions, thresholds.

Hyperparameters are chosen by cross-validation on train+val only (folds grouped by study when studies exist, so
images of one study never sit on both sides of a fold); nothing here reads the test split. In a
classifier's config a list is a grid of candidates searched by CV; any other value is fixed.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.pipeline import Pipeline

from medxfer.classifiers import create_classifier
from medxfer.metrics import choose_threshold, classification_metrics

CV_FOLDS = 3


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


def cv_splits(
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
    splits, reason = cv_splits(y, groups, folds, seed)
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
    splits, reason = cv_splits(y, groups, folds, seed)
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
    data: Mapping[str, np.ndarray], oof: np.ndarray | None, threshold: float | None, ordinal: bool = False
) -> dict[str, Any] | None:
    """Metrics of the out-of-fold predictions on the val rows: what the report picks classifiers by, on the same
    split it picks CNNs by (a CV mean over train+val would score classifiers partly on the rows the CNN was trained
    on, and exists only for classifiers with a grid). None without out-of-fold predictions or val rows."""
    n_train, n_val = data["X_train"].shape[0], data["X_val"].shape[0]
    if oof is None or n_val == 0 or np.isnan(oof[n_train:]).any():
        return None
    return classification_metrics(data["y_val"], oof[n_train:], threshold, ordinal) | {"predictions": "out of fold"}


__all__ = [
    "CV_FOLDS",
    "cv_splits",
    "fit_data",
    "out_of_fold_proba",
    "select_hyperparameters",
    "split_grid",
    "validation_metrics",
    "validation_threshold",
]
