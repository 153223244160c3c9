"""Classic-ML classifiers on feature files: registry, CV on train+val only, artifacts, skops round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.ensemble import VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from medxfer.classifiers import CLASSIFIERS, ENSEMBLE, STACKING, create_classifier, load_classifier
from medxfer.classify import train_classifier
from medxfer.fusion import load_feature_file
from medxfer.io import read_json, save_npz
from medxfer.metrics import choose_threshold
from medxfer.model_selection import cv_splits, fit_data, select_hyperparameters, split_grid
from medxfer.sections import ClassifySection, DecisionSection

CLASSES = np.array(["normal", "benign", "malignant"])
N = {"train": 60, "val": 24, "test": 24}
NAMES = sorted(CLASSIFIERS)
MEMBERS = ("logreg", "knn")
# small grids, so the CV path runs for every classifier that has something to choose
GRIDS = {
    "svm": {"C": [0.1, 1.0]},
    "svm_linear": {"C": [0.01, 0.1]},
    "logreg": {"C": [0.1, 1.0]},
    "random_forest": {"n_estimators": 20, "min_samples_leaf": [1, 3]},
    "knn": {"n_neighbors": [3, 5]},
    "gradient_boosting": {"max_iter": 20, "learning_rate": [0.1, 0.3]},
    "mlp": {"hidden_layer_sizes": [[16]], "alpha": [0.0001, 0.01], "max_iter": 200},
    ENSEMBLE: {},
    STACKING: {},
}


def _write_blobs(path: Path, seed: int = 0, dim: int = 6, with_study: bool = False, classes: int = 3) -> Path:
    """Well-separated Gaussian blobs: any reasonable classifier should score far above chance."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(classes, dim))
    arrays: dict[str, np.ndarray] = {"classes": CLASSES[:classes]}
    for split, n in N.items():
        y = (np.arange(n) // 2 % classes).astype(np.int64)  # pairs share a label, so a study of two is consistent
        arrays[f"X_{split}"] = (centres[y] + rng.normal(size=(n, dim))).astype(np.float32)
        arrays[f"y_{split}"] = y
        arrays[f"ids_{split}"] = np.array([f"{split}-{i:03d}" for i in range(n)])
        if with_study:
            arrays[f"study_{split}"] = np.array([f"study-{split}-{i // 2}" for i in range(n)])
    save_npz(path, **arrays)
    return path


def _sections(decision: str | None = None, pca_components: int | None = None) -> dict:
    """train_classifier's `decision` and `classify` sections: the config's defaults but for what a test sets."""
    return {
        "decision": DecisionSection.from_config({} if decision is None else {"threshold": decision}),
        "classify": ClassifySection.from_config({} if pca_components is None else {"pca_components": pca_components}),
    }


def _train(features: Path, out: Path, name: str, params: dict | None = None, **kwargs) -> dict:
    members = []
    shared = {k: kwargs.pop(k) for k in ("decision", "pca_components") if k in kwargs}
    if name in (ENSEMBLE, STACKING):
        for member in MEMBERS:
            _train(features, out / "members" / member, member, GRIDS[member], **shared)
            members.append(out / "members" / member / "metrics.json")
    return train_classifier(
        features,
        name,
        GRIDS[name] if params is None else params,
        out / "model.skops",
        out / "predictions.csv",
        out / "metrics.json",
        seed=0,
        member_metrics=members,
        n_bootstrap=200,
        oof_path=out / "oof.csv",
        **_sections(**shared),
        **kwargs,
    )


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_blobs(tmp_path_factory.mktemp("features") / "features.npz")


def test_registry_has_the_paper_classifiers() -> None:
    assert set(GRIDS) == set(CLASSIFIERS)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", NAMES)
def test_classifier_trains_and_writes_artifacts(name: str, blobs: Path, tmp_path: Path) -> None:
    plots = {"roc_path": tmp_path / "roc.csv", "roc_plot": tmp_path / "roc.png", "confusion_plot": tmp_path / "cm.png"}
    metrics = _train(blobs, tmp_path, name, **plots)
    for path in plots.values():
        assert path.is_file() and path.stat().st_size > 0
    assert plots["roc_plot"].read_bytes()[:4] == b"\x89PNG"
    roc = pd.read_csv(plots["roc_path"])
    assert set(roc["class"]) == set(CLASSES) and roc["fpr"].between(0, 1).all() and roc["tpr"].between(0, 1).all()

    saved = read_json(tmp_path / "metrics.json")
    assert saved == metrics
    for key in ("accuracy", "balanced_accuracy", "f1", "cohen_kappa", "roc_auc", "sensitivity", "specificity"):
        assert 0.0 <= metrics[key] <= 1.0, key
        low, high = metrics["ci"][key]
        assert low <= metrics[key] <= high, key
    assert metrics["accuracy"] > 0.8 and metrics["roc_auc"] > 0.9
    assert metrics["classifier"] == name and metrics["features"] == str(blobs)
    assert metrics["n"] == N["test"] and metrics["n_fit"] == N["train"] + N["val"] and metrics["n_features"] == 6
    assert np.array(metrics["confusion_matrix"]).sum() == N["test"]
    if name in (ENSEMBLE, STACKING):
        assert set(metrics["best_params"]["members"]) == set(MEMBERS)
    else:
        assert metrics["cv"]["candidates"] == 2 and len(metrics["cv"]["results"]) == 2
        chosen = {k: metrics["best_params"][k] for k in split_grid(GRIDS[name])[1][0]}
        assert chosen in [r["params"] for r in metrics["cv"]["results"]]

    predictions = pd.read_csv(tmp_path / "predictions.csv")
    prob_columns = [f"prob_{c}" for c in CLASSES]
    assert list(predictions.columns) == ["image_id", "label", "probability", "prediction", *prob_columns]
    assert len(predictions) == N["test"]
    proba = predictions[prob_columns].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(predictions["prediction"], proba.argmax(axis=1))
    np.testing.assert_allclose(predictions["probability"], proba.max(axis=1))
    assert math.isclose(metrics["accuracy"], float((predictions["prediction"] == predictions["label"]).mean()))

    with np.load(blobs) as data:
        x_test = data["X_test"]
    path = tmp_path / "model.skops"
    loaded = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    np.testing.assert_allclose(loaded.predict_proba(x_test), proba, atol=1e-12)
    np.testing.assert_allclose(load_classifier(path).predict_proba(x_test), proba, atol=1e-12)


def test_fit_data_ignores_the_test_split(blobs: Path, tmp_path: Path) -> None:
    data = load_feature_file(blobs)
    changed = dict(data)
    changed["X_test"] = data["X_test"] * -7.0 + 3.0
    changed["y_test"] = np.zeros_like(data["y_test"])
    for a, b in zip(fit_data(data), fit_data(changed), strict=True):
        np.testing.assert_array_equal(a, b)
    x, y, groups = fit_data(data)
    assert x.shape[0] == N["train"] + N["val"] and groups is None
    np.testing.assert_array_equal(x, np.concatenate([data["X_train"], data["X_val"]]))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("name", ["svm", "knn", "gradient_boosting", ENSEMBLE])
def test_test_split_is_never_used_for_fitting(name: str, blobs: Path, tmp_path: Path) -> None:
    with np.load(blobs) as npz:
        data = {key: npz[key] for key in npz.files}
    rng = np.random.default_rng(7)
    data["X_test"] = rng.normal(loc=-3.0, scale=5.0, size=data["X_test"].shape).astype(np.float32)
    data["y_test"] = np.zeros_like(data["y_test"])  # a different label distribution too
    other = tmp_path / "other.npz"
    save_npz(other, **data)
    a, b = _train(blobs, tmp_path / "a", name), _train(other, tmp_path / "b", name)
    assert a["best_params"] == b["best_params"] and a["cv"] == b["cv"]
    probe = rng.normal(scale=4.0, size=(32, 6)).astype(np.float32)
    model_a, model_b = load_classifier(tmp_path / "a" / "model.skops"), load_classifier(tmp_path / "b" / "model.skops")
    np.testing.assert_array_equal(model_a.predict_proba(probe), model_b.predict_proba(probe))


def test_cv_folds_keep_studies_together_and_pick_the_best(tmp_path: Path) -> None:
    data = load_feature_file(_write_blobs(tmp_path / "f.npz", with_study=True, classes=2))
    x, y, groups = fit_data(data)
    splits, reason = cv_splits(y, groups, 3, seed=0)
    assert reason is None
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
    # on noisy features the choice must be the candidate with the best mean CV score, ties to the first
    noisy = x + np.random.default_rng(0).normal(scale=3.0, size=x.shape)
    best, report = select_hyperparameters("knn", {"n_neighbors": [1, 15]}, noisy, y, groups, seed=0, threads=1)
    assert report["grouped_by"] == "study" and report["folds"] == 3 and report["scoring"] == "roc_auc"
    assert best["n_neighbors"] == [1, 15][int(np.argmax([r["mean"] for r in report["results"]]))]
    _, skipped = select_hyperparameters("knn", {"n_neighbors": [3, 5]}, x[:3], np.array([0, 1, 1]), None, 0, 1)
    assert "first candidate used" in skipped["skipped"]


def test_one_image_per_study_folds_are_stratified_like_grouped_ones() -> None:
    """Unique studies take the fast stratified splits; each fold keeps the class shares, as grouping would."""
    y = np.r_[np.zeros(300, int), np.ones(100, int)]
    unique = np.array([f"s{i}" for i in range(y.size)])
    splits, _ = cv_splits(y, unique, 3, seed=0)
    folds = [test for _, test in splits]
    assert sorted(np.concatenate(folds)) == list(range(y.size))
    assert all(abs(y[test].mean() - 0.25) < 0.01 for test in folds)
    shared = np.array([f"s{i // 2}" for i in range(y.size)])  # two images per study: grouping matters
    grouped, _ = cv_splits(y, shared, 3, seed=0)
    for train, test in grouped:
        assert not set(shared[train]) & set(shared[test])


def test_binary_predictions_and_study_level_metrics(tmp_path: Path) -> None:
    features = _write_blobs(tmp_path / "features.npz", with_study=True, classes=2)
    metrics = _train(features, tmp_path / "out", "logreg", {"C": 0.5})
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(predictions.columns[:5]) == ["image_id", "study_id", "label", "probability", "prediction"]
    assert predictions["study_id"].iloc[3] == "study-test-1"
    np.testing.assert_array_equal(predictions["probability"], predictions["prob_benign"])
    assert metrics["bootstrap"]["unit"] == "study" and metrics["study"]["n"] == N["test"] // 2
    assert metrics["study"]["ci"]["accuracy"][0] <= metrics["study"]["accuracy"]


def test_training_is_deterministic(blobs: Path, tmp_path: Path) -> None:
    _train(blobs, tmp_path / "a", "random_forest")
    _train(blobs, tmp_path / "b", "random_forest")
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (tmp_path / "b" / "predictions.csv").read_bytes()
    a, b = read_json(tmp_path / "a" / "metrics.json"), read_json(tmp_path / "b" / "metrics.json")
    assert a["ci"] == b["ci"] and a["cv"] == b["cv"]


def test_class_absent_from_train_gets_zero_probability(blobs: Path, tmp_path: Path) -> None:
    with np.load(blobs) as npz:
        data = {key: npz[key] for key in npz.files}
    for split in ("train", "val"):
        keep = data[f"y_{split}"] != 2
        for key in ("X", "y", "ids"):
            data[f"{key}_{split}"] = data[f"{key}_{split}"][keep]
    save_npz(tmp_path / "two.npz", **data)
    metrics = _train(tmp_path / "two.npz", tmp_path / "out", "logreg")
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert (predictions["prob_malignant"] == 0.0).all()
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_ensemble_refuses_members_of_other_features(blobs: Path, tmp_path: Path) -> None:
    other = _write_blobs(tmp_path / "other.npz", seed=1)
    _train(other, tmp_path / "m", "logreg")
    with pytest.raises(ValueError, match=r"not a classifier result on"):
        train_classifier(
            blobs, ENSEMBLE, {}, tmp_path / "e.skops", tmp_path / "p.csv", tmp_path / "m.json",
            member_metrics=[tmp_path / "m" / "metrics.json"], **_sections(),
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"at least two members"):
        create_classifier(ENSEMBLE, {"members": {"logreg": {}}}, seed=0, threads=1)


def test_unknown_classifier_names_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown classifier 'xgboost'.*gradient_boosting.*knn.*mlp.*svm_linear"):
        create_classifier("xgboost", {}, seed=0, threads=1)


def test_bad_params_name_classifier_and_param(blobs: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"classifier 'svm'.*'gama'.*allowed:.*'gamma'"):
        create_classifier("svm", {"gama": 0.1}, seed=0, threads=1)
    with pytest.raises(ValueError, match=r"classifier 'random_forest'.*'random_state'.*not configurable"):
        create_classifier("random_forest", {"random_state": 3}, seed=0, threads=1)
    with pytest.raises(ValueError, match=r"classifier 'knn'.*'n_neighbours'"):
        _train(blobs, tmp_path, "knn", {"n_neighbours": [3, 5]})  # a bad name inside a grid fails before any fit
    with pytest.raises(ValueError, match=r"classifier 'logreg'.*'C' parameter"):
        _train(blobs, tmp_path, "logreg", {"C": -1.0})
    with pytest.raises(ValueError, match=r"'C': an empty list"):
        _train(blobs, tmp_path, "logreg", {"C": []})
    assert not (tmp_path / "model.skops").exists()


def test_create_classifier_applies_seed_threads_and_params() -> None:
    forest = create_classifier("random_forest", {"n_estimators": 7}, seed=11, threads=2)[-1]
    assert (forest.n_estimators, forest.random_state, forest.n_jobs) == (7, 11, 2)
    svm = create_classifier("svm", {"C": 3.0, "kernel": "linear"}, seed=5, threads=1)
    assert svm.get_params()["clf__estimator__C"] == 3.0 and svm.get_params()["clf__estimator__random_state"] == 5
    mlp = create_classifier("mlp", {"hidden_layer_sizes": [32, 8]}, seed=0, threads=1)[-1]
    assert mlp.hidden_layer_sizes == (32, 8)
    fixed, candidates = split_grid({"C": [1, 2], "kernel": "rbf", "gamma": [0.1, 1]})
    assert fixed == {"kernel": "rbf"} and len(candidates) == 4 and candidates[0] == {"C": 1, "gamma": 0.1}


def _overlapping_binary(path: Path, seed: int = 0) -> Path:
    """Two overlapping, imbalanced classes (1 in 4 positive): the best cut-off is not 0.5."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"classes": np.array(["benign", "malignant"])}
    for split, n in N.items():
        y = (rng.random(n) < 0.25).astype(np.int64)
        arrays[f"X_{split}"] = (y[:, None] * 1.2 + rng.normal(size=(n, 3))).astype(np.float32)
        arrays[f"y_{split}"] = y
        arrays[f"ids_{split}"] = np.array([f"{split}-{i:03d}" for i in range(n)])
    save_npz(path, **arrays)
    return path


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_stacked_ensemble_is_a_logistic_regression_on_the_members_out_of_fold_probabilities(tmp_path: Path) -> None:
    features = _overlapping_binary(tmp_path / "features.npz")
    metrics = _train(features, tmp_path / "s", STACKING, decision="cohen_kappa")
    assert set(metrics["best_params"]["members"]) == set(MEMBERS)
    data = load_feature_file(features)
    x, y, groups = fit_data(data)
    members = tmp_path / "s" / "members"
    member_oof = np.column_stack([pd.read_csv(members / m / "oof.csv")["prob_malignant"] for m in MEMBERS])
    splits, _ = cv_splits(y, groups, 3, seed=0)
    meta = LogisticRegression(C=1.0, max_iter=1000)
    meta_oof = cross_val_predict(meta, member_oof, y, cv=splits, method="predict_proba")  # the members' folds
    oof = pd.read_csv(tmp_path / "s" / "oof.csv")[["prob_benign", "prob_malignant"]]
    np.testing.assert_allclose(oof, meta_oof, atol=1e-12)
    assert metrics["decision"]["threshold"] == choose_threshold(y, meta_oof, "cohen_kappa")
    member_test = np.column_stack(
        [load_classifier(members / m / "model.skops").predict_proba(data["X_test"])[:, 1] for m in MEMBERS]
    )
    saved = pd.read_csv(tmp_path / "s" / "predictions.csv")[["prob_benign", "prob_malignant"]]
    np.testing.assert_allclose(saved, meta.fit(member_oof, y).predict_proba(member_test), atol=1e-12)
    reloaded = load_classifier(tmp_path / "s" / "model.skops")  # sklearn types only: the trusted loader takes it
    np.testing.assert_allclose(reloaded.predict_proba(data["X_test"]), saved, atol=1e-12)

    knn_oof = members / "knn" / "oof.csv"
    pd.read_csv(knn_oof).assign(prob_malignant=np.nan).to_csv(knn_oof, index=False)
    with pytest.raises(ValueError, match=r"stacking needs every member's out-of-fold predictions"):
        train_classifier(
            features, STACKING, {}, tmp_path / "m.skops", tmp_path / "p.csv", tmp_path / "m.json",
            member_metrics=[members / m / "metrics.json" for m in MEMBERS], **_sections(),
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"classifier 'stacking' cannot combine a combiner: \['ensemble'\]"):
        create_classifier(STACKING, {"members": {"logreg": {}, ENSEMBLE: {}}}, seed=0, threads=1)


def test_decision_threshold_is_chosen_out_of_fold_never_on_test(tmp_path: Path) -> None:
    features = _overlapping_binary(tmp_path / "features.npz")
    metrics = _train(features, tmp_path / "a", "logreg", {"C": 1.0}, decision="balanced_accuracy")
    threshold = metrics["decision"]["threshold"]
    assert metrics["decision"]["chosen_on"] == "out-of-fold predictions on train+val"
    assert 0 < threshold < 0.5 and metrics["threshold"] == threshold
    predictions = pd.read_csv(tmp_path / "a" / "predictions.csv")
    np.testing.assert_array_equal(predictions["prediction"], (predictions["prob_malignant"] >= threshold).astype(int))
    argmax = _train(features, tmp_path / "b", "logreg", {"C": 1.0})
    assert metrics["balanced_accuracy"] > argmax["balanced_accuracy"]
    assert metrics["roc_auc"] == argmax["roc_auc"]
    # other test labels: the same threshold, so the test split played no part in choosing it
    data = dict(np.load(features, allow_pickle=True))
    data["y_test"] = 1 - data["y_test"]
    save_npz(tmp_path / "flipped.npz", **data)
    flipped = _train(tmp_path / "flipped.npz", tmp_path / "c", "logreg", {"C": 1.0}, decision="balanced_accuracy")
    assert flipped["decision"]["threshold"] == threshold


@pytest.mark.parametrize("name", ["svm", ENSEMBLE])
def test_wide_features_are_pca_reduced_inside_the_pipeline(name: str, tmp_path: Path) -> None:
    wide = _write_blobs(tmp_path / "wide.npz", dim=40)
    metrics = _train(wide, tmp_path / name, name, pca_components=8)
    model = load_classifier(tmp_path / name / "model.skops")
    if name == ENSEMBLE:  # each member reduces the features inside its own pipeline
        model = model["clf"].named_estimators_[MEMBERS[0]].estimator
    pca = model.named_steps["reduce_pca"]
    assert metrics["pca_components"] == 8 and metrics["n_features"] == 40
    assert pca.n_components_ == 8 and pca.n_features_in_ == 40  # fitted on the wide features, in the pipeline
    assert metrics["accuracy"] > 0.9  # the blobs stay separable in 8 components

    narrow = _write_blobs(tmp_path / "narrow.npz", dim=6)  # no wider than asked: left as it is
    metrics = _train(narrow, tmp_path / "narrow", "svm", GRIDS["svm"], pca_components=8)
    assert metrics["pca_components"] is None
    assert "reduce_pca" not in load_classifier(tmp_path / "narrow" / "model.skops").named_steps


def test_pca_wider_than_a_cv_fold_names_the_file(tmp_path: Path) -> None:
    wide = _write_blobs(tmp_path / "wide.npz", dim=200)
    with pytest.raises(ValueError, match=r"wide\.npz: pca_components=100 exceeds the 56 rows of a CV training fold"):
        _train(wide, tmp_path / "svm", "svm", {"C": 1.0}, pca_components=100)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_out_of_fold_predictions_come_from_models_that_never_saw_the_case(tmp_path: Path) -> None:
    features = _overlapping_binary(tmp_path / "features.npz")
    metrics = _train(features, tmp_path / "a", "logreg", {"C": 1.0}, decision="cohen_kappa")
    oof = pd.read_csv(tmp_path / "a" / "oof.csv")
    data = load_feature_file(features)
    x, y, groups = fit_data(data)
    assert list(oof["image_id"]) == [*data["ids_train"], *data["ids_val"]]
    assert list(oof["split"]) == ["train"] * N["train"] + ["val"] * N["val"]
    np.testing.assert_array_equal(oof["label"], y)
    expected = np.zeros(y.size)
    splits, _ = cv_splits(y, groups, 3, seed=0)
    for train, held_out in splits:  # each fold's copy, fitted without the held-out cases
        model = create_classifier("logreg", {"C": 1.0}, seed=0, threads=1).fit(x[train], y[train])
        expected[held_out] = model.predict_proba(x[held_out])[:, 1]
    np.testing.assert_allclose(oof["prob_malignant"], expected, atol=1e-12)
    assert metrics["threshold"] == choose_threshold(y, np.c_[1 - expected, expected], "cohen_kappa")
    # what the report picks classifiers by: these out-of-fold predictions on the val rows only
    held_out_val = slice(N["train"], None)
    assert metrics["val"]["n"] == N["val"] and metrics["val"]["predictions"] == "out of fold"
    assert metrics["val"]["roc_auc"] == pytest.approx(roc_auc_score(y[held_out_val], expected[held_out_val]))

    tiny = dict(np.load(features, allow_pickle=True))
    first_positive = int(np.argmax(tiny["y_train"]))
    for split in ("train", "val"):  # one positive case in train+val: no stratified folds
        keep = tiny[f"y_{split}"] == 0
        if split == "train":
            keep[first_positive] = True
        for key in ("X", "y", "ids"):
            tiny[f"{key}_{split}"] = tiny[f"{key}_{split}"][keep]
    save_npz(tmp_path / "tiny.npz", **tiny)
    skipped = _train(tmp_path / "tiny.npz", tmp_path / "tiny", "logreg", {"C": 1.0}, decision="cohen_kappa")
    assert "only 1 images" in skipped["decision"]["skipped"] and skipped["decision"]["threshold"] is None
    no_folds = pd.read_csv(tmp_path / "tiny" / "oof.csv")
    assert no_folds["prob_malignant"].isna().all() and no_folds["prediction"].isna().all()
    assert "val" not in skipped  # no out-of-fold predictions: nothing to pick it by, rather than a made-up score


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_ensemble_of_fitted_members_equals_refitting_them(tmp_path: Path) -> None:
    features = _overlapping_binary(tmp_path / "features.npz")
    metrics = _train(features, tmp_path / "e", ENSEMBLE, decision="cohen_kappa")
    data = load_feature_file(features)
    x, y, groups = fit_data(data)
    members = metrics["best_params"]["members"]
    refit = VotingClassifier(
        [(m, create_classifier(m, members[m], seed=0, threads=1)) for m in MEMBERS], voting="soft"
    )  # what a from-scratch ensemble would do: refit every member, out of fold and on all of train+val
    splits, _ = cv_splits(y, groups, 3, seed=0)
    oof = cross_val_predict(refit, x, y, cv=splits, method="predict_proba")
    assert metrics["decision"]["threshold"] == choose_threshold(y, oof, "cohen_kappa")
    np.testing.assert_allclose(pd.read_csv(tmp_path / "e" / "oof.csv")[["prob_benign", "prob_malignant"]], oof)
    val_rows = slice(N["train"], None)
    assert metrics["val"]["roc_auc"] == pytest.approx(roc_auc_score(y[val_rows], oof[val_rows, 1]))
    saved = pd.read_csv(tmp_path / "e" / "predictions.csv")[["prob_benign", "prob_malignant"]]
    np.testing.assert_allclose(saved, refit.fit(x, y).predict_proba(data["X_test"]), atol=1e-12)

    (tmp_path / "e" / "members" / "knn" / "oof.csv").unlink()
    with pytest.raises(ValueError, match=r"members/knn/oof\.csv: missing; the ensemble's fit or threshold needs"):
        train_classifier(
            features, ENSEMBLE, {}, tmp_path / "m.skops", tmp_path / "p.csv", tmp_path / "m.json",
            member_metrics=[tmp_path / "e" / "members" / m / "metrics.json" for m in MEMBERS],
            **_sections("cohen_kappa"),
        )  # fmt: skip
