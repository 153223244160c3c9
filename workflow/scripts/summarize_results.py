"""Snakemake adapter: one summary table over every metrics.json."""

from pathlib import Path

from medxfer.log import logged
from medxfer.report import summarize_results

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged(sm.log[0]):
    summarize_results(
        [Path(p) for p in [*sm.input.finetune, *sm.input.classify]],
        Path(sm.output.summary),
        Path(sm.output.metrics),
        Path(sm.output.table),
    )
