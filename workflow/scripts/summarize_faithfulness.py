"""Snakemake adapter: faithfulness of every model's heatmaps, per model and per method, with a bar chart."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.log import logged
from medxfer.report import summarize_faithfulness

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    summarize_faithfulness(
        [Path(p) for p in sm.input.faithfulness],
        Path(sm.output.table),
        Path(sm.output.means),
        Path(sm.output.plot),
    )
