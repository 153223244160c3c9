"""The results as people read them: summary.md, the HTML page of the Snakemake report, headline picks, benchmark.md.

Only formatting lives here; which rows exist, which model is best and what the comparisons say come from
medxfer.results, medxfer.selection and medxfer.comparison.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from medxfer.comparison import BENCHMARK_METRICS
from medxfer.metrics import METRICS, ORDINAL_METRICS
from medxfer.results import is_missing
from medxfer.selection import best_row

ORDINAL_NAMES = {"quadratic_kappa": "QWK", "mean_absolute_error": "MAE"}
SHARE_SHIFT_POINTS = 5.0  # val/test class shares further apart than this get a warning beside the table


def _cell(record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if is_missing(value):
        return "n/a"
    low, high = record.get(f"{column}_lo"), record.get(f"{column}_hi")
    if is_missing(low) or is_missing(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def shown_metrics(rows: pd.DataFrame, base: tuple[str, ...] = METRICS) -> tuple[str, ...]:
    """`base`, and the graded metrics where these rows have them (a target whose data set is ordinal)."""
    graded = any(m in rows and rows[m].notna().any() for m in ORDINAL_METRICS)
    return base + ORDINAL_METRICS if graded else base


def _table(rows: pd.DataFrame, prefix: str) -> list[str]:
    shown = shown_metrics(rows)
    header = ["init", "features", "classifier", *shown, "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in rows.to_dict("records"):
        cells = [record["init"], record["features"], record["classifier"]]
        cells += [_cell(record, f"{prefix}{m}") for m in shown]
        n = record["n_test"] if not prefix else record.get(f"{prefix}n")
        cells.append("n/a" if is_missing(n) else str(int(n)))
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
        lines += _calibration_table(rows)
        lines.append("")
    return "\n".join(lines)


def _calibration_table(rows: pd.DataFrame) -> list[str]:
    """Test ECE and Brier score before and after calibration: the CNNs' temperature scaling (T fitted on val) and the
    fused classifiers' recalibration (none, Platt or isotonic, chosen on out-of-fold predictions)."""
    if "temperature" not in rows:
        return []
    lines = []
    cnn = rows[rows["temperature"].notna()]
    if not cnn.empty:
        lines += ["", "Calibration of the CNNs on test (temperature T fitted on val; ECE over 15 confidence bins):", ""]
        lines += ["| init | model | T | ECE | ECE scaled | Brier | Brier scaled |", "|---|---|---|---|---|---|---|"]
        lines += [
            f"| {r.init} | {r.features} | {r.temperature:.2f} | {r.ece:.3f} | {r.ece_scaled:.3f} | {r.brier:.3f}"
            f" | {r.brier_scaled:.3f} |"
            for r in cnn.itertuples()
        ]
    fused = rows[(rows["features"] == "fused") & rows["recalibration"].notna()]
    if not fused.empty:
        lines += ["", "Classifiers on fused features on test, recalibrated as chosen on out-of-fold predictions:", ""]
        lines += ["| init | classifier | method | ECE | ECE after | Brier | Brier after |", "|---" * 7 + "|"]
        lines += [
            f"| {r.init} | {r.classifier} | {r.recalibration} | {r.ece:.3f} | {r.ece_scaled:.3f} | {r.brier:.3f}"
            f" | {r.brier_scaled:.3f} |"
            for r in fused.itertuples()
        ]
    return lines


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Per target and init: the best single fine-tuned CNN (by val AUC) and the best fused classifier (by val AUC),
    with their test metrics and intervals; the same picks as the paired comparison, never by a test number."""
    rows = []
    for (target, init), group in table.groupby(["target", "init"], sort=False):
        cnn = best_row(group[group["classifier"] == "cnn"])
        fused = best_row(group[(group["features"] == "fused") & (group["classifier"] != "cnn")])
        for row, name, score in (
            (cnn, "{features} CNN", "val AUC"),
            (fused, "{classifier} on fused features", "out-of-fold val AUC"),
        ):
            if row is None:
                continue
            record = row.to_dict()
            picked = "n/a" if is_missing(record["selection_auc"]) else f"{record['selection_auc']:.3f}"
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
        shown = shown_metrics(rows)
        header = ["init", "features", "classifier", *shown, "n"]
        parts.append(f"<h2>{html.escape(str(target))}</h2><table class='summary'><tr>")
        parts.append("".join(f"<th>{h}</th>" for h in header) + "</tr>")
        for record in rows.to_dict("records"):
            cells = [record["init"], record["features"], record["classifier"]]
            cells += [_cell(record, m) for m in shown] + [str(int(record["n_test"]))]
            css = " class='best'" if record["best"] else ""
            parts.append(f"<tr{css}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        if str(target) in comparisons:
            text = " ".join(line for line in _comparison_text(comparisons[str(target)]) if not line.startswith("|"))
            parts.append(f"<p>{html.escape(text).replace('**', '')}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _mean_cell(record: dict[str, Any], metric: str) -> str:
    sd = f" ± {record[f'{metric}_sd']:.3f}" if record["seeds"] > 1 else ""
    low, high = record.get(f"{metric}_lo"), record.get(f"{metric}_hi")
    interval = "" if is_missing(low) else f" [{low:.3f}, {high:.3f}]"
    return "n/a" if is_missing(record.get(metric)) else f"{record[metric]:.3f}{sd}{interval}"


def _count(value: Any) -> str:
    if is_missing(value):
        return "n/a"
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{int(value):,}"


def _difference_cell(comparison: dict[str, Any], metric: str) -> str:
    d = comparison["metrics"][metric]
    if d["ci"][0] is None:
        return f"{d['difference']:+.3f}"
    return f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] p={d['p_value']:.3f}"


def _overlap_text(check: dict[str, Any]) -> str:
    found = {name: part["count"] for name, part in check["overlap"].items()}
    per_source = ", ".join(f"{name} {count}" for name, count in found.items())
    where = "the in-domain pretraining sources"
    if "source_splits" in check:  # recorded since the check reads only what pretraining reads
        where = f"the {' and '.join(check['source_splits'])} splits of the in-domain pretraining sources"
    if "near_distance" not in check:  # recorded before the check compared perceptual hashes too
        return (
            f"Source overlap (content hash): {sum(found.values())} of {check['n_test']} test images are exact copies"
            f" of an image in {where} ({per_source})."
        )
    near = sum(part["near"] for part in check["overlap"].values())
    return (
        f"Source overlap (content hash and perceptual hash): {sum(found.values())} of {check['n_test']} test images"
        f" are copies, exact, resized or re-encoded, of an image in {where} ({per_source}); {near} more are within"
        f" {check['near_distance']} bits of one (source_overlap.json lists them for review)."
    )


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
    image. Long because the page is one document read top to bottom; each part's numbers come from helpers."""
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
        shown = shown_metrics(rows, BENCHMARK_METRICS)
        graded_names = [ORDINAL_NAMES[m] for m in shown if m in ORDINAL_NAMES]
        header = ["init", "features", "classifier", "seeds", *names, *graded_names, "parameters", "training time", "n"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for record in rows.to_dict("records"):
            cells = [record["init"], record["features"], record["classifier"], str(record["seeds"])]
            cells += [_mean_cell(record, m) for m in shown]
            seconds = record["train_seconds"]
            cells += [_count(record["parameters"]), "n/a" if is_missing(seconds) else f"{seconds:.0f} s"]
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
