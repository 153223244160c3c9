"""The classifier registry: short config keys -> builders of unfitted sklearn pipelines, and safe skops I/O.

As in Alzubaidi et al. 2023, the CNNs only provide features; the final decision comes from SVM (RBF or linear),
logistic regression, random forest, k-NN, gradient boosting, an MLP, or a soft-voting ensemble or stacking of them.
Like timm's model registry, each builder registers itself under its key and everything else goes through
create_classifier.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    StackingClassifier,
    VotingClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from medxfer.config import COMBINERS

ClassifierBuilder = Callable[[Mapping[str, Any], int, int], Pipeline]
CLASSIFIERS: dict[str, ClassifierBuilder] = {}
ENSEMBLE, STACKING = COMBINERS
STACK_C = 1.0  # the stacking meta-learner's inverse L2 strength: a few inputs, a few hundred rows


def stacking_meta_learner() -> LogisticRegression:
    """The logistic regression stacking fits on its members' probabilities (one builder for both ways to fit it)."""
    return LogisticRegression(C=STACK_C, max_iter=1000)


# Module prefixes whose types a saved classifier may contain; anything else in a .skops file is refused.
_TRUSTED_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.")
_SEED = {"random_state": "set from seed"}
_THREADS = {"n_jobs": "set from threads"}


def register_classifier(name: str) -> Callable[[ClassifierBuilder], ClassifierBuilder]:
    """Add a builder `(params, seed, threads) -> Pipeline` to CLASSIFIERS under `name` (like timm's registry)."""

    def decorator(builder: ClassifierBuilder) -> ClassifierBuilder:
        if name in CLASSIFIERS:
            raise ValueError(f"classifier '{name}' is already registered")
        CLASSIFIERS[name] = builder
        return builder

    return decorator


def _configure(name: str, estimator: BaseEstimator, params: Mapping[str, Any], reserved: Mapping[str, str]) -> Any:
    """Apply user params, refusing unknown ones and those medxfer sets itself (seed, threads), by name."""
    for key in params:
        if key in reserved:
            raise ValueError(f"classifier '{name}': parameter '{key}' is not configurable ({reserved[key]})")
    try:
        return estimator.set_params(**dict(params))
    except ValueError as exc:
        allowed = sorted(set(estimator.get_params(deep=False)) - set(reserved))
        bad = [key for key in params if key not in allowed]
        raise ValueError(f"classifier '{name}': unknown parameter(s) {bad}; allowed: {allowed}") from exc


def _calibrated(estimator: BaseEstimator, threads: int) -> CalibratedClassifierCV:
    """Platt-scaled probabilities for an SVM (SVC(probability=True) is deprecated since sklearn 1.9); 3 folds: cheap."""
    return CalibratedClassifierCV(estimator, method="sigmoid", cv=3, ensemble=False, n_jobs=threads)


@register_classifier("svm")
def _svm(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    """Kernel SVM, RBF by default (`kernel` is configurable)."""
    reserved = _SEED | {"probability": "probabilities come from sigmoid calibration"}
    svc = _configure("svm", SVC(kernel="rbf", random_state=seed), params, reserved)
    return Pipeline([("scaler", StandardScaler()), ("clf", _calibrated(svc, threads))])


@register_classifier("svm_linear")
def _svm_linear(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    """Linear SVM (liblinear): scales to many images and the thousands of fused dimensions."""
    svc = _configure("svm_linear", LinearSVC(dual="auto", max_iter=5000, random_state=seed), params, _SEED)
    return Pipeline([("scaler", StandardScaler()), ("clf", _calibrated(svc, threads))])


@register_classifier("logreg")
def _logreg(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    logreg = _configure("logreg", LogisticRegression(max_iter=2000, random_state=seed), params, _SEED | _THREADS)
    return Pipeline([("scaler", StandardScaler()), ("clf", logreg)])


@register_classifier("random_forest")
def _random_forest(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    forest = RandomForestClassifier(random_state=seed, n_jobs=threads)
    return Pipeline([("clf", _configure("random_forest", forest, params, _SEED | _THREADS))])


@register_classifier("knn")
def _knn(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    knn = _configure("knn", KNeighborsClassifier(n_jobs=threads), params, _THREADS)
    return Pipeline([("scaler", StandardScaler()), ("clf", knn)])


@register_classifier("gradient_boosting")
def _gradient_boosting(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    """HistGradientBoosting: sklearn's fast boosting, no extra dependency (threads via threadpool_limits)."""
    boosting = HistGradientBoostingClassifier(early_stopping=False, random_state=seed)
    return Pipeline([("clf", _configure("gradient_boosting", boosting, params, _SEED))])


@register_classifier("mlp")
def _mlp(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    params = dict(params)
    if isinstance(params.get("hidden_layer_sizes"), list):  # YAML has no tuples
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    mlp = MLPClassifier(hidden_layer_sizes=(128,), max_iter=500, random_state=seed)
    return Pipeline([("scaler", StandardScaler()), ("clf", _configure("mlp", mlp, params, _SEED))])


def _members(name: str, params: Mapping[str, Any], seed: int, threads: int) -> list[tuple[str, Pipeline]]:
    """A combiner's unfitted members, from `{"members": {member: fixed params}}`."""
    unknown = sorted(set(params) - {"members"})
    if unknown:
        raise ValueError(f"classifier '{name}': unknown parameter(s) {unknown}; allowed: ['members']")
    members = params.get("members") or {}
    if not isinstance(members, Mapping) or len(members) < 2:
        raise ValueError(f"classifier '{name}' needs at least two members with their parameters, got {members!r}")
    inside = sorted(set(members) & set(COMBINERS))
    if inside:
        raise ValueError(f"classifier '{name}' cannot combine a combiner: {inside}")
    return [(member, create_classifier(member, p, seed, threads)) for member, p in members.items()]


@register_classifier(ENSEMBLE)
def _ensemble(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    """Soft voting (the mean probability) over unfitted members.

    medxfer.classify.train_classifier does not refit: it votes over the members' fitted models.
    """
    return Pipeline([("clf", VotingClassifier(_members(ENSEMBLE, params, seed, threads), voting="soft"))])


@register_classifier(STACKING)
def _stacking(params: Mapping[str, Any], seed: int, threads: int) -> Pipeline:
    """Stacking: a logistic regression on the members' out-of-fold probabilities.

    medxfer.classify.train_classifier does not refit the members: it fits the meta-learner on their oof.csv files.
    """
    meta = stacking_meta_learner()
    stack = StackingClassifier(_members(STACKING, params, seed, threads), meta, cv=3, stack_method="predict_proba")
    return Pipeline([("clf", stack)])


def create_classifier(
    name: str, params: Mapping[str, Any] | None, seed: int, threads: int, reduce_to: int | None = None
) -> Pipeline:
    """Build an unfitted pipeline for a registered classifier; config errors name the classifier and key.

    `reduce_to`: standardise and project onto that many principal components first. Being part of the pipeline,
    the projection is refitted in every CV fold, so it never sees the rows it is scored on.
    """
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier '{name}'; allowed: {sorted(CLASSIFIERS)}")
    pipeline = CLASSIFIERS[name](dict(params or {}), int(seed), max(1, int(threads)))
    if reduce_to is None:
        return pipeline
    reduce = [("reduce_scaler", StandardScaler()), ("reduce_pca", PCA(n_components=int(reduce_to), random_state=seed))]
    return Pipeline([*reduce, *pipeline.steps])


class _SkipTorchShim(importlib.abc.MetaPathFinder):
    """Refuses sklearn's array-API shim for torch, the one package whose import pulls in torch."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "sklearn.externals.array_api_compat.torch":
            raise ImportError(f"{name} is not needed to save or load a classifier")


def skops_io() -> Any:
    """skops.io without torch. Its list of trusted types walks every sklearn package; walking the torch shim imports
    torch, 1.5-2 s of every classifier job for types no sklearn estimator uses (the list comes out the same)."""
    if "skops.io" not in sys.modules and "torch" not in sys.modules:
        finder = _SkipTorchShim()
        sys.meta_path.insert(0, finder)
        try:
            import skops.io
        finally:
            sys.meta_path.remove(finder)
    import skops.io

    return skops.io


def load_classifier(path: str | os.PathLike) -> Pipeline:
    """Load a saved pipeline (see load_sklearn_objects)."""
    return load_sklearn_objects(path)


def load_sklearn_objects(path: str | os.PathLike) -> Any:
    """Load a .skops file, trusting only sklearn/numpy types, so a tampered file cannot run foreign code."""
    untrusted = skops_io().get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise ValueError(f"{path}: refusing to load types outside sklearn/numpy: {foreign}")
    return skops_io().load(path, trusted=untrusted)


__all__ = [
    "CLASSIFIERS",
    "ENSEMBLE",
    "STACKING",
    "ClassifierBuilder",
    "create_classifier",
    "load_classifier",
    "load_sklearn_objects",
    "register_classifier",
    "skops_io",
    "stacking_meta_learner",
]
