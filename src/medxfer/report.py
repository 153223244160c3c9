"""Collect every metrics.json into one comparison (per target: init x features x classifier) and write it out.

The entry points the workflow calls: they gather the rows (medxfer.results), compare models on the same test cases
(medxfer.comparison), render the tables (medxfer.render) and draw the figures (medxfer.plots).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medxfer.comparison import benchmark_table, compare_best, init_comparisons, split_composition
from medxfer.io import atomic_path, read_json, write_json, write_text
from medxfer.localisation import COMPARED, SCORES, versus_baselines
from medxfer.metrics import METRICS, N_BOOTSTRAP, ORDINAL_METRICS
from medxfer.plots import plot_faithfulness
from medxfer.render import benchmark_markdown, headline, to_html, to_markdown
from medxfer.results import KEYS, check_faithfulness_table, is_missing, results_row, table_order


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
    overlap_paths: Mapping[str, str | os.PathLike] | None = None,
    manifest_paths: Mapping[str, str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """Write summary.csv (metrics with _lo/_hi intervals), a nested metrics.json (DVC metrics) and summary.md;
    optionally the headline picks (headline.csv), the whole table as HTML for the Snakemake report, and the
    benchmark over seed replicates (benchmark.md/.csv, with the published anchors of `report` and the split
    composition of each target's manifest). `overlap_paths` and `manifest_paths`: target name -> its
    source_overlap.json and manifest.csv."""
    table = pd.DataFrame([results_row(Path(p), n_bootstrap, seed) for p in metrics_paths])
    table = table.sort_values(KEYS, key=lambda col: col.map(table_order)).reset_index(drop=True)
    table["best"] = table.groupby("target")["cohen_kappa"].transform("max") == table["cohen_kappa"]
    comparisons = {
        str(target): compare_best(rows, n_bootstrap, seed) for target, rows in table.groupby("target", sort=False)
    }
    with atomic_path(out_csv) as tmp:
        # wall times differ from run to run: they go to benchmark.csv, never into the bit-for-bit summary
        table.drop(columns=["predictions", "train_seconds"]).round(4).to_csv(tmp, index=False)
    nested: dict[str, Any] = {}
    point_columns = [c for c in table.columns if c.removeprefix("study_") in METRICS + ORDINAL_METRICS]
    for record in table.to_dict("records"):
        node = nested
        for key in KEYS:
            node = node.setdefault(record[key], {})
        node.update({c: record[c] for c in point_columns if not is_missing(record[c])})
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
            overlaps = {target: read_json(p) for target, p in (overlap_paths or {}).items()}
            compositions = {target: split_composition(p) for target, p in (manifest_paths or {}).items()}
            markdown = benchmark_markdown(bench, comparisons, pairs, report, overlaps, compositions)
            write_text(out_benchmark_md, markdown)
    return table


def summarize_faithfulness(
    faithfulness_files: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_means: str | os.PathLike,
    out_plot: str | os.PathLike,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> pd.DataFrame:
    """Per model and method: the mean of every score (localisation, deletion/insertion AUC, seconds per image) and,
    for tolerant pointing, energy in the box and deletion AUC, the paired bootstrap interval of the method minus each
    baseline with whether it beats both. Per target and method, over all its models: the means, a bar chart and the
    same comparisons, with a row `chosen_on_val` for each model's method chosen on val (the verdict a target gets) and
    a row `trusted_on_val` for the models among them whose chosen map beat the random map on val."""
    frames = []
    for path in map(Path, faithfulness_files):
        table = pd.read_csv(path)
        check_faithfulness_table(table, path)
        frames.append(table)
    images = pd.concat(frames, ignore_index=True)
    scores = {m: (m, "mean") for m in SCORES if m in images}
    keys = ["target", "init", "arch"]
    # per model and method, from selection.json
    checks = {c: (c, "first") for c in ("chosen", "sanity", "beats_random_on_val") if c in images}
    per_model, means = [], []
    for subset, part in _faithfulness_subsets(images):
        table = (
            part.groupby([*keys, "method"], sort=False)
            .agg(n_images=("image_id", "size"), n_masked=("has_mask", "sum"), **checks, **scores)
            .reset_index()
        )
        pooled = _with_chosen(part)
        mean = (
            pooled.groupby(["target", "method"], sort=False)
            .agg(n_images=("image_id", "size"), n_masked=("has_mask", "sum"), **scores)
            .reset_index()
        )
        if set(COMPARED) & set(part.columns):
            table = table.merge(versus_baselines(part, keys, n_bootstrap, seed), on=[*keys, "method"])
            # paired by image: a test image scored by several models counts once, with its mean over them
            mean = mean.merge(versus_baselines(pooled, ["target"], n_bootstrap, seed), on=["target", "method"])
        for frame, collected in ((table, per_model), (mean, means)):
            frame.insert(frame.columns.get_loc("method") + 1, "subset", subset)
            collected.append(frame)
    per_model, means = (pd.concat(collected, ignore_index=True) for collected in (per_model, means))
    with atomic_path(out_csv) as tmp:
        per_model.round(4).to_csv(tmp, index=False)
    with atomic_path(out_means) as tmp:
        means.round(3).to_csv(tmp, index=False)
    plot_faithfulness(means[means["subset"] == "all"], out_plot)
    return means


CHOSEN = "chosen_on_val"  # the faithfulness summary's row for the method each model chose on val images
# the same, for only the models whose chosen map beat the smooth random map on val: the galleries shown without warning
TRUSTED = "trusted_on_val"


def _with_chosen(images: pd.DataFrame) -> pd.DataFrame:
    """The per-image rows plus copies of each model's chosen-method rows: as method CHOSEN for every model (models
    may choose different methods), and as TRUSTED for the models whose chosen map beat the random map on val. Tables
    from before the choice are returned as they are."""

    def flag(column: str) -> pd.Series:  # a selection.json check per row; False where the table predates it
        return images[column].eq(True) if column in images else pd.Series(False, index=images.index)

    chosen = flag("chosen")
    trusted = chosen & flag("beats_random_on_val")
    copies = [images[rows].assign(method=name) for name, rows in ((CHOSEN, chosen), (TRUSTED, trusted)) if rows.any()]
    return pd.concat([images, *copies], ignore_index=True) if copies else images


def _faithfulness_subsets(images: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Every scored image ("all"), then the masked findings the model detects ("detected": its decision is the true
    class): a clinician reads the heatmaps of the positives the model calls, so localisation is reported on both."""
    subsets = [("all", images)]
    if "predicted" in images:
        detected = images[images["has_mask"] & (images["predicted"] == images["label"])]
        if len(detected):
            subsets.append(("detected", detected))
    return subsets
