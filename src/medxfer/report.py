"""Collect every metrics.json into one comparison: per target, init x features x classifier."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medxfer.io import atomic_path, read_json, write_json, write_text

METRICS = ["accuracy", "balanced_accuracy", "f1", "cohen_kappa", "roc_auc"]
KEYS = ["target", "init", "features", "classifier"]


def _row(path: Path) -> dict:
    """Read one metrics file; its place in results/ says what it measures.

    finetune/{target}/{init}/{arch}/metrics.json            -> the CNN's own softmax head
    classify/{target}/{init}/{features}/{clf}/metrics.json  -> a classifier on single-model or fused features
    """
    parts = Path(path).parts
    metrics = read_json(path)
    if "finetune" in parts[-5:]:
        target, init, arch = parts[-4:-1]
        keys = {"target": target, "init": init, "features": arch, "classifier": "cnn"}
    elif "classify" in parts[-6:]:
        target, init, features, clf = parts[-5:-1]
        keys = {"target": target, "init": init, "features": features, "classifier": clf}
    else:
        raise ValueError(f"{path}: not a finetune/ or classify/ metrics file")
    return keys | {m: metrics.get(m) for m in METRICS} | {"n_test": metrics.get("n")}


def summarize_results(metrics_paths: Sequence[Path], out_csv: Path, out_json: Path, out_md: Path) -> pd.DataFrame:
    """Write summary.csv, a nested metrics.json (DVC metrics) and a markdown table with the best row marked."""
    table = pd.DataFrame([_row(Path(p)) for p in metrics_paths])
    table = table.sort_values(KEYS, key=lambda col: col.map(_order)).reset_index(drop=True)
    best = table.groupby("target")["cohen_kappa"].transform("max") == table["cohen_kappa"]
    table["best"] = best
    with_csv = table.round(4)
    with atomic_path(out_csv) as tmp:
        with_csv.to_csv(tmp, index=False)
    nested: dict = {}
    for record in table.to_dict("records"):
        node = nested
        for key in KEYS:
            node = node.setdefault(record[key], {})
        node.update({m: record[m] for m in METRICS})
    write_json(out_json, nested)
    write_text(out_md, to_markdown(table))
    return table


def _order(value: object) -> object:
    """Sort scratch before imagenet before indomain, single models before the fusion, the CNN head first."""
    rank = {"scratch": "0", "imagenet": "1", "indomain": "2", "fused": "~", "cnn": "0"}
    return rank.get(value, f"1{value}") if isinstance(value, str) else value


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["# medxfer results", ""]
    for target, rows in table.groupby("target", sort=False):
        lines += [f"## {target}", "", "Best row (highest Cohen's kappa) marked with **.", ""]
        header = ["init", "features", "classifier", *METRICS, "n_test"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for record in rows.to_dict("records"):
            cells = [record["init"], record["features"], record["classifier"]]
            cells += [f"{record[m]:.3f}" if pd.notna(record[m]) else "n/a" for m in METRICS]
            cells.append(str(record["n_test"]))
            if record["best"]:
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        by_init = rows.groupby("init", sort=False)[["accuracy", "cohen_kappa", "roc_auc"]].mean()
        lines += ["", f"Mean over all rows by init ({target}):", ""]
        lines += ["| init | accuracy | cohen_kappa | roc_auc |", "|---|---|---|---|"]
        lines += [
            f"| {init} | {r.accuracy:.3f} | {r.cohen_kappa:.3f} | {r.roc_auc:.3f} |" for init, r in by_init.iterrows()
        ]
        lines.append("")
    return "\n".join(lines)
