"""Snakemake adapter: select (by CV on train+val), fit and evaluate one classic classifier on each feature matrix."""

import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.path.insert(0, str(Path(sm.scriptdir).resolve().parents[1] / "src"))  # this checkout's medxfer, in every job env

from medxfer.classify import train_classifier
from medxfer.log import get_logger, logged

log = get_logger("medxfer.classify", sm.log[0])
members = [Path(p) for p in sm.input.get("members", [])]  # classify/<t>/<i>/<features>/<member>/metrics.json
with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    for i, features in enumerate(Path(p) for p in sm.input.features):
        model = Path(sm.output.model[i])
        feature_set = model.parent.parent.name
        metrics = train_classifier(
            features,
            sm.wildcards.clf,
            sm.params.hyperparameters,
            model,
            Path(sm.output.predictions[i]),
            Path(sm.output.metrics[i]),
            seed=sm.params.seed,
            threads=sm.threads,
            roc_path=Path(sm.output.roc[i]),
            roc_plot=Path(sm.output.roc_plot[i]),
            confusion_plot=Path(sm.output.confusion_plot[i]),
            member_metrics=[m for m in members if m.parent.parent.name == feature_set],
            decision=sm.params.decision,
            pca_components=sm.params.pca_components,
            oof_path=Path(sm.output.oof[i]),
        )
        summary = {k: metrics[k] for k in ("accuracy", "cohen_kappa", "roc_auc")} | {
            "best_params": metrics["best_params"]
        }
        log.info("%s on %s: test metrics %s", sm.wildcards.clf, feature_set, summary)
