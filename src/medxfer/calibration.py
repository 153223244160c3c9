"""Probabilities that mean what they say: temperature scaling (Guo et al. 2017) fitted on validation logits, and the
scores that show whether it helped: expected calibration error (15 equal-width bins of the top-label confidence),
the Brier score and the reliability bins a diagram draws.

Temperature scaling divides the logits by one T > 0: the ranking of cases and the argmax do not change, so AUC and
argmax decisions stay as they were; a threshold chosen on val probabilities maps to the same decisions when chosen
again on the scaled ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

N_BINS = 15
# T is searched in [e^-4, e^4]: a wider range only fits degenerate validation sets (all one class, perfectly split).
_LOG_T_BOUNDS = (-4.0, 4.0)


def scaled_proba(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T), in float64."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimises the negative log-likelihood of softmax(logits / T) on these (validation) cases.

    1.0 (no change) when there is nothing to fit on: no cases, or a single class among them.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if len(labels) == 0 or np.unique(labels).size < 2:
        return 1.0
    result = minimize_scalar(
        lambda log_t: _nll(logits, labels, float(np.exp(log_t))), bounds=_LOG_T_BOUNDS, method="bounded"
    )
    return float(np.exp(result.x))


def reliability_bins(labels: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Per equal-width bin of the top-label confidence: its range, its cases, their mean confidence and accuracy."""
    labels, proba = np.asarray(labels), np.asarray(proba, dtype=np.float64)
    confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = which == b
        count = int(inside.sum())
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "n": count,
                "confidence": float(confidence[inside].mean()) if count else None,
                "accuracy": float(correct[inside].mean()) if count else None,
            }
        )
    return bins


def expected_calibration_error(labels: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> float:
    """Sum over bins of (cases in bin / all cases) * |accuracy - mean confidence|, top-label, equal-width bins."""
    bins = [b for b in reliability_bins(labels, proba, n_bins) if b["n"]]
    total = sum(b["n"] for b in bins)
    return float(sum(b["n"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins)) if total else float("nan")


def brier_score(labels: np.ndarray, proba: np.ndarray) -> float:
    """Mean over cases of the squared distance between the probability vector and the one-hot label (for two
    classes, twice the usual binary Brier score of P(class 1))."""
    proba = np.asarray(proba, dtype=np.float64)
    onehot = np.eye(proba.shape[1])[np.asarray(labels, dtype=np.int64)]
    return float(((proba - onehot) ** 2).sum(axis=1).mean()) if len(proba) else float("nan")


def calibration_scores(labels: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    if len(labels) == 0:
        return {"ece": None, "brier": None, "reliability": []}
    return {
        "ece": expected_calibration_error(labels, proba, n_bins),
        "brier": brier_score(labels, proba),
        "reliability": reliability_bins(labels, proba, n_bins),
    }


def calibration_report(
    labels: np.ndarray, logits: np.ndarray, temperature: float, n_bins: int = N_BINS
) -> dict[str, Any]:
    """What metrics.json records for one split: the scores of the raw probabilities and of the temperature-scaled
    ones (T fitted on val, never on the split scored here unless it is val)."""
    return {
        "before": calibration_scores(labels, scaled_proba(logits), n_bins),
        "after": calibration_scores(labels, scaled_proba(logits, temperature), n_bins),
    }


# Classifiers: their probabilities have no logits to scale. Platt scaling (a logistic fit on the log-odds) or isotonic
# regression is fitted on the out-of-fold predictions on train+val, and kept only where it lowers the Brier score
# of held-out out-of-fold cases (binary tasks).
RECALIBRATION_FOLDS = 3


def _log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_recalibration(method: str, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The map from P(class 1) to a calibrated one, as plain numbers (it goes into metrics.json and bundles)."""
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        fitted = LogisticRegression(C=1e6).fit(_log_odds(p)[:, None], y)
        return {"method": "platt", "slope": float(fitted.coef_[0, 0]), "intercept": float(fitted.intercept_[0])}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return {"method": "isotonic", "x": fitted.X_thresholds_.tolist(), "y": fitted.y_thresholds_.tolist()}
    raise ValueError(f"recalibration method {method!r}: use platt or isotonic")


def recalibrated(mapping: dict[str, Any] | None, proba: np.ndarray) -> np.ndarray:
    """Binary class probabilities after the mapping (unchanged without one)."""
    if mapping is None or len(proba) == 0:
        return np.asarray(proba, dtype=np.float64)
    p = np.asarray(proba, dtype=np.float64)[:, 1]
    if mapping["method"] == "platt":
        p = 1 / (1 + np.exp(-(mapping["slope"] * _log_odds(p) + mapping["intercept"])))
    else:
        p = np.interp(p, mapping["x"], mapping["y"])  # what IsotonicRegression.predict does, clipped at the ends
    return np.column_stack([1 - p, p])


def choose_recalibration(
    labels: np.ndarray, oof: np.ndarray | None, seed: int, folds: int = RECALIBRATION_FOLDS
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """None, Platt or isotonic, whichever gives the lowest mean Brier score on held-out folds of the out-of-fold
    predictions (never the test split); the winner refitted on all of them. None where it cannot help or be
    judged: multi-class, missing out-of-fold predictions, a class with fewer cases than folds."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    if oof is None or np.isnan(oof).any() or oof.shape[1] != 2:
        return None, {"method": None, "skipped": "binary tasks with out-of-fold predictions only"}
    if np.bincount(labels, minlength=2).min() < folds:
        return None, {"method": None, "skipped": f"a class has fewer than {folds} cases"}
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(oof, labels)
    scores: dict[str, list[float]] = {"none": [], "platt": [], "isotonic": []}
    for fit_rows, held_out in splits:
        scores["none"].append(brier_score(labels[held_out], oof[held_out]))
        for method in ("platt", "isotonic"):
            mapping = fit_recalibration(method, oof[fit_rows, 1], labels[fit_rows])
            scores[method].append(brier_score(labels[held_out], recalibrated(mapping, oof[held_out])))
    means = {method: float(np.mean(values)) for method, values in scores.items()}
    best = min(means, key=lambda m: (means[m], m != "none"))  # the raw probabilities win ties
    report = {"method": None if best == "none" else best, "cv_brier": means, "folds": folds}
    report["chosen_on"] = "out-of-fold predictions on train+val"
    if best == "none":
        return None, report
    return fit_recalibration(best, oof[:, 1], labels), report
