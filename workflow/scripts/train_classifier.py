"""Snakemake adapter: select (by CV on train+val), fit and evaluate one classic classifier on each feature matrix."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.classify import train_classifier
from medxfer.io import read_json
from medxfer.log import get_logger, logged

log = get_logger("medxfer.classify", sm.log[0])
# the ensemble's members, each metrics.json naming the feature file it was fitted on
members = {Path(p): read_json(p)["features"] for p in sm.input.get("members", [])}
with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    for i, features in enumerate(Path(p) for p in sm.input.features):
        metrics = train_classifier(
            features,
            sm.wildcards.clf,
            sm.params.hyperparameters,
            Path(sm.output.model[i]),
            Path(sm.output.predictions[i]),
            Path(sm.output.metrics[i]),
            seed=sm.params.seed,
            threads=sm.threads,
            roc_path=Path(sm.output.roc[i]),
            roc_plot=Path(sm.output.roc_plot[i]),
            confusion_plot=Path(sm.output.confusion_plot[i]),
            member_metrics=[m for m, fitted_on in members.items() if fitted_on == str(features)],
            decision=sm.params.decision,
            pca_components=sm.params.pca_components,
            oof_path=Path(sm.output.oof[i]),
        )
        summary = {k: metrics[k] for k in ("accuracy", "cohen_kappa", "roc_auc")} | {
            "best_params": metrics["best_params"]
        }
        log.info("%s on %s: test metrics %s", sm.wildcards.clf, metrics["identity"]["features"], summary)
