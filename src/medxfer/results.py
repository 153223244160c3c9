"""One results row per metrics.json: its identity (medxfer.identity) says what it measures, the rest how well.

Every row carries its bootstrap 95 % intervals. A classifier's metrics.json has them already; the fine-tuned
CNN's own metrics.json (written by the training stage) gets them here from its sibling predictions.csv, by
the same code (medxfer.metrics.evaluate), so CNN and classifier rows are comparable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from medxfer.identity import read as read_identity
from medxfer.io import read_json
from medxfer.metrics import metric_names
from medxfer.prediction_files import evaluate_predictions
from medxfer.selection import selection_auc

KEYS = ["target", "init", "features", "classifier"]
PREDICTIONS = "predictions.csv"


def is_missing(value: Any) -> bool:
    """None or NaN: a metric a row does not have (no study level, no interval, no timing)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def table_order(value: object) -> object:
    """Sort scratch before imagenet before indomain, single models before the fusion, the CNN head first."""
    rank = {"scratch": "0", "imagenet": "1", "indomain": "2", "fused": "~", "cnn": "0"}
    return rank.get(value, f"1{value}") if isinstance(value, str) else value


def _keys(metrics: dict[str, Any], path: Path) -> dict[str, str]:
    """What a metrics file measures, from its own identity: a CNN's softmax head (classifier `cnn`) or a classifier
    on one model's or the fused features. `init` is the run (`indomain-seed1`), `replicate_of` its init."""
    ident = read_identity(metrics, path, "features", "classifier")
    keys = {"target": ident["target"], "init": ident["run"], "features": ident["features"]}
    return keys | {"classifier": ident["classifier"], "replicate_of": ident["init"]}


def metrics_with_intervals(path: Path, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The metrics file, completed with intervals (and study-level results) from predictions.csv where missing."""
    metrics = read_json(path)
    predictions = path.with_name(PREDICTIONS)
    if "ci" not in metrics and predictions.is_file():
        ordinal = bool(metrics.get("ordinal"))
        computed = evaluate_predictions(predictions, n_bootstrap, seed, metrics.get("threshold"), ordinal)
        names = metric_names(ordinal)
        metrics = computed | {k: v for k, v in metrics.items() if k in names or k == "n" or k not in computed}
    return metrics


def _flat(prefix: str, metrics: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {f"{prefix}n": metrics.get("n")}
    ci = metrics.get("ci", {})
    for m in metric_names(bool(metrics.get("ordinal"))):
        low, high = ci.get(m, [None, None])
        row |= {f"{prefix}{m}": metrics.get(m), f"{prefix}{m}_lo": low, f"{prefix}{m}_hi": high}
    return row


def results_row(path: Path, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """A metrics.json as one flat row: its keys, every metric with _lo/_hi interval, selection AUC and costs."""
    metrics = metrics_with_intervals(path, n_bootstrap, seed)
    row = _keys(metrics, path) | _flat("", metrics) | ({"ordinal": True} if metrics.get("ordinal") else {})
    row["n_test"] = row.pop("n")
    study = metrics.get("study", {})
    if "accuracy" in study:
        row |= _flat("study_", study)
    row["predictions"] = str(path.with_name(PREDICTIONS)) if path.with_name(PREDICTIONS).is_file() else None
    row["selection_auc"] = selection_auc(metrics)
    row["threshold"] = metrics.get("threshold")
    row["replicate_of"] = row.pop("replicate_of")  # the column order of earlier summaries
    row["num_parameters"] = metrics.get("num_parameters")
    row["train_seconds"] = _training_seconds(path.with_name("log.csv")) if row["classifier"] == "cnn" else None
    return row | _calibration(metrics)


def _calibration(metrics: dict[str, Any]) -> dict[str, Any]:
    """Test ECE and Brier score before and after calibration: a CNN's temperature scaling (its T), a classifier's
    recalibration (its method: platt, isotonic, or none when neither helped out of fold)."""
    calibration = metrics.get("calibration")
    if not calibration:
        return dict.fromkeys(("temperature", "recalibration", "ece", "ece_scaled", "brier", "brier_scaled"))
    test = calibration["test"]
    return {
        "temperature": calibration.get("temperature"),
        "recalibration": calibration.get("method") or ("none" if "cv_brier" in calibration else None),
        "ece": test["before"]["ece"],
        "ece_scaled": test["after"]["ece"],
        "brier": test["before"]["brier"],
        "brier_scaled": test["after"]["brier"],
    }


def _training_seconds(log_csv: Path) -> float | None:
    """A fine-tuning run's wall time from its per-epoch log (timings stay out of metrics.json, which must be the
    same bit for bit on every run)."""
    return float(pd.read_csv(log_csv)["seconds"].sum()) if log_csv.is_file() else None


def check_faithfulness_table(table: pd.DataFrame, path: Path) -> None:
    """A faithfulness table names its model in its own columns (target, init run, arch), as explain_model writes."""
    missing = [key for key in FAITHFULNESS_KEYS if key not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: no {missing} columns to say which model it scores; written by an older medxfer or for a "
            "model without an identity (a pretraining checkpoint): re-run explain_model"
        )


FAITHFULNESS_KEYS = ("target", "init", "arch")
