"""Snakemake adapter: select (by CV on train+val), fit and evaluate every classic classifier on each feature matrix of
one run. Outputs are listed classifier by classifier (the ensemble last), feature set by feature set."""

from medxfer.classify import train_run_classifiers
from medxfer.log import get_logger, logged

sm = snakemake  # noqa: F821 - injected by Snakemake

with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    train_run_classifiers(
        sm.input.features,
        dict(sm.output.items()),
        sm.params.classifiers,
        sm.params.feature_sets,
        sm.params.ensemble_members,
        log=get_logger("medxfer.classify", sm.log[0]),
        seed=sm.params.seed,
        threads=sm.threads,
        decision=sm.params.decision,
        pca_components=sm.params.pca_components,
    )
