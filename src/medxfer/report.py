"""Collect every metrics.json into one comparison (per target: init x features x classifier), and draw plots.

Every row carries its bootstrap 95 % intervals. A classifier's metrics.json has them already; the fine-tuned
CNN's own metrics.json (written by the training stage) gets them here from its sibling predictions.csv, by
the same code (medxfer.metrics.evaluate), so CNN and classifier rows are comparable. Per target, the best fused
classifier is compared with the best single fine-tuned CNN by a paired bootstrap on the same test cases.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medxfer.io import atomic_path, read_json, write_json, write_text
from medxfer.metrics import METRICS, N_BOOTSTRAP, evaluate_predictions, paired_bootstrap, read_predictions

KEYS = ["target", "init", "features", "classifier"]
PREDICTIONS = "predictions.csv"


def _keys(path: Path) -> dict[str, str]:
    """What a metrics file measures, from its place in results/.

    finetune/{target}/{init}/{arch}/metrics.json            -> the CNN's own softmax head
    classify/{target}/{init}/{features}/{clf}/metrics.json  -> a classifier on single-model or fused features
    """
    parts = path.parts
    if "finetune" in parts[-5:]:
        target, init, arch = parts[-4:-1]
        return {"target": target, "init": init, "features": arch, "classifier": "cnn"}
    if "classify" in parts[-6:]:
        target, init, features, clf = parts[-5:-1]
        return {"target": target, "init": init, "features": features, "classifier": clf}
    raise ValueError(f"{path}: not a finetune/ or classify/ metrics file")


def _with_intervals(path: Path, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The metrics file, completed with intervals (and study-level results) from predictions.csv where missing."""
    metrics = read_json(path)
    predictions = path.with_name(PREDICTIONS)
    if "ci" not in metrics and predictions.is_file():
        computed = evaluate_predictions(predictions, n_bootstrap, seed)
        metrics = computed | {k: v for k, v in metrics.items() if k in METRICS or k == "n" or k not in computed}
    return metrics


def _flat(prefix: str, metrics: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {f"{prefix}n": metrics.get("n")}
    ci = metrics.get("ci", {})
    for m in METRICS:
        low, high = ci.get(m, [None, None])
        row |= {f"{prefix}{m}": metrics.get(m), f"{prefix}{m}_lo": low, f"{prefix}{m}_hi": high}
    return row


def _row(path: Path, n_bootstrap: int, seed: int) -> dict[str, Any]:
    metrics = _with_intervals(path, n_bootstrap, seed)
    row = _keys(path) | _flat("", metrics)
    row["n_test"] = row.pop("n")
    study = metrics.get("study", {})
    if "accuracy" in study:
        row |= _flat("study_", study)
    row["predictions"] = str(path.with_name(PREDICTIONS)) if path.with_name(PREDICTIONS).is_file() else None
    row["selection_auc"] = _selection_auc(metrics)
    return row


def _selection_auc(metrics: dict[str, Any]) -> float:
    """AUC on data other than the test split: cross-validated on train+val for classifiers, val for CNNs."""
    score = metrics.get("cv", {}).get("best_score", metrics.get("val", {}).get("roc_auc"))
    return float("nan") if score is None else float(score)


def _order(value: object) -> object:
    """Sort scratch before imagenet before indomain, single models before the fusion, the CNN head first."""
    rank = {"scratch": "0", "imagenet": "1", "indomain": "2", "fused": "~", "cnn": "0"}
    return rank.get(value, f"1{value}") if isinstance(value, str) else value


def _best(rows: pd.DataFrame) -> pd.Series | None:
    """Highest selection AUC (never a test number, so the comparison is not tuned on test), then table order."""
    if rows.empty:
        return None
    ranked = rows.assign(_s=rows["selection_auc"].fillna(-np.inf))
    return ranked.sort_values("_s", ascending=False, kind="stable").iloc[0]


def compare_best(rows: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap: the best fused classifier (A) minus the best single fine-tuned CNN (B), same test cases."""
    has_predictions = rows["predictions"].notna()
    fused = _best(rows[(rows["features"] == "fused") & (rows["classifier"] != "cnn") & has_predictions])
    cnn = _best(rows[(rows["classifier"] == "cnn") & has_predictions])
    if fused is None or cnn is None:
        return {"skipped": "needs a fused classifier and a fine-tuned CNN with predictions.csv"}
    table_a, proba_a = read_predictions(fused["predictions"])
    table_b, proba_b = read_predictions(cnn["predictions"])
    if set(table_a["image_id"]) != set(table_b["image_id"]) or len(table_a) != len(table_b):
        return {"skipped": f"{fused['predictions']} and {cnn['predictions']} hold different test images"}
    order = pd.Series(np.arange(len(table_b)), index=table_b["image_id"])[table_a["image_id"]].to_numpy()
    if not np.array_equal(table_a["label"].to_numpy(), table_b["label"].to_numpy()[order]):
        raise ValueError(f"{fused['predictions']} and {cnn['predictions']} disagree on test labels")
    groups = table_a["study_id"].to_numpy(str) if "study_id" in table_a else None
    result = paired_bootstrap(table_a["label"].to_numpy(np.int64), proba_a, proba_b[order], groups, n_bootstrap, seed)
    name = lambda r: f"{r['init']}/{r['features']}/{r['classifier']}"  # noqa: E731
    return {"a": name(fused), "b": name(cnn), "n": len(table_a), **result}


def summarize_results(
    metrics_paths: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_json: str | os.PathLike,
    out_md: str | os.PathLike,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> pd.DataFrame:
    """Write summary.csv (metrics with _lo/_hi intervals), a nested metrics.json (DVC metrics) and summary.md."""
    table = pd.DataFrame([_row(Path(p), n_bootstrap, seed) for p in metrics_paths])
    table = table.sort_values(KEYS, key=lambda col: col.map(_order)).reset_index(drop=True)
    table["best"] = table.groupby("target")["cohen_kappa"].transform("max") == table["cohen_kappa"]
    comparisons = {
        str(target): compare_best(rows, n_bootstrap, seed) for target, rows in table.groupby("target", sort=False)
    }
    with atomic_path(out_csv) as tmp:
        table.drop(columns="predictions").round(4).to_csv(tmp, index=False)
    nested: dict[str, Any] = {}
    point_columns = [c for c in table.columns if c.removeprefix("study_") in METRICS]
    for record in table.to_dict("records"):
        node = nested
        for key in KEYS:
            node = node.setdefault(record[key], {})
        node.update({c: record[c] for c in point_columns if not _missing(record[c])})
    for target, comparison in comparisons.items():
        nested[target]["paired_comparison"] = comparison
    write_json(out_json, nested)
    write_text(out_md, to_markdown(table, comparisons))
    return table


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if _missing(value):
        return "n/a"
    low, high = record.get(f"{column}_lo"), record.get(f"{column}_hi")
    if _missing(low) or _missing(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def _table(rows: pd.DataFrame, prefix: str) -> list[str]:
    header = ["init", "features", "classifier", *METRICS, "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in rows.to_dict("records"):
        cells = [record["init"], record["features"], record["classifier"]]
        cells += [_cell(record, f"{prefix}{m}") for m in METRICS]
        n = record["n_test"] if not prefix else record.get(f"{prefix}n")
        cells.append("n/a" if _missing(n) else str(int(n)))
        if record["best"]:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _comparison_text(comparison: dict[str, Any]) -> list[str]:
    if "skipped" in comparison:
        return [f"Paired comparison skipped: {comparison['skipped']}."]
    boot = comparison["bootstrap"]
    lines = [
        f"Paired comparison on the same {comparison['n']} test images: best fused classifier **{comparison['a']}**"
        f" minus best single fine-tuned CNN **{comparison['b']}** (each picked without the test split: the"
        f" CNN by validation AUC, the classifier by cross-validated AUC on train+val;"
        f" paired bootstrap, {boot['resamples']} resamples by {boot['unit']}, seed {boot['seed']}).",
        "",
        "| metric | fused | CNN | difference [95 % CI] | p |",
        "|---|---|---|---|---|",
    ]
    for m, d in comparison["metrics"].items():
        low, high = d["ci"]
        ci = "n/a" if low is None else f"{d['difference']:+.3f} [{low:+.2f}, {high:+.2f}]"
        p = "n/a" if d["p_value"] is None else f"{d['p_value']:.3f}"
        lines.append(f"| {m} | {d['a']:.3f} | {d['b']:.3f} | {ci} | {p} |")
    kappa = comparison["metrics"]["cohen_kappa"]
    if kappa["ci"][0] is not None:
        low, high = kappa["ci"]
        verdict = "better than" if low > 0 else "worse than" if high < 0 else "not distinguishable from"
        lines += ["", f"By Cohen's kappa the fusion is **{verdict}** the single CNN at the 95 % level."]
    return lines


def to_markdown(table: pd.DataFrame, comparisons: dict[str, dict[str, Any]] | None = None) -> str:
    """One section per target: image-level table, study-level table (if any), paired comparison, means by init."""
    comparisons = comparisons or {}
    lines = [
        "# medxfer results",
        "",
        "Test-split metrics with bootstrap 95 % intervals in brackets. Multi-class: macro F1, sensitivity and"
        " specificity, one-vs-rest macro ROC AUC. Decisions are argmax of the probabilities (0.5 for binary).",
        "",
    ]
    for target, rows in table.groupby("target", sort=False):
        lines += [f"## {target}", "", "Best row (highest Cohen's kappa) marked with **.", "", "Image level:", ""]
        lines += _table(rows, "")
        if "study_accuracy" in rows and rows["study_accuracy"].notna().any():
            lines += ["", "Study level (mean of the image probabilities per study):", ""]
            lines += _table(rows[rows["study_accuracy"].notna()], "study_")
        if str(target) in comparisons:
            lines += ["", *_comparison_text(comparisons[str(target)])]
        by_init = rows.groupby("init", sort=False)[["accuracy", "cohen_kappa", "roc_auc"]].mean()
        lines += ["", f"Mean over all rows by init ({target}):", ""]
        lines += ["| init | accuracy | cohen_kappa | roc_auc |", "|---|---|---|---|"]
        lines += [
            f"| {init} | {r.accuracy:.3f} | {r.cohen_kappa:.3f} | {r.roc_auc:.3f} |" for init, r in by_init.iterrows()
        ]
        lines.append("")
    return "\n".join(lines)


def _figure(size: tuple[float, float] = (3.2, 3.0)) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=100)


def _save(fig: Any, path: str | os.PathLike) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_roc(roc: pd.DataFrame, auc: float, path: str | os.PathLike, title: str) -> None:
    """A small ROC plot from roc_points() output, one line per (one-vs-rest) class."""
    fig, ax = _figure()
    for name, curve in roc.groupby("class", sort=False):
        ax.plot(curve["fpr"], curve["tpr"], label=str(name))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"{title}\nAUC {auc:.3f}" if not _missing(auc) else title, fontsize=7)
    if len(roc):
        ax.legend(fontsize=6, loc="lower right")
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str) -> None:
    """Confusion matrix counts (rows true, columns predicted)."""
    fig, ax = _figure()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(int(count)), ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(len(classes)), classes, fontsize=7, rotation=30)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=7)
    _save(fig, path)
