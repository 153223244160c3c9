"""Classification metrics as the field reports them, with bootstrap intervals and paired comparisons.

Every metric is computed from a (weighted) confusion matrix and a weighted rank statistic for ROC AUC. Weights
make the bootstrap cheap and exact: a resample is a vector of counts per case (or per study, for a cluster
bootstrap), so 1000 resamples are a few array operations instead of 1000 calls into sklearn. With unit weights
the values equal sklearn's (tests/test_report.py checks that).

Binary tasks: F1, sensitivity and specificity of the positive class (index 1), AUC on its probability.
Multi-class tasks: macro F1, macro sensitivity (= balanced accuracy), macro specificity, one-vs-rest macro AUC.
Graded (ordinal) labels add ORDINAL_METRICS: the quadratic-weighted kappa and the mean absolute error in grades,
which count a miss by two grades as worse than a miss by one (the field reports both for e.g. Kellgren-Lawrence).
The decision is argmax of the probabilities (0.5 for binary) unless a binary model carries a threshold, which is
chosen on validation data (`choose_threshold`), never on test. ROC AUC does not depend on it.

Replicates (the same model trained with several seeds, scored on the same test cases) are summarised by their
mean and spread; `replicate_bootstrap` gives an interval of the mean by scoring every replicate on each resample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "cohen_kappa",
    "roc_auc",
    "sensitivity",
    "specificity",
)
ORDINAL_METRICS: tuple[str, ...] = ("quadratic_kappa", "mean_absolute_error")
N_BOOTSTRAP = 1000
CI_LEVEL = 0.95


def _check(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != y_true.shape[0]:
        raise ValueError(f"proba must be (n_samples, n_classes); got {proba.shape} for {y_true.shape[0]} labels")
    if y_true.size and (y_true.min() < 0 or y_true.max() >= proba.shape[1]):
        raise ValueError(f"labels must be in 0..{proba.shape[1] - 1}, got {np.unique(y_true)}")
    return y_true, proba


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """(B, K, K) confusion matrices (rows: true, columns: predicted) for B weight vectors of shape (n,)."""
    cell = y_true * n_classes + y_pred
    offsets = np.arange(weights.shape[0])[:, None] * n_classes * n_classes
    size = weights.shape[0] * n_classes**2
    flat = np.bincount((offsets + cell[None, :]).ravel(), weights=weights.ravel(), minlength=size)
    return flat.reshape(weights.shape[0], n_classes, n_classes)


def _divide(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den with `empty` where den is 0 (sklearn's zero_division / undefined recall)."""
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN, NaN (without a warning) where every value is NaN."""
    valid = ~np.isnan(values)
    count = valid.sum(axis=-1)
    return _divide(np.where(valid, values, 0.0).sum(axis=-1), count, np.nan)


def _auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC for B weight vectors; ties count one half; NaN where a class has no weight."""
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(np.where(positive[order], w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive[order], 0.0, w), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    total = pos.sum(axis=1) * neg.sum(axis=1)
    return _divide((pos * (below + 0.5 * neg)).sum(axis=1), total, np.nan)


def decide(proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Predicted class: argmax, or for binary tasks with a threshold, positive where P(class 1) >= threshold."""
    if threshold is None or proba.shape[1] != 2:
        return proba.argmax(axis=1)
    return (proba[:, 1] >= threshold).astype(np.int64)


def metric_names(ordinal: bool = False) -> tuple[str, ...]:
    """The metrics reported for a task: METRICS, and ORDINAL_METRICS when its classes are grades."""
    return METRICS + ORDINAL_METRICS if ordinal else METRICS


def _batch_metrics(
    y_true: np.ndarray, proba: np.ndarray, weights: np.ndarray, threshold: float | None = None, ordinal: bool = False
) -> dict[str, np.ndarray]:
    """Every metric of metric_names(ordinal) for each row of `weights` (B, n): the one place the formulas live."""
    n_classes = proba.shape[1]
    y_pred = decide(proba, threshold)
    cm = _confusion(y_true, y_pred, weights, n_classes)
    n = cm.sum(axis=(1, 2))
    diag = np.diagonal(cm, axis1=1, axis2=2)
    true_count, pred_count = cm.sum(axis=2), cm.sum(axis=1)
    recall = _divide(diag, true_count, np.nan)  # NaN for classes absent from y_true, as sklearn's balanced accuracy
    f1 = _divide(2 * diag, true_count + pred_count, 0.0)
    negatives = n[:, None] - true_count
    specificity = _divide(negatives - (pred_count - diag), negatives, np.nan)
    expected = (true_count * pred_count).sum(axis=1) / np.where(n > 0, n, 1) ** 2
    observed = _divide(diag.sum(axis=1), n, np.nan)
    kappa = _divide(observed - expected, 1.0 - expected, np.nan)
    kappa = np.where(np.isnan(kappa) & (n > 0), 0.0, kappa)  # one class everywhere: no agreement beyond chance
    result = {
        "accuracy": observed,
        "balanced_accuracy": _nanmean(recall),
        "cohen_kappa": kappa,
    }
    if n_classes == 2:
        result |= {"f1": f1[:, 1], "sensitivity": recall[:, 1], "specificity": recall[:, 0]}
        result["roc_auc"] = _auc(y_true == 1, proba[:, 1], weights)
    else:
        result |= {"f1": f1.mean(axis=1), "sensitivity": _nanmean(recall), "specificity": _nanmean(specificity)}
        per_class = np.stack([_auc(y_true == k, proba[:, k], weights) for k in range(n_classes)], axis=1)
        # like sklearn: one-vs-rest AUC is only defined when every class is present
        result["roc_auc"] = np.where(np.isnan(per_class).any(axis=1), np.nan, per_class.mean(axis=1))
    if ordinal:
        result |= _ordinal_metrics(cm, true_count, pred_count, n)
    return result


def _ordinal_metrics(
    cm: np.ndarray, true_count: np.ndarray, pred_count: np.ndarray, n: np.ndarray
) -> dict[str, np.ndarray]:
    """Quadratic-weighted kappa (as sklearn's cohen_kappa_score(weights='quadratic')) and the mean absolute error
    in grades, from (B, K, K) confusion matrices."""
    grades = np.arange(cm.shape[1])
    distance = np.abs(grades[:, None] - grades[None, :]).astype(np.float64)
    observed = (cm * distance**2).sum(axis=(1, 2))
    expected = (true_count[:, :, None] * pred_count[:, None, :] * distance**2).sum(axis=(1, 2)) / np.where(n > 0, n, 1)
    kappa = 1.0 - _divide(observed, expected, np.nan)
    kappa = np.where(np.isnan(kappa) & (n > 0), 0.0, kappa)  # one grade everywhere: no agreement beyond chance
    return {"quadratic_kappa": kappa, "mean_absolute_error": _divide((cm * distance).sum(axis=(1, 2)), n, np.nan)}


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, threshold: float | None = None, ordinal: bool = False
) -> dict[str, Any]:
    """Point estimates of metric_names(ordinal), the test size and the confusion matrix (rows true, columns
    predicted); graded tasks say `ordinal: true`, so readers of the record know which metrics it has."""
    y_true, proba = _check(y_true, proba)
    ones = np.ones((1, y_true.size))
    scored = _batch_metrics(y_true, proba, ones, threshold, ordinal)
    point = {name: float(values[0]) for name, values in scored.items()}
    cm = _confusion(y_true, decide(proba, threshold), ones, proba.shape[1])[0].astype(np.int64)
    result = {"n": int(y_true.size), **{m: point[m] for m in metric_names(ordinal)}, "confusion_matrix": cm.tolist()}
    result |= {"ordinal": True} if ordinal else {}
    return result | ({} if threshold is None else {"threshold": float(threshold)})


# Threshold candidates: at most this many quantiles of the validation scores (exact for smaller sets).
_MAX_CANDIDATES = 400
DECISION_METRICS = ("accuracy", "balanced_accuracy", "f1", "cohen_kappa")


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, metric: str) -> float | None:
    """The P(class 1) cut-off that maximises `metric` on these (validation) cases; None for multi-class or when a
    class is missing, where argmax stays the decision.

    Candidates are the midpoints between neighbouring scores; of equally good ones the closest to 0.5 wins, so a
    flat optimum does not drift to an extreme.
    """
    if metric not in DECISION_METRICS:
        raise ValueError(f"unknown decision metric '{metric}'; allowed: {list(DECISION_METRICS)}")
    y_true, proba = _check(y_true, proba)
    if proba.shape[1] != 2 or np.unique(y_true).size < 2:
        return None
    scores = np.unique(proba[:, 1])
    if scores.size > _MAX_CANDIDATES:
        scores = np.unique(np.quantile(proba[:, 1], np.linspace(0, 1, _MAX_CANDIDATES)))
    candidates = (
        np.r_[scores[0] - 1e-9, (scores[1:] + scores[:-1]) / 2, scores[-1] + 1e-9] if scores.size > 1 else scores
    )
    ones = np.ones((1, y_true.size))
    values = np.array([_batch_metrics(y_true, proba, ones, float(t))[metric][0] for t in candidates])
    values = np.where(np.isnan(values), -np.inf, values)
    best = np.flatnonzero(values == values.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def _resample_weights(groups: np.ndarray | None, n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, n) case weights: how often each case is drawn; with groups, whole groups are drawn (cluster bootstrap)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = rng.integers(0, n, size=(n_resamples, n))
        index = np.arange(n)
    else:
        _, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        n_groups = int(index.max()) + 1 if n else 0
        draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
        n = n_groups
    offsets = np.arange(n_resamples)[:, None] * n
    counts = np.bincount((offsets + draws).ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    return counts[:, index].astype(np.float64)


def _interval(values: np.ndarray, level: float) -> list[float | None]:
    valid = values[~np.isnan(values)]
    if valid.size == 0:
        return [None, None]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(valid, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray | None = None,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = CI_LEVEL,
    threshold: float | None = None,
    ordinal: bool = False,
) -> dict[str, Any]:
    """Point estimates plus percentile bootstrap intervals `ci: {metric: [low, high]}` for every metric.

    With `groups` (study ids) whole studies are resampled, because images of one study are not independent.
    """
    y_true, proba = _check(y_true, proba)
    result = classification_metrics(y_true, proba, threshold, ordinal)
    weights = _resample_weights(groups, y_true.size, n_resamples, seed)
    replicates = _batch_metrics(y_true, proba, weights, threshold, ordinal)
    result["ci"] = {m: _interval(replicates[m], level) for m in metric_names(ordinal)}
    result["bootstrap"] = {
        "resamples": int(n_resamples),
        "seed": int(seed),
        "level": level,
        "unit": "study" if groups is not None else "image",
    }
    return result


def study_level(
    y_true: np.ndarray, proba: np.ndarray, studies: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Study labels, study probabilities (mean of the image probabilities, as in the MURA paper) and study ids.

    None when a study holds images with different labels: then a study has no single truth to score against.
    """
    y_true, proba = _check(y_true, proba)
    frame = pd.DataFrame(proba).assign(study=np.asarray(studies).astype(str), label=y_true)
    grouped = frame.groupby("study", sort=True)
    if (grouped["label"].nunique() > 1).any():
        return None
    labels = grouped["label"].first().to_numpy(np.int64)
    mean_proba = grouped[list(range(proba.shape[1]))].mean().to_numpy(np.float64)
    return labels, mean_proba, grouped["label"].first().index.to_numpy(str)


def evaluate(
    y_true: np.ndarray,
    proba: np.ndarray,
    studies: np.ndarray | None = None,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
    threshold: float | None = None,
    ordinal: bool = False,
) -> dict[str, Any]:
    """Image-level metrics with intervals and, where studies group several images, study-level ones under `study`."""
    result = bootstrap_metrics(y_true, proba, studies, n_resamples, seed, threshold=threshold, ordinal=ordinal)
    if studies is not None and np.unique(np.asarray(studies).astype(str)).size < len(y_true):
        aggregated = study_level(y_true, proba, studies)
        if aggregated is None:
            result["study"] = {"skipped": "a study holds images with different labels"}
        else:
            labels, study_proba, _ = aggregated
            result["study"] = bootstrap_metrics(
                labels, study_proba, None, n_resamples, seed, threshold=threshold, ordinal=ordinal
            )
            result["study"]["bootstrap"]["unit"] = "study"
    return result


def _replicate_means(
    y_true: np.ndarray,
    probas: Sequence[np.ndarray],
    thresholds: Sequence[float | None],
    weights: np.ndarray,
    ordinal: bool = False,
) -> dict[str, np.ndarray]:
    """Each metric averaged over the replicates, for each row of `weights`: (B,) per metric."""
    per_replicate = [_batch_metrics(y_true, p, weights, t, ordinal) for p, t in zip(probas, thresholds, strict=True)]
    return {m: np.mean([r[m] for r in per_replicate], axis=0) for m in metric_names(ordinal)}


def _as_replicates(
    y_true: np.ndarray, probas: np.ndarray | Sequence[np.ndarray], thresholds: Any
) -> tuple[list[np.ndarray], list[float | None]]:
    probas = [probas] if isinstance(probas, np.ndarray) else list(probas)
    if not isinstance(thresholds, list | tuple):
        thresholds = [thresholds] * len(probas)
    if not probas or len(thresholds) != len(probas):
        raise ValueError(f"{len(probas)} replicate probability matrices need as many thresholds, got {thresholds}")
    return [_check(y_true, p)[1] for p in probas], list(thresholds)


def replicate_bootstrap(
    y_true: np.ndarray,
    probas: Sequence[np.ndarray],
    thresholds: Sequence[float | None] | None = None,
    groups: np.ndarray | None = None,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = CI_LEVEL,
    ordinal: bool = False,
) -> dict[str, Any]:
    """Replicates (seeds) of one model on the same test cases: per metric the mean, the standard deviation and
    range over replicates, and a bootstrap interval of the mean (each resample scores every replicate).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probas, thresholds = _as_replicates(y_true, probas, thresholds)
    ones = np.ones((1, y_true.size))
    names = metric_names(ordinal)
    scored = [_batch_metrics(y_true, p, ones, t, ordinal) for p, t in zip(probas, thresholds, strict=True)]
    values = {m: np.array([s[m][0] for s in scored]) for m in names}
    weights = _resample_weights(groups, y_true.size, n_resamples, seed)
    means = _replicate_means(y_true, probas, thresholds, weights, ordinal)
    result: dict[str, Any] = {"n": int(y_true.size), "replicates": len(probas)}
    for m in names:
        v = values[m]
        result[m] = float(np.mean(v))
        result[f"{m}_sd"] = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
        result[f"{m}_min"], result[f"{m}_max"] = float(np.min(v)), float(np.max(v))
        result[f"{m}_lo"], result[f"{m}_hi"] = _interval(means[m], level)
    return result


def paired_bootstrap(
    y_true: np.ndarray,
    proba_a: np.ndarray | Sequence[np.ndarray],
    proba_b: np.ndarray | Sequence[np.ndarray],
    groups: np.ndarray | None = None,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = CI_LEVEL,
    threshold_a: float | None | Sequence[float | None] = None,
    threshold_b: float | None | Sequence[float | None] = None,
    ordinal: bool = False,
) -> dict[str, Any]:
    """A minus B on the same test cases and the same resamples: difference, its interval and a two-sided p-value.

    Pairing removes the case-to-case variation both models share, so the interval of the difference is much
    tighter than comparing two separate intervals. A and B may each be a list of replicates (seeds): then the
    difference is that of their means over replicates.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probas_a, thresholds_a = _as_replicates(y_true, proba_a, threshold_a)
    probas_b, thresholds_b = _as_replicates(y_true, proba_b, threshold_b)
    weights = _resample_weights(groups, y_true.size, n_resamples, seed)
    ones = np.ones((1, y_true.size))
    point_a = _replicate_means(y_true, probas_a, thresholds_a, ones, ordinal)
    point_b = _replicate_means(y_true, probas_b, thresholds_b, ones, ordinal)
    reps_a = _replicate_means(y_true, probas_a, thresholds_a, weights, ordinal)
    reps_b = _replicate_means(y_true, probas_b, thresholds_b, weights, ordinal)
    result: dict[str, Any] = {}
    for m in metric_names(ordinal):
        diff = reps_a[m] - reps_b[m]
        valid = diff[~np.isnan(diff)]
        p_value = None
        if valid.size:
            p_value = float(min(1.0, 2 * min(np.mean(valid <= 0), np.mean(valid >= 0))))
        result[m] = {
            "a": float(point_a[m][0]),
            "b": float(point_b[m][0]),
            "difference": float(point_a[m][0] - point_b[m][0]),
            "ci": _interval(diff, level),
            "p_value": p_value,
        }
    unit = "study" if groups is not None else "image"
    return {
        "metrics": result,
        "replicates": [len(probas_a), len(probas_b)],
        "bootstrap": {"resamples": n_resamples, "seed": seed, "level": level, "unit": unit},
    }


def paired_mean_difference(
    a: np.ndarray, b: np.ndarray, n_resamples: int = N_BOOTSTRAP, seed: int = 0, level: float = CI_LEVEL
) -> tuple[float, float | None, float | None]:
    """(mean of a - b, interval low, high) over cases scored both ways, resampling cases (paired percentile
    bootstrap); cases where either is NaN are left out."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    diff = diff[~np.isnan(diff)]
    if diff.size == 0:
        return float("nan"), None, None
    weights = _resample_weights(None, diff.size, n_resamples, seed)
    low, high = _interval(weights @ diff / diff.size, level)
    return float(diff.mean()), low, high


def roc_points(y_true: np.ndarray, proba: np.ndarray, class_names: Mapping[int, str] | list[str]) -> pd.DataFrame:
    """ROC curve points (class, fpr, tpr, threshold): the positive class for binary, one-vs-rest per class else."""
    from sklearn.metrics import roc_curve

    y_true, proba = _check(y_true, proba)
    names = list(class_names)
    targets = [1] if proba.shape[1] == 2 else list(range(proba.shape[1]))
    frames = []
    for k in targets:
        positive = y_true == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, thresholds = roc_curve(positive, proba[:, k], drop_intermediate=True)
        frames.append(pd.DataFrame({"class": names[k], "fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1)}))
    if not frames:
        return pd.DataFrame(columns=["class", "fpr", "tpr", "threshold"])
    return pd.concat(frames, ignore_index=True)
