"""Classification metrics as the field reports them, from true labels and class probabilities."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, F1, Cohen's kappa and ROC AUC.

    Binary tasks score F1 on the positive class (index 1) and AUC on its probability; multi-class tasks use
    macro F1 and one-vs-rest macro AUC. AUC is NaN where the true labels hold a single class.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != y_true.shape[0]:
        raise ValueError(f"proba must be (n_samples, n_classes); got {proba.shape} for {y_true.shape[0]} labels")
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    binary = n_classes == 2
    labels = np.arange(n_classes)
    result = {
        "n": int(y_true.shape[0]),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "f1": float(
            skm.f1_score(y_true, y_pred, average="binary" if binary else "macro", labels=labels, zero_division=0)
        ),
        "cohen_kappa": float(skm.cohen_kappa_score(y_true, y_pred, labels=labels)),
        "roc_auc": float("nan"),
    }
    if np.unique(y_true).size > 1:
        if binary:
            result["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
        else:
            present = np.unique(y_true)
            if present.size == n_classes:
                result["roc_auc"] = float(skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro"))
    if np.isnan(result["cohen_kappa"]):
        result["cohen_kappa"] = 0.0
    return result
