"""Train and test one classic-ML classifier on a (fused) deep-feature file, as one workflow job does.

Honest evaluation: hyperparameters are chosen by cross-validation on train+val only (medxfer.model_selection);
the chosen model from the registry (medxfer.classifiers) is refitted on train+val and the test split is used
once, for predictions.csv and metrics.json.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.ensemble import StackingClassifier, VotingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from medxfer.calibration import N_BINS, calibration_scores, choose_recalibration, recalibrated
from medxfer.classifiers import STACKING, create_classifier, load_classifier, skops_io, stacking_meta_learner
from medxfer.config import COMBINERS
from medxfer.fusion import feature_identity, is_ordinal, load_feature_file
from medxfer.io import atomic_path, read_json, write_json
from medxfer.log import mark_work_start
from medxfer.metrics import N_BOOTSTRAP, evaluate, roc_points
from medxfer.model_selection import (
    CV_FOLDS,
    fit_data,
    out_of_fold_proba,
    select_hyperparameters,
    validation_metrics,
    validation_threshold,
)
from medxfer.prediction_files import read_predictions, write_predictions
from medxfer.sections import ClassifySection, DecisionSection

OOF = "oof.csv"


def classifier_proba(model: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities for every class in the file, with zeros for classes absent from the fitting data."""
    full = np.zeros((x.shape[0], n_classes), dtype=np.float64)
    if x.shape[0]:
        full[:, model.classes_] = model.predict_proba(x)
    return full


def _fitted_combiner(
    features_path: Path,
    member_metrics: Sequence[str | os.PathLike],
    rows: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    name: str,
    want_oof: bool,
    cv: tuple[int, int, int],
) -> tuple[dict[str, Any], Pipeline, np.ndarray | None]:
    """The members' saved, fitted models combined (`name`: ensemble, by soft voting, or stacking), and the
    out-of-fold probabilities the threshold is chosen on: the mean of the members' oof.csv, or the stack's own.

    Each member's metrics.json must come from the same feature file; its model.skops and oof.csv sit beside it.
    Voting over the fitted members gives what refitting them would (same params, seed and folds) at no cost.
    `rows`: the train+val ids, labels and groups; `cv`: seed, threads and folds of the members' own CV.
    """
    fit_ids, y_fit, groups = rows
    params: dict[str, dict[str, Any]] = {}
    estimators, oofs = [], []
    for path in map(Path, member_metrics):
        saved = read_json(path)
        if saved.get("features") != str(features_path) or "best_params" not in saved:
            raise ValueError(f"{path}: not a classifier result on {features_path} (features {saved.get('features')})")
        params[saved["classifier"]] = saved["best_params"]
        estimators.append((saved["classifier"], load_classifier(path.with_name("model.skops"))))
        if want_oof or name == STACKING:
            oof_path = path.with_name(OOF)
            if not oof_path.is_file():
                raise ValueError(f"{oof_path}: missing; the {name}'s fit or threshold needs each member's {OOF}")
            table, proba = read_predictions(oof_path)
            if not np.array_equal(table["image_id"].to_numpy(str), fit_ids.astype(str)):
                raise ValueError(f"{oof_path}: its image_id rows are not the train+val rows of {features_path}")
            oofs.append(proba)
    if len(estimators) < 2:
        raise ValueError(f"classifier '{name}' needs at least two members, got {sorted(params)}")
    if name == STACKING:
        model, oof = _stacked(estimators, oofs, y_fit, groups, cv)
        return {"members": params}, model, oof
    frozen = [(member, FrozenEstimator(model)) for member, model in estimators]
    model = Pipeline([("clf", VotingClassifier(frozen, voting="soft"))])
    return {"members": params}, model, np.mean(oofs, axis=0) if oofs else None


def _stacked(
    estimators: list[tuple[str, Pipeline]],
    oofs: list[np.ndarray],
    y_fit: np.ndarray,
    groups: np.ndarray | None,
    cv: tuple[int, int, int],
) -> tuple[Pipeline, np.ndarray | None]:
    """Stacking (Wolpert 1992): a logistic regression on the members' out-of-fold probabilities learns how far to
    trust each one, which the mean cannot. Every row it learns from was predicted by a member that never saw it; its
    own out-of-fold predictions (the members' folds) are what the threshold and the val pick see."""
    n_classes = oofs[0].shape[1]
    present = np.unique(y_fit)  # the members' models predict these classes only
    meta_x = _stack_inputs([p[:, present] for p in oofs])
    if np.isnan(meta_x).any():
        raise ValueError("stacking needs every member's out-of-fold predictions (a class has too few cases for folds)")
    seed, threads, folds = cv
    meta = stacking_meta_learner()
    oof, _ = out_of_fold_proba(Pipeline([("clf", meta)]), meta_x, y_fit, groups, n_classes, seed, threads, folds)
    meta.fit(meta_x, y_fit)
    # the members as fitted, the meta-learner as fitted on out-of-fold rows: fit() below changes neither
    stack = StackingClassifier(
        estimators, final_estimator=FrozenEstimator(meta), cv="prefit", stack_method="predict_proba"
    )
    return Pipeline([("clf", stack)]), oof


def _stack_inputs(probas: Sequence[np.ndarray]) -> np.ndarray:
    """The members' probabilities side by side, as sklearn's StackingClassifier passes them to its meta-learner:
    P(positive) alone for two classes (the other column is one minus it)."""
    return np.hstack([p[:, 1:] if p.shape[1] == 2 else p for p in probas])


def _pca_width(features_path: Path, shape: tuple[int, ...], pca_components: int | None, cv_folds: int) -> int | None:
    """The width to PCA-reduce `shape`d train+val features to, or None when they are narrow enough already.

    Checked up front: PCA cannot keep more components than a CV training fold has rows.
    """
    reduce_to = pca_components if pca_components is not None and shape[1] > pca_components else None
    fold_rows = shape[0] * (cv_folds - 1) // cv_folds
    if reduce_to is not None and reduce_to > fold_rows:
        raise ValueError(
            f"{features_path}: pca_components={reduce_to} exceeds the {fold_rows} rows of a CV training fold"
        )
    return reduce_to


class _Fit(NamedTuple):
    """What model selection on train+val decides, before the test split is looked at."""

    best_params: dict[str, Any]
    cv: dict[str, Any]
    model: Pipeline
    oof: np.ndarray | None
    threshold: float | None
    decided: dict[str, Any]


def _select_and_fit(
    name: str,
    params: Mapping[str, Any],
    data: Mapping[str, np.ndarray],
    rows: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    features_path: Path,
    member_metrics: Sequence[str | os.PathLike],
    seed: int,
    threads: int,
    cv_folds: int,
    decision: str,
    reduce_to: int | None,
    want_oof: bool,
) -> _Fit:
    """Choose params by CV (or take a combiner's fitted members), the threshold out of fold, and fit on train+val.

    Kept apart from train_classifier so that everything here provably sees train+val only.
    """
    x_fit, y_fit, groups = rows  # fit_data(data), computed once by the caller
    if name in COMBINERS:
        fit_ids = np.concatenate([data["ids_train"], data["ids_val"]])
        ids_labels_groups = (fit_ids, y_fit, groups)
        best_params, model, oof = _fitted_combiner(
            features_path, member_metrics, ids_labels_groups, name, want_oof, (seed, threads, cv_folds)
        )
        missing = "a member has no out-of-fold predictions"
        cv: dict[str, Any] = {"skipped": "members' params were chosen by their own CV"}
    else:
        best_params, cv = select_hyperparameters(name, params, x_fit, y_fit, groups, seed, threads, cv_folds, reduce_to)
        model = create_classifier(name, best_params, seed, threads, reduce_to)
        oof, missing = None, None
        if want_oof:
            oof, missing = out_of_fold_proba(model, x_fit, y_fit, groups, len(data["classes"]), seed, threads, cv_folds)
    threshold, decided = validation_threshold(y_fit, oof, decision, missing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_fit, y_fit)  # a combiner refits nothing: it records the classes (stacking checks its members)
    return _Fit(best_params, cv, model, oof, threshold, decided)


def _write_curves(
    roc: pd.DataFrame,
    metrics: Mapping[str, Any],
    classes: list[str],
    title: str,
    roc_path: str | os.PathLike | None,
    plots: Mapping[str, str | os.PathLike | None],
) -> None:
    """The test ROC points as CSV and the ROC, confusion-matrix and reliability PNGs, each only when asked for."""
    if roc_path is not None:
        with atomic_path(roc_path) as tmp:
            roc.to_csv(tmp, index=False)
    if any(path is not None for path in plots.values()):
        from medxfer.plots import plot_confusion, plot_reliability, plot_roc  # matplotlib only when asked for

        if plots.get("roc") is not None:
            plot_roc(roc, metrics["roc_auc"], plots["roc"], title)
        if plots.get("confusion") is not None:
            plot_confusion(np.array(metrics["confusion_matrix"]), classes, plots["confusion"], title)
        if plots.get("reliability") is not None:
            method = metrics["calibration"]["method"]
            after = f"{method} (chosen out of fold)" if method else "no recalibration helped"
            plot_reliability(metrics["calibration"]["test"], after, plots["reliability"], title)


def train_classifier(
    features_path: str | os.PathLike,
    name: str,
    params: Mapping[str, Any] | None,
    model_path: str | os.PathLike,
    predictions_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    *,
    decision: DecisionSection,
    classify: ClassifySection,
    seed: int = 0,
    threads: int = 1,
    roc_path: str | os.PathLike | None = None,
    roc_plot: str | os.PathLike | None = None,
    confusion_plot: str | os.PathLike | None = None,
    reliability_plot: str | os.PathLike | None = None,
    member_metrics: Sequence[str | os.PathLike] = (),
    n_bootstrap: int = N_BOOTSTRAP,
    cv_folds: int = CV_FOLDS,
    oof_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Select by CV and fit on train+val, predict test once; write model.skops, predictions.csv, metrics.json.

    Optional: ROC points as CSV (DVC-plottable) at `roc_path`, ROC and confusion-matrix PNGs, the out-of-fold
    train+val predictions at `oof_path` (NaN where a class has too few cases for folds). A combiner (ensemble,
    stacking) takes its members' fitted models and oof.csv, found beside their metrics.json files (`member_metrics`).
    `decision` (the config's section): argmax, or the metric whose best binary threshold is chosen out of fold on
    train+val. `classify.pca_components`: features wider than this are standardised and PCA-reduced inside the
    pipeline (the cost of SVM and k-NN grows with the width; the fused set is usually reduced already, by the fusion).
    Long on purpose: what is left is the job's sequence in order, with its one look at the test split in view.
    """
    params = dict(params or {})
    threads = max(1, int(threads))
    features_path = Path(features_path)
    data = load_feature_file(features_path)
    classes = [str(c) for c in data["classes"]]
    x_fit, y_fit, groups = fit_data(data)
    if data["X_train"].shape[0] == 0 or data["X_test"].shape[0] == 0:
        raise ValueError(f"{features_path}: train and test splits must not be empty")
    reduce_to = _pca_width(features_path, x_fit.shape, classify.pca_components, cv_folds)
    want_oof = oof_path is not None or decision.threshold != "argmax"
    mark_work_start()
    with threadpool_limits(limits=threads):
        try:
            fit = _select_and_fit(
                name,
                params,
                data,
                (x_fit, y_fit, groups),
                features_path,
                member_metrics,
                seed,
                threads,
                cv_folds,
                decision.threshold,
                reduce_to,
                want_oof,
            )
            proba = classifier_proba(fit.model, data["X_test"], len(classes))  # the one look at the test split
        except ValueError as exc:
            raise ValueError(f"classifier '{name}' with params {params} failed on {features_path}: {exc}") from exc

    with atomic_path(model_path) as tmp:
        skops_io().dump(fit.model, tmp)
    write_predictions(predictions_path, data, proba, fit.threshold)
    if oof_path is not None:
        no_oof = np.full((x_fit.shape[0], len(classes)), np.nan)
        write_predictions(
            oof_path, data, no_oof if fit.oof is None else fit.oof, fit.threshold, splits=("train", "val")
        )

    ordinal = is_ordinal(data)
    metrics = evaluate(data["y_test"], proba, data.get("study_test"), n_bootstrap, seed, fit.threshold, ordinal)
    val_metrics = validation_metrics(data, fit.oof, fit.threshold, ordinal)
    mapping, recalibration = choose_recalibration(y_fit, fit.oof, seed)
    features_identity = feature_identity(data, features_path)
    metrics |= {
        **({} if features_identity is None else {"identity": features_identity | {"classifier": name}}),
        **({} if val_metrics is None else {"val": val_metrics}),
        "decision": fit.decided,
        "classifier": name,
        "params": params,
        "best_params": fit.best_params,
        "cv": fit.cv,
        "features": str(features_path),
        "classes": classes,
        "n_fit": int(x_fit.shape[0]),
        "n_features": int(x_fit.shape[1]),
        "pca_components": reduce_to,
        "seed": int(seed),
        "calibration": recalibration
        | {
            "mapping": mapping,
            "n_bins": N_BINS,
            "test": {
                "before": calibration_scores(data["y_test"], proba),
                "after": calibration_scores(data["y_test"], recalibrated(mapping, proba)),
            },
        },
    }
    roc = roc_points(data["y_test"], proba, classes)
    title = f"{name} on {features_path.stem} (test, n={len(proba)})"
    plots = {"roc": roc_plot, "confusion": confusion_plot, "reliability": reliability_plot}
    _write_curves(roc, metrics, classes, title, roc_path, plots)
    write_json(metrics_path, metrics)
    return metrics


def train_run_classifiers(
    features: Sequence[str | os.PathLike],
    outputs: Mapping[str, Sequence[str | os.PathLike]],
    classifiers: Mapping[str, Mapping[str, Any] | None],
    feature_sets: Sequence[str],
    members: Mapping[str, Sequence[str]] | None = None,
    log: Any = None,
    **settings: Any,
) -> None:
    """Every classifier on every feature file of one run, as rule train_classifiers does: `outputs` maps each of
    model, predictions, oof, metrics, roc, roc_plot, confusion_plot, reliability_plot to one path per (classifier,
    feature set),
    classifiers in the order given (the combiners last, `members` naming what each combines), feature sets in
    `feature_sets` order. `settings`: seed, threads, decision and classify of train_classifier (the last two the
    config's sections).
    """
    slot = {(c, f): i * len(feature_sets) + j for i, c in enumerate(classifiers) for j, f in enumerate(feature_sets)}
    for clf, hyperparameters in classifiers.items():
        for features_set, path in zip(feature_sets, features, strict=True):
            k = slot[clf, features_set]
            member_metrics = [Path(outputs["metrics"][slot[m, features_set]]) for m in (members or {}).get(clf, [])]
            metrics = train_classifier(
                Path(path),
                clf,
                hyperparameters,
                *(Path(outputs[name][k]) for name in ("model", "predictions", "metrics")),
                roc_path=Path(outputs["roc"][k]),
                roc_plot=Path(outputs["roc_plot"][k]),
                confusion_plot=Path(outputs["confusion_plot"][k]),
                reliability_plot=Path(outputs["reliability_plot"][k]),
                member_metrics=member_metrics,
                oof_path=Path(outputs["oof"][k]),
                **settings,
            )
            if log is not None:
                summary = {key: metrics[key] for key in ("accuracy", "cohen_kappa", "roc_auc", "best_params")}
                log.info("%s on %s: test metrics %s", clf, metrics["identity"]["features"], summary)


__all__ = ["classifier_proba", "train_classifier", "train_run_classifiers"]
