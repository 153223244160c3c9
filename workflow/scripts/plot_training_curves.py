"""Snakemake adapter: training curves of every fine-tuned model of one target."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.log import logged
from medxfer.plots import plot_training_curves

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    plot_training_curves([Path(p) for p in sm.input.logs], Path(sm.output[0]), f"fine-tuning on {sm.wildcards.target}")
