"""Snakemake adapter: training curves of every fine-tuned model of one target."""

from pathlib import Path

from medxfer.log import logged
from medxfer.plots import plot_training_curves

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    plot_training_curves([Path(p) for p in sm.input.logs], Path(sm.output[0]), f"fine-tuning on {sm.wildcards.target}")
