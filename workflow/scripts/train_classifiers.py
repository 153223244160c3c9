"""Snakemake adapter: select (by CV on train+val), fit and evaluate every classic classifier on each feature matrix of
one run. Outputs are listed classifier by classifier (the ensemble last), feature set by feature set."""

from pathlib import Path

from medxfer.classify import train_classifier
from medxfer.log import get_logger, logged

sm = snakemake  # noqa: F821 - injected by Snakemake

log = get_logger("medxfer.classify", sm.log[0])
feature_sets = list(sm.params.feature_sets)
classifiers = list(sm.params.classifiers)
slot = {(c, f): i * len(feature_sets) + j for i, c in enumerate(classifiers) for j, f in enumerate(feature_sets)}
with logged(sm.log[0], sm.rule, dict(sm.wildcards.items()), sm.threads):
    for clf, hyperparameters in sm.params.classifiers.items():
        for features_set, features in zip(feature_sets, sm.input.features, strict=True):
            k = slot[clf, features_set]
            members = [sm.output.metrics[slot[m, features_set]] for m in sm.params.ensemble_members]
            metrics = train_classifier(
                Path(features),
                clf,
                hyperparameters,
                Path(sm.output.model[k]),
                Path(sm.output.predictions[k]),
                Path(sm.output.metrics[k]),
                seed=sm.params.seed,
                threads=sm.threads,
                roc_path=Path(sm.output.roc[k]),
                roc_plot=Path(sm.output.roc_plot[k]),
                confusion_plot=Path(sm.output.confusion_plot[k]),
                member_metrics=[Path(m) for m in members] if clf == "ensemble" else [],
                decision=sm.params.decision,
                pca_components=sm.params.pca_components,
                oof_path=Path(sm.output.oof[k]),
            )
            summary = {key: metrics[key] for key in ("accuracy", "cohen_kappa", "roc_auc")} | {
                "best_params": metrics["best_params"]
            }
            log.info("%s on %s: test metrics %s", clf, metrics["identity"]["features"], summary)
