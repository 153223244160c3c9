"""predictions.csv, the one table of test (and out-of-fold) predictions every model writes: CNN heads and classifiers
alike, so the report scores them the same way (medxfer.metrics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medxfer.io import atomic_path
from medxfer.metrics import N_BOOTSTRAP, decide, evaluate


def read_predictions(path: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """A predictions.csv (image_id, [study_id], label, prob_<class>...) and its probability matrix."""
    table = pd.read_csv(path, dtype={"image_id": str, "study_id": str})
    columns = [c for c in table.columns if c.startswith("prob_")]
    if not columns or "label" not in table or "image_id" not in table:
        raise ValueError(f"{path}: predictions need image_id, label and prob_<class> columns, got {list(table)}")
    return table, table[columns].to_numpy(np.float64)


def write_predictions(
    path: Any,
    data: Mapping[str, np.ndarray],
    proba: np.ndarray,
    threshold: float | None = None,
    splits: Sequence[str] = ("test",),
) -> None:
    """The predictions.csv read_predictions reads, for CNNs and classifiers alike: image_id, [study_id], [split],
    label, probability (positive class; predicted class if multi-class), prediction, prob_*.

    `data` holds arrays as a feature file does (`ids_<split>`, `y_<split>`, [`study_<split>`], `classes`); rows of
    `splits` in that order. Rows without probabilities (NaN) get no prediction.
    """

    def stack(key: str) -> np.ndarray:
        return np.concatenate([data[f"{key}_{split}"] for split in splits])

    picked = decide(np.nan_to_num(proba), threshold)
    prediction = pd.array(picked, dtype="Int64")
    prediction[np.isnan(proba).any(axis=1)] = pd.NA
    columns: dict[str, Any] = {"image_id": stack("ids")}
    if all(f"study_{s}" in data for s in splits):
        columns["study_id"] = stack("study")
    if len(splits) > 1:
        columns["split"] = np.repeat(list(splits), [len(data[f"y_{s}"]) for s in splits])
    columns["label"] = stack("y")
    columns["probability"] = proba[:, 1] if proba.shape[1] == 2 else proba[np.arange(len(proba)), picked]
    columns["prediction"] = prediction
    for index, class_name in enumerate(data["classes"]):
        columns[f"prob_{class_name}"] = proba[:, index]
    with atomic_path(path) as tmp:
        pd.DataFrame(columns).to_csv(tmp, index=False)


def evaluate_predictions(
    path: Any, n_resamples: int = N_BOOTSTRAP, seed: int = 0, threshold: float | None = None, ordinal: bool = False
) -> dict[str, Any]:
    """`evaluate` on a predictions.csv, so the CNN's own predictions get the same intervals as the classifiers."""
    table, proba = read_predictions(path)
    studies = table["study_id"].to_numpy(str) if "study_id" in table else None
    return evaluate(table["label"].to_numpy(np.int64), proba, studies, n_resamples, seed, threshold, ordinal)
