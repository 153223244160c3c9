"""Snakemake adapter: fit one classic classifier on one feature matrix."""

from pathlib import Path

from medxfer.classify import train_classifier
from medxfer.log import get_logger, logged

sm = snakemake  # noqa: F821 - injected by Snakemake
with logged(sm.log[0]):
    metrics = train_classifier(
        Path(sm.input.features),
        sm.wildcards.clf,
        sm.params.hyperparameters,
        Path(sm.output.model),
        Path(sm.output.predictions),
        Path(sm.output.metrics),
        seed=sm.params.seed,
        threads=sm.threads,
    )
    get_logger("medxfer.classify", sm.log[0]).info("%s test metrics: %s", sm.wildcards.clf, metrics)
