"""Snakemake adapter: faithfulness of every model's heatmaps, per model and per method, with a bar chart."""

from pathlib import Path

from medxfer.log import logged
from medxfer.report import summarize_faithfulness

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    summarize_faithfulness(
        [Path(p) for p in sm.input.faithfulness],
        Path(sm.output.table),
        Path(sm.output.means),
        Path(sm.output.plot),
    )
