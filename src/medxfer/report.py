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

from medxfer.config import SEED_SUFFIX  # `<init>-seed<k>` folders are seed replicates of `<init>`
from medxfer.io import atomic_path, read_json, write_json, write_text
from medxfer.metrics import (
    METRICS,
    N_BOOTSTRAP,
    evaluate_predictions,
    paired_bootstrap,
    read_predictions,
    replicate_bootstrap,
)

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
        computed = evaluate_predictions(predictions, n_bootstrap, seed, metrics.get("threshold"))
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
    row["threshold"] = metrics.get("threshold")
    row["replicate_of"] = row["init"].partition(SEED_SUFFIX)[0]
    row["num_parameters"] = metrics.get("num_parameters")
    row["train_seconds"] = _training_seconds(path.with_name("log.csv")) if row["classifier"] == "cnn" else None
    return row


def _training_seconds(log_csv: Path) -> float | None:
    """A fine-tuning run's wall time from its per-epoch log (timings stay out of metrics.json, which must be the
    same bit for bit on every run)."""
    return float(pd.read_csv(log_csv)["seconds"].sum()) if log_csv.is_file() else None


def _selection_auc(metrics: dict[str, Any]) -> float:
    """AUC on the val split, never test: a CNN's own predictions, a classifier's out-of-fold ones (CV on train+val).

    Every classifier has one, with or without a hyperparameter grid, so all of them compete on the same cases.
    """
    score = metrics.get("val", {}).get("roc_auc")
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


REPLICATE = ["replicate_of", "features", "classifier"]


def _best_group(rows: pd.DataFrame) -> pd.DataFrame | None:
    """All seeds of the init/features/classifier with the highest mean selection AUC (never a test number)."""
    if rows.empty:
        return None
    scores = rows.groupby(REPLICATE, sort=False)["selection_auc"].mean().fillna(-np.inf)
    best = scores.idxmax()  # the first of equals in table order
    return rows[(rows[REPLICATE] == pd.Series(best, index=REPLICATE)).all(axis=1)]


def _threshold(value: Any) -> float | None:
    return None if _missing(value) else float(value)


def _replicate_predictions(group: pd.DataFrame, ids: pd.Series | None = None) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The first replicate's predictions table and every replicate's probabilities in the order of `ids` (default:
    the first replicate's image order); every replicate must hold the same test images with the same labels."""
    tables = [read_predictions(p) for p in group["predictions"]]
    first = tables[0][0]
    ids = first["image_id"] if ids is None else ids
    probas = []
    for path, (table, proba) in zip(group["predictions"], tables, strict=True):
        if len(table) != len(ids) or set(table["image_id"]) != set(ids):
            raise ValueError(f"{path} holds other test images than {group['predictions'].iloc[0]}")
        order = pd.Series(np.arange(len(table)), index=table["image_id"])[ids].to_numpy()
        if not np.array_equal(table["label"].to_numpy()[order], first.set_index("image_id").loc[ids, "label"]):
            raise ValueError(f"{path} disagrees with {group['predictions'].iloc[0]} on test labels")
        probas.append(proba[order])
    return first.set_index("image_id").loc[ids].reset_index(), probas


def _group_name(group: pd.DataFrame) -> str:
    record = group.iloc[0]
    seeds = f" ({len(group)} seeds)" if len(group) > 1 else ""
    return f"{record['replicate_of']}/{record['features']}/{record['classifier']}{seeds}"


def paired_groups(a: pd.DataFrame, b: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of A minus B (each all seeds of one model, averaged over seeds) on the same test cases."""
    table, probas_a = _replicate_predictions(a)
    try:
        _, probas_b = _replicate_predictions(b, table["image_id"])
    except (KeyError, ValueError) as err:
        return {"skipped": f"{_group_name(a)} and {_group_name(b)} cannot be paired: {err}"}
    groups = table["study_id"].to_numpy(str) if "study_id" in table else None
    result = paired_bootstrap(
        table["label"].to_numpy(np.int64),
        probas_a,
        probas_b,
        groups,
        n_bootstrap,
        seed,
        threshold_a=[_threshold(t) for t in a["threshold"]],
        threshold_b=[_threshold(t) for t in b["threshold"]],
    )
    return {"a": _group_name(a), "b": _group_name(b), "n": len(table), **result}


def compare_best(rows: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap: the best fused classifier (A) minus the best single fine-tuned CNN (B), same test cases;
    with several seeds, each side is the mean over its seeds."""
    has_predictions = rows["predictions"].notna()
    fused = _best_group(rows[(rows["features"] == "fused") & (rows["classifier"] != "cnn") & has_predictions])
    cnn = _best_group(rows[(rows["classifier"] == "cnn") & has_predictions])
    if fused is None or cnn is None:
        return {"skipped": "needs a fused classifier and a fine-tuned CNN with predictions.csv"}
    return paired_groups(fused, cnn, n_bootstrap, seed)


BENCHMARK_METRICS = ("accuracy", "balanced_accuracy", "f1", "cohen_kappa", "roc_auc")


def _cnn_costs(table: pd.DataFrame) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(target, init run) -> arch -> (parameters, training seconds) of its fine-tuned CNNs."""
    costs: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for record in table[table["classifier"] == "cnn"].to_dict("records"):
        costs.setdefault((record["target"], record["init"]), {})[record["features"]] = (
            record.get("num_parameters"),
            record.get("train_seconds"),
        )
    return costs


def _cost(record: dict[str, Any], costs: dict[tuple[str, str], dict[str, tuple[float, float]]]) -> tuple[Any, Any]:
    """Parameters and fine-tuning time behind a row: its CNN, or for a classifier the CNN(s) its features come from
    (all of them for the fusion)."""
    cnns = costs.get((record["target"], record["init"]), {})
    used = list(cnns.values()) if record["features"] == "fused" else [cnns.get(record["features"], (None, None))]
    if any(_missing(p) or _missing(t) for p, t in used) or not used:
        return None, None
    return int(sum(p for p, _ in used)), float(sum(t for _, t in used))


def benchmark_table(table: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """One row per target x init x features x classifier over its seed replicates: the mean, standard deviation
    and range over seeds of each metric, a bootstrap 95 % interval of the mean, parameters and training time."""
    costs = _cnn_costs(table)
    rows = []
    for keys, group in table[table["predictions"].notna()].groupby(["target", *REPLICATE], sort=False):
        first, probas = _replicate_predictions(group)
        groups = first["study_id"].to_numpy(str) if "study_id" in first else None
        thresholds = [_threshold(t) for t in group["threshold"]]
        stats = replicate_bootstrap(first["label"].to_numpy(np.int64), probas, thresholds, groups, n_bootstrap, seed)
        spent = [_cost(r, costs) for r in group.to_dict("records")]
        seconds = [t for _, t in spent if t is not None]
        rows.append(
            dict(zip(["target", "init", "features", "classifier"], keys, strict=True))
            | {"seeds": len(group), "n_test": stats["n"], "selection_auc": float(group["selection_auc"].mean())}
            | {k: v for k, v in stats.items() if k.startswith(BENCHMARK_METRICS)}
            | {"parameters": spent[0][0], "train_seconds": float(np.mean(seconds)) if seconds else None}
        )
    return pd.DataFrame(rows)


def _mean_cell(record: dict[str, Any], metric: str) -> str:
    sd = f" ± {record[f'{metric}_sd']:.3f}" if record["seeds"] > 1 else ""
    low, high = record.get(f"{metric}_lo"), record.get(f"{metric}_hi")
    interval = "" if _missing(low) else f" [{low:.3f}, {high:.3f}]"
    return "n/a" if _missing(record.get(metric)) else f"{record[metric]:.3f}{sd}{interval}"


def _count(value: Any) -> str:
    if _missing(value):
        return "n/a"
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{int(value):,}"


def init_comparisons(rows: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> list[dict[str, Any]]:
    """Per architecture, the fine-tuned CNNs of each pair of inits (in-domain vs scratch, in-domain vs ImageNet,
    ImageNet vs scratch) on equal budget: paired bootstrap of their seed means."""
    cnn = rows[(rows["classifier"] == "cnn") & rows["predictions"].notna()]
    pairs = [("indomain", "scratch"), ("indomain", "imagenet"), ("imagenet", "scratch")]
    results = []
    for arch, by_arch in cnn.groupby("features", sort=False):
        inits = {init: group for init, group in by_arch.groupby("replicate_of", sort=False)}
        for a, b in pairs:
            if a in inits and b in inits:
                results.append({"arch": arch, **paired_groups(inits[a], inits[b], n_bootstrap, seed)})
    return results


def _difference_cell(comparison: dict[str, Any], metric: str) -> str:
    d = comparison["metrics"][metric]
    if d["ci"][0] is None:
        return f"{d['difference']:+.3f}"
    return f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] p={d['p_value']:.3f}"


def _overlap_text(check: dict[str, Any]) -> str:
    found = {name: part["count"] for name, part in check["overlap"].items()}
    per_source = ", ".join(f"{name} {count}" for name, count in found.items())
    return (
        f"Source overlap (content hash): {sum(found.values())} of {check['n_test']} test images are exact copies of an"
        f" image in the in-domain pretraining sources ({per_source})."
    )


SPLITS = ("train", "val", "test")
SHARE_SHIFT_POINTS = 5.0  # val/test class shares further apart than this get a warning beside the table


def split_composition(manifest: str | os.PathLike) -> dict[str, Any]:
    """Images and class shares per split of a target's manifest: where val's shares differ from test's, a cut-off
    chosen on val is tuned to another prevalence, which explains an ACC that lags its AUC."""
    table = pd.read_csv(manifest, usecols=["split", "label", "label_name"])
    classes = table.sort_values("label")["label_name"].drop_duplicates().tolist()
    splits = {}
    for split in [s for s in SPLITS if s in set(table["split"])]:
        names = table.loc[table["split"] == split, "label_name"]
        shares = names.value_counts(normalize=True).reindex(classes, fill_value=0.0)
        splits[split] = {"n": int(names.size), "shares": {c: float(v) for c, v in shares.items()}}
    return {"classes": classes, "splits": splits}


def _composition_text(composition: dict[str, Any]) -> str:
    classes, splits = composition["classes"], composition["splits"]
    parts = []
    for i, (split, part) in enumerate(splits.items()):
        shares = ", ".join(f"{c + ' ' if i == 0 else ''}{100 * part['shares'][c]:.1f} %" for c in classes)
        parts.append(f"{split} {part['n']:,} ({shares})")
    text = "Splits (images; share of each class): " + "; ".join(parts) + "."
    if "val" in splits and "test" in splits:
        shift = max(100 * abs(splits["val"]["shares"][c] - splits["test"]["shares"][c]) for c in classes)
        if shift > SHARE_SHIFT_POINTS:
            text += (
                f" Val and test class shares differ by up to {shift:.1f} points: a cut-off chosen on val is tuned to"
                " val's prevalence, not test's."
            )
    return text


def benchmark_markdown(
    bench: pd.DataFrame,
    comparisons: dict[str, dict[str, Any]],
    init_pairs: dict[str, list[dict[str, Any]]],
    report: dict[str, Any] | None = None,
    overlaps: dict[str, dict[str, Any]] | None = None,
    compositions: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The benchmark report: per target every row over seeds with intervals, costs, the paired comparisons, the
    published anchors beside them, each split's class shares and the check that no test image was a pretraining
    image."""
    report, overlaps, compositions = report or {}, overlaps or {}, compositions or {}
    anchors, notes = report.get("anchors", {}), report.get("notes", {})
    names = ["ACC", "balanced ACC", "F1", "kappa", "AUC"]
    lines = [
        "# medxfer benchmark",
        "",
        "Test split. Each cell: mean ± standard deviation over the training seeds, then a bootstrap 95 % interval"
        " of that mean (1000 resamples of the test cases, every seed scored on each). Binary decisions use the"
        " threshold each model chose on validation data (never on test) when `decision.threshold` asks for one."
        " Parameters: the CNN's, or the sum of the CNNs whose features a classifier uses; training time: their"
        " fine-tuning wall time (log.csv; pretraining and the classifier's own fit not included).",
        "",
    ]
    for target, rows in bench.groupby("target", sort=False):
        lines += [f"## {target}", ""]
        if target in notes:
            lines += [notes[target], ""]
        if target in compositions:
            lines += [_composition_text(compositions[target]), ""]
        if target in overlaps:
            lines += [_overlap_text(overlaps[target]), ""]
        header = ["init", "features", "classifier", "seeds", *names, "parameters", "training time", "n"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for record in rows.to_dict("records"):
            cells = [record["init"], record["features"], record["classifier"], str(record["seeds"])]
            cells += [_mean_cell(record, m) for m in BENCHMARK_METRICS]
            seconds = record["train_seconds"]
            cells += [_count(record["parameters"]), "n/a" if _missing(seconds) else f"{seconds:.0f} s"]
            lines.append("| " + " | ".join(cells + [str(record["n_test"])]) + " |")
        if anchors.get(target):
            lines += ["", "Published results on this data set (not run here):", ""]
            lines += ["| model | " + " | ".join(names) + " | source |", "|" + "---|" * (len(names) + 2)]
            for anchor in anchors[target]:
                values = ["n/a" if m not in anchor else f"{anchor[m]:.3f}" for m in BENCHMARK_METRICS]
                lines.append(f"| {anchor['model']} | " + " | ".join(values) + f" | {anchor['source']} |")
        if str(target) in comparisons:
            lines += ["", *_comparison_text(comparisons[str(target)])]
        pairs = [c for c in init_pairs.get(str(target), []) if "skipped" not in c]
        if pairs:
            lines += [
                "",
                "Inits compared on equal budget (same architecture and fine-tuning settings; paired bootstrap of the"
                " seed means, A minus B):",
                "",
            ]
            lines += ["| arch | A | B | Δ kappa [95 % CI] | Δ AUC [95 % CI] |", "|---|---|---|---|---|"]
            for c in pairs:
                kappa, auc = _difference_cell(c, "cohen_kappa"), _difference_cell(c, "roc_auc")
                lines.append(f"| {c['arch']} | {c['a']} | {c['b']} | {kappa} | {auc} |")
        lines.append("")
    return "\n".join(lines)


def summarize_results(
    metrics_paths: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_json: str | os.PathLike,
    out_md: str | os.PathLike,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    out_headline: str | os.PathLike | None = None,
    out_html: str | os.PathLike | None = None,
    out_benchmark_md: str | os.PathLike | None = None,
    out_benchmark_csv: str | os.PathLike | None = None,
    report: dict[str, Any] | None = None,
    overlap_paths: Sequence[str | os.PathLike] = (),
    manifest_paths: Sequence[str | os.PathLike] = (),
) -> pd.DataFrame:
    """Write summary.csv (metrics with _lo/_hi intervals), a nested metrics.json (DVC metrics) and summary.md;
    optionally the headline picks (headline.csv), the whole table as HTML for the Snakemake report, and the
    benchmark over seed replicates (benchmark.md/.csv, with the published anchors of `report` and the split
    composition of each target's manifest, `datasets/<target>/manifest.csv`)."""
    table = pd.DataFrame([_row(Path(p), n_bootstrap, seed) for p in metrics_paths])
    table = table.sort_values(KEYS, key=lambda col: col.map(_order)).reset_index(drop=True)
    table["best"] = table.groupby("target")["cohen_kappa"].transform("max") == table["cohen_kappa"]
    comparisons = {
        str(target): compare_best(rows, n_bootstrap, seed) for target, rows in table.groupby("target", sort=False)
    }
    with atomic_path(out_csv) as tmp:
        # wall times differ from run to run: they go to benchmark.csv, never into the bit-for-bit summary
        table.drop(columns=["predictions", "train_seconds"]).round(4).to_csv(tmp, index=False)
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
    if out_headline is not None:
        with atomic_path(out_headline) as tmp:
            headline(table).to_csv(tmp, index=False)
    if out_html is not None:
        write_text(out_html, to_html(table, comparisons))
    if out_benchmark_md is not None or out_benchmark_csv is not None:
        bench = benchmark_table(table, n_bootstrap, seed)
        pairs = {str(t): init_comparisons(rows, n_bootstrap, seed) for t, rows in table.groupby("target", sort=False)}
        if out_benchmark_csv is not None:
            with atomic_path(out_benchmark_csv) as tmp:
                bench.round(4).to_csv(tmp, index=False)
        if out_benchmark_md is not None:
            overlaps = {Path(read_json(p)["target"]).parent.name: read_json(p) for p in overlap_paths}
            compositions = {Path(p).parent.name: split_composition(p) for p in manifest_paths}
            markdown = benchmark_markdown(bench, comparisons, pairs, report, overlaps, compositions)
            write_text(out_benchmark_md, markdown)
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
        f" CNN by validation AUC, the classifier by the AUC of its out-of-fold predictions on val;"
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


# --- what the HTML report (snakemake --report) shows -------------------------------------------------------------


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Per target and init: the best single fine-tuned CNN (by val AUC) and the best fused classifier (by val AUC),
    with their test metrics and intervals; the same picks as the paired comparison, never by a test number."""
    rows = []
    for (target, init), group in table.groupby(["target", "init"], sort=False):
        cnn = _best(group[group["classifier"] == "cnn"])
        fused = _best(group[(group["features"] == "fused") & (group["classifier"] != "cnn")])
        for row, name, score in (
            (cnn, "{features} CNN", "val AUC"),
            (fused, "{classifier} on fused features", "out-of-fold val AUC"),
        ):
            if row is None:
                continue
            record = row.to_dict()
            picked = "n/a" if _missing(record["selection_auc"]) else f"{record['selection_auc']:.3f}"
            rows.append(
                {"target": target, "init": init, "model": name.format(**record), "picked by": f"{score} {picked}"}
                | {m: _cell(record, m) for m in ("accuracy", "cohen_kappa", "roc_auc")}
                | {"n": int(record["n_test"])}
            )
    return pd.DataFrame(rows)


def to_html(table: pd.DataFrame, comparisons: dict[str, dict[str, Any]]) -> str:
    """A self-contained HTML page of the full summary: one table per target, best row bold, paired comparison."""
    import html

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>medxfer summary</title><style>"
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}"
        "tr.best{font-weight:bold;background:#eef}"
        "</style></head><body><h1>medxfer results</h1>",
        "<p>Test-split metrics with bootstrap 95 % intervals in brackets; the best row per target (highest Cohen's"
        " kappa) in bold.</p>",
    ]
    for target, rows in table.groupby("target", sort=False):
        header = ["init", "features", "classifier", *METRICS, "n"]
        parts.append(f"<h2>{html.escape(str(target))}</h2><table class='summary'><tr>")
        parts.append("".join(f"<th>{h}</th>" for h in header) + "</tr>")
        for record in rows.to_dict("records"):
            cells = [record["init"], record["features"], record["classifier"]]
            cells += [_cell(record, m) for m in METRICS] + [str(int(record["n_test"]))]
            css = " class='best'" if record["best"] else ""
            parts.append(f"<tr{css}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        if str(target) in comparisons:
            text = " ".join(line for line in _comparison_text(comparisons[str(target)]) if not line.startswith("|"))
            parts.append(f"<p>{html.escape(text).replace('**', '')}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _faithfulness_keys(path: Path) -> dict[str, str]:
    """faithfulness/{target}/{init}/{arch}.csv -> its target, init and arch."""
    return {"target": path.parts[-3], "init": path.parts[-2], "arch": path.stem}


FAITHFULNESS = ("pointing_hit", "iou", "deletion_auc", "insertion_auc")


def summarize_faithfulness(
    faithfulness_files: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_means: str | os.PathLike,
    out_plot: str | os.PathLike,
) -> pd.DataFrame:
    """Per model and method: pointing-game hit rate, mean IoU with the mask, deletion and insertion AUC; and the
    means per target and method (Grad-CAM vs Grad-CAM++ vs LIME vs the random map) with a bar chart."""
    frames = []
    for path in map(Path, faithfulness_files):
        frames.append(pd.read_csv(path).assign(**_faithfulness_keys(path)))
    images = pd.concat(frames, ignore_index=True)
    per_model = (
        images.groupby(["target", "init", "arch", "method"], sort=False)
        .agg(n_images=("image_id", "size"), n_masked=("has_mask", "sum"), **{m: (m, "mean") for m in FAITHFULNESS})
        .reset_index()
        .rename(columns={"pointing_hit": "pointing_game"})
    )
    means = (
        images.groupby(["target", "method"], sort=False)
        .agg(n_images=("image_id", "size"), n_masked=("has_mask", "sum"), **{m: (m, "mean") for m in FAITHFULNESS})
        .reset_index()
        .rename(columns={"pointing_hit": "pointing_game"})
    )
    with atomic_path(out_csv) as tmp:
        per_model.round(4).to_csv(tmp, index=False)
    with atomic_path(out_means) as tmp:
        means.round(3).to_csv(tmp, index=False)
    plot_faithfulness(means, out_plot)
    return means


def plot_faithfulness(means: pd.DataFrame, path: str | os.PathLike) -> None:
    """Bars per method (one colour per target) for each faithfulness measure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = ["pointing_game", "iou", "deletion_auc", "insertion_auc"]
    better = {"pointing_game": "higher", "iou": "higher", "deletion_auc": "lower", "insertion_auc": "higher"}
    methods = list(dict.fromkeys(means["method"]))
    targets = list(dict.fromkeys(means["target"]))
    fig, axes = plt.subplots(1, len(measures), figsize=(2.6 * len(measures), 2.8), dpi=100)
    width = 0.8 / max(1, len(targets))
    for ax, measure in zip(axes, measures, strict=True):
        for k, target in enumerate(targets):
            part = means[means["target"] == target].set_index("method").reindex(methods)
            ax.bar(np.arange(len(methods)) + k * width, part[measure].fillna(0), width, label=str(target))
        ax.set_xticks(np.arange(len(methods)) + width * (len(targets) - 1) / 2, methods, fontsize=7, rotation=20)
        ax.set_title(f"{measure} ({better[measure]} is better)", fontsize=7)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    _save(fig, path)


def plot_training_curves(log_paths: Sequence[str | os.PathLike], path: str | os.PathLike, title: str) -> None:
    """Train/val loss and val AUC per epoch, one line per fine-tuned model (finetune/{target}/{init}/{arch}/log.csv)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), dpi=100)
    for log_path in log_paths:
        log_path = Path(log_path)
        history = pd.read_csv(log_path)
        init, arch = log_path.parts[-3:-1]
        line = axes[0].plot(history["epoch"], history["train_loss"], label=f"{init}/{arch} train")[0]
        axes[0].plot(history["epoch"], history["val_loss"], linestyle="--", color=line.get_color(), label="val")
        axes[1].plot(history["epoch"], history["val_roc_auc"], marker="o", markersize=3, label=f"{init}/{arch}")
    axes[0].set(xlabel="epoch", ylabel="loss (dashed: val)")
    axes[1].set(xlabel="epoch", ylabel="val ROC AUC", ylim=(0, 1.02))
    axes[1].legend(fontsize=6)
    for ax in axes:
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
