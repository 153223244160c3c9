"""Snakemake adapter: select (by CV on train+val), fit and evaluate one classic classifier on one feature matrix."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).parents[1] / "src"))  # this checkout's medxfer, in any job environment

from medxfer.classify import train_classifier
from medxfer.log import get_logger, logged

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
        roc_path=Path(sm.output.roc),
        roc_plot=Path(sm.output.roc_plot),
        confusion_plot=Path(sm.output.confusion_plot),
        member_metrics=[Path(p) for p in sm.input.get("members", [])],
    )
    summary = {k: metrics[k] for k in ("accuracy", "cohen_kappa", "roc_auc")} | {"best_params": metrics["best_params"]}
    get_logger("medxfer.classify", sm.log[0]).info("%s test metrics: %s", sm.wildcards.clf, summary)
