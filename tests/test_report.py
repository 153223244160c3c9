"""Metrics against sklearn, bootstrap intervals, study aggregation, paired comparison and the summary table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import result_identity
from sklearn import metrics as skm

from medxfer.comparison import split_composition
from medxfer.metrics import (
    METRICS,
    _resample_weights,
    bootstrap_metrics,
    classification_metrics,
    evaluate,
    paired_bootstrap,
    roc_points,
    study_level,
)
from medxfer.plots import plot_confusion, plot_roc
from medxfer.report import summarize_results


def _scores(n_classes: int, n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Informative but imperfect probabilities, rounded so that ties occur (AUC must handle them like sklearn)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    proba = rng.dirichlet(np.ones(n_classes), n)
    proba[np.arange(n), y] += 0.4
    proba = np.round(proba, 1) + 1e-3
    return y, proba / proba.sum(axis=1, keepdims=True)


def test_metrics_match_sklearn_binary():
    y, proba = _scores(2)
    result, pred = classification_metrics(y, proba), proba.argmax(1)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert result["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    assert result["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred), abs=1e-12)
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), abs=1e-12)
    assert result["sensitivity"] == pytest.approx(skm.recall_score(y, pred), abs=1e-12)
    assert result["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0), abs=1e-12)
    assert result["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert result["n"] == len(y)


def test_metrics_match_sklearn_multiclass_macro():
    y, proba = _scores(3)
    result, pred = classification_metrics(y, proba), proba.argmax(1)
    assert result["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert result["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"), abs=1e-12)
    assert result["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred), abs=1e-12)
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"), abs=1e-12)
    cm = skm.confusion_matrix(y, pred)
    specificity = [(cm.sum() - cm[k].sum() - cm[:, k].sum() + cm[k, k]) / (cm.sum() - cm[k].sum()) for k in range(3)]
    assert result["specificity"] == pytest.approx(np.mean(specificity), abs=1e-12)


def test_degenerate_cases():
    assert np.isnan(classification_metrics(np.zeros(3, int), np.full((3, 2), 0.5))["roc_auc"])
    assert classification_metrics(np.zeros(3, int), np.full((3, 2), 0.5))["cohen_kappa"] == 0.0
    y = np.array([0, 1, 1, 0])  # class 2 absent: one-vs-rest AUC undefined, like sklearn
    assert np.isnan(classification_metrics(y, np.eye(3)[[0, 1, 2, 0]])["roc_auc"])
    with pytest.raises(ValueError, match="proba must be"):
        classification_metrics(y, np.ones((3, 2)))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_bootstrap_interval_contains_the_point_estimate_and_is_seeded(n_classes):
    y, proba = _scores(n_classes, n=120)
    result = bootstrap_metrics(y, proba, n_resamples=500, seed=3)
    for m in METRICS:
        low, high = result["ci"][m]
        assert low <= result[m] <= high and high - low > 0, m
    assert result["bootstrap"] == {"resamples": 500, "seed": 3, "level": 0.95, "unit": "image"}
    assert bootstrap_metrics(y, proba, n_resamples=500, seed=3)["ci"] == result["ci"]
    assert bootstrap_metrics(y, proba, n_resamples=500, seed=4)["ci"] != result["ci"]


def test_cluster_bootstrap_draws_whole_studies():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    weights = _resample_weights(groups, 6, 50, seed=0)
    assert weights.shape == (50, 6)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 1])
    np.testing.assert_array_equal(weights[:, 3], weights[:, 5])
    np.testing.assert_array_equal(weights[:, [0, 2, 3]].sum(axis=1), 3)  # three studies drawn per resample


def test_weighted_metrics_equal_metrics_on_the_duplicated_cases():
    y, proba = _scores(2, n=40)
    weights = _resample_weights(None, 40, 1, seed=5)[0].astype(int)
    from medxfer.metrics import _batch_metrics

    batch = _batch_metrics(y, proba, weights[None, :].astype(float))
    expanded = classification_metrics(np.repeat(y, weights), np.repeat(proba, weights, axis=0))
    for m in METRICS:
        assert batch[m][0] == pytest.approx(expanded[m], abs=1e-12), m


def test_study_aggregation_by_hand():
    y = np.array([1, 1, 0, 0, 0, 1])
    p1 = np.array([0.9, 0.5, 0.2, 0.4, 0.3, 0.6])
    studies = np.array(["s2", "s2", "s1", "s1", "s1", "s3"])
    labels, proba, ids = study_level(y, np.stack([1 - p1, p1], 1), studies)
    assert ids.tolist() == ["s1", "s2", "s3"] and labels.tolist() == [0, 1, 1]
    np.testing.assert_allclose(proba[:, 1], [0.3, 0.7, 0.6])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    result = evaluate(y, np.stack([1 - p1, p1], 1), studies, n_resamples=100)
    assert result["study"]["n"] == 3 and result["study"]["accuracy"] == 1.0 and result["accuracy"] == 5 / 6
    assert result["bootstrap"]["unit"] == "study"
    mixed = y.copy()
    mixed[0] = 0
    assert study_level(mixed, np.stack([1 - p1, p1], 1), studies) is None
    assert "skipped" in evaluate(mixed, np.stack([1 - p1, p1], 1), studies, n_resamples=10)["study"]
    assert "study" not in evaluate(y, np.stack([1 - p1, p1], 1), np.arange(6).astype(str), n_resamples=10)


def test_paired_bootstrap():
    y, proba = _scores(2, n=200)
    same = paired_bootstrap(y, proba, proba.copy(), n_resamples=200)
    assert all(d["difference"] == 0 and d["ci"] == [0.0, 0.0] for d in same["metrics"].values())
    noise = np.random.default_rng(1).uniform(size=(200, 2))
    worse = noise / noise.sum(axis=1, keepdims=True)
    better = paired_bootstrap(y, proba, worse, n_resamples=500, seed=1)["metrics"]
    assert better["cohen_kappa"]["ci"][0] > 0 and better["roc_auc"]["p_value"] < 0.01
    assert better["accuracy"]["a"] == classification_metrics(y, proba)["accuracy"]


def test_roc_points_and_plots(tmp_path):
    y, proba = _scores(3, n=60)
    roc = roc_points(y, proba, ["a", "b", "c"])
    assert set(roc["class"]) == {"a", "b", "c"} and list(roc.columns) == ["class", "fpr", "tpr", "threshold"]
    plot_roc(roc, 0.8, tmp_path / "roc.png", "test")
    plot_confusion(np.array(classification_metrics(y, proba)["confusion_matrix"]), "abc", tmp_path / "cm.png", "t")
    assert (tmp_path / "roc.png").read_bytes()[:4] == (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def write_metrics(root, rel, accuracy, kappa):
    path = root / rel / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ("accuracy", "balanced_accuracy", "f1")
    scores = {**dict.fromkeys(keys, accuracy), "cohen_kappa": kappa, "roc_auc": 0.9, "n": 10}
    path.write_text(json.dumps(scores | result_identity(rel)))
    return path


def test_summary_rows_best_and_tables(tmp_path):
    r = tmp_path / "results"
    paths = [
        write_metrics(r, "finetune/t1/scratch/resnet10t", 0.7, 0.4),
        write_metrics(r, "finetune/t1/indomain/resnet10t", 0.8, 0.6),
        write_metrics(r, "classify/t1/indomain/fused/svm", 0.85, 0.7),
        write_metrics(r, "classify/t1/scratch/resnet10t/knn", 0.6, 0.2),
    ]
    table = summarize_results(paths, tmp_path / "s.csv", tmp_path / "m.json", tmp_path / "s.md")
    csv = pd.read_csv(tmp_path / "s.csv")
    assert len(csv) == 4 and csv["best"].sum() == 1
    best = csv[csv["best"]].iloc[0]
    assert (best["init"], best["features"], best["classifier"]) == ("indomain", "fused", "svm")
    assert table.iloc[0]["init"] == "scratch"
    nested = json.loads((tmp_path / "m.json").read_text())
    assert nested["t1"]["indomain"]["fused"]["svm"]["cohen_kappa"] == 0.7
    assert "skipped" in nested["t1"]["paired_comparison"]  # no predictions.csv to pair
    md = (tmp_path / "s.md").read_text()
    assert "## t1" in md and "**svm**" in md and "| scratch |" in md


def test_a_results_folder_moved_and_renamed_reports_the_same(tmp_path):
    """Rows come from each result's own identity, not from its folder: files copied under other names give the
    same summary, and a file without an identity is an error that names it."""
    rels = ["finetune/t1/scratch/resnet10t", "finetune/t1/indomain-seed1/resnet10t", "classify/t1/indomain/fused/svm"]
    originals = [write_metrics(tmp_path / "results", rel, 0.7 + k / 20, 0.3 + k / 10) for k, rel in enumerate(rels)]
    moved = []
    for k, path in enumerate(originals):
        copy = tmp_path / "elsewhere" / f"run{k}" / "metrics.json"  # no stage, target or init in the path
        copy.parent.mkdir(parents=True)
        copy.write_bytes(path.read_bytes())
        moved.append(copy)
    summarize_results(originals, tmp_path / "a.csv", tmp_path / "a.json", tmp_path / "a.md")
    summarize_results(moved, tmp_path / "b.csv", tmp_path / "b.json", tmp_path / "b.md")
    first, second = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    pd.testing.assert_frame_equal(first, second)
    assert set(second["replicate_of"]) == {"scratch", "indomain"} and "indomain-seed1" in set(second["init"])
    assert (tmp_path / "a.md").read_text() == (tmp_path / "b.md").read_text()
    anonymous = write_metrics(tmp_path / "results", "classify/t1/scratch/fused/knn", 0.6, 0.2)
    anonymous.write_text(json.dumps({k: v for k, v in json.loads(anonymous.read_text()).items() if k != "identity"}))
    with pytest.raises(ValueError, match=f"{anonymous}.*identity"):
        summarize_results([*originals, anonymous], tmp_path / "c.csv", tmp_path / "c.json", tmp_path / "c.md")


def _predictions(path: Path, y: np.ndarray, proba: np.ndarray, studies: np.ndarray, order: np.ndarray) -> None:
    table = pd.DataFrame({"image_id": [f"img{i}" for i in range(len(y))], "study_id": studies, "label": y})
    table["prediction"] = proba.argmax(1)
    table["prob_neg"], table["prob_pos"] = proba[:, 0], proba[:, 1]
    table.iloc[order].to_csv(path, index=False)


def test_summary_intervals_for_cnn_rows_and_paired_comparison(tmp_path):
    """The CNN's metrics.json has no intervals: they come from its predictions.csv; rows may be in any order."""
    y, good = _scores(2, n=120, seed=2)
    _, weak = _scores(2, n=120, seed=3)
    weak = 0.5 * weak + 0.25
    studies = np.array([f"s{i // 2}" for i in range(120)])
    y[1::2] = y[::2]  # both images of a study share the label
    r = tmp_path / "results"
    cnn, fused = r / "finetune/t/indomain/resnet18", r / "classify/t/indomain/fused/logreg"
    for folder, proba, order in ((cnn, weak, np.arange(120)[::-1]), (fused, good, np.arange(120))):
        folder.mkdir(parents=True)
        _predictions(folder / "predictions.csv", y, proba, studies, order)
    identities = {folder: result_identity(str(folder.relative_to(r))) for folder in (cnn, fused)}
    (cnn / "metrics.json").write_text(json.dumps(classification_metrics(y, weak) | identities[cnn]))
    (fused / "metrics.json").write_text(json.dumps(evaluate(y, good, studies) | identities[fused]))
    summarize_results([cnn / "metrics.json", fused / "metrics.json"], r / "s.csv", r / "m.json", r / "s.md")
    csv = pd.read_csv(r / "s.csv")
    for m in METRICS:
        assert (csv[f"{m}_lo"] <= csv[m] + 1e-4).all() and (csv[m] <= csv[f"{m}_hi"] + 1e-4).all(), m
    assert csv["study_n"].tolist() == [60, 60]
    comparison = json.loads((r / "m.json").read_text())["t"]["paired_comparison"]
    assert comparison["a"] == "indomain/fused/logreg" and comparison["b"] == "indomain/resnet18/cnn"
    assert comparison["bootstrap"]["unit"] == "study" and comparison["n"] == 120
    kappa = comparison["metrics"]["cohen_kappa"]
    assert kappa["difference"] == pytest.approx(
        classification_metrics(y, good)["cohen_kappa"] - classification_metrics(y, weak)["cohen_kappa"]
    )
    md = (r / "s.md").read_text()
    assert "Paired comparison on the same 120 test images" in md and "Study level" in md and " [" in md


def test_paired_comparison_picks_models_without_the_test_split(tmp_path):
    """The CNN with the better validation AUC is compared, even though the other one scores higher on test."""
    y, good = _scores(2, n=80, seed=4)
    _, weak = _scores(2, n=80, seed=5)
    weak = 0.5 * weak + 0.25
    studies = np.array([f"s{i}" for i in range(80)])
    r = tmp_path / "results"
    rows = {
        "finetune/t/scratch/resnet10t": (good, 0.6),
        "finetune/t/indomain/resnet10t": (weak, 0.9),
        "classify/t/indomain/fused/svm": (good, 0.7),
    }
    paths = []
    for rel, (proba, selection_auc) in rows.items():
        folder = r / rel
        folder.mkdir(parents=True)
        _predictions(folder / "predictions.csv", y, proba, studies, np.arange(80))
        metrics = classification_metrics(y, proba)
        (folder / "metrics.json").write_text(
            json.dumps(metrics | {"val": {"roc_auc": selection_auc}} | result_identity(rel))
        )
        paths.append(folder / "metrics.json")
    summarize_results(paths, r / "s.csv", r / "m.json", r / "s.md", n_bootstrap=50)
    comparison = json.loads((r / "m.json").read_text())["t"]["paired_comparison"]
    assert comparison["b"] == "indomain/resnet10t/cnn"
    assert "validation AUC" in (r / "s.md").read_text()


def test_a_classifier_without_a_grid_can_be_the_picked_fused_classifier(tmp_path):
    """Selection reads the val AUC every classifier has, not the CV score only a grid search leaves behind."""
    y, good = _scores(2, n=80, seed=6)
    _, weak = _scores(2, n=80, seed=7)
    studies = np.array([f"s{i}" for i in range(80)])
    r = tmp_path / "results"
    rows = {
        "finetune/t/indomain/resnet10t": (good, {"val": {"roc_auc": 0.7}}),
        "classify/t/indomain/fused/logreg": (weak, {"val": {"roc_auc": 0.8}, "cv": {"best_score": 0.99}}),
        "classify/t/indomain/fused/knn": (good, {"val": {"roc_auc": 0.9}, "cv": {"skipped": "a single candidate"}}),
    }
    paths = []
    for rel, (proba, extra) in rows.items():
        folder = r / rel
        folder.mkdir(parents=True)
        _predictions(folder / "predictions.csv", y, proba, studies, np.arange(80))
        (folder / "metrics.json").write_text(
            json.dumps(classification_metrics(y, proba) | extra | result_identity(rel))
        )
        paths.append(folder / "metrics.json")
    summarize_results(paths, r / "s.csv", r / "m.json", r / "s.md", n_bootstrap=50, out_headline=r / "h.csv")
    assert json.loads((r / "m.json").read_text())["t"]["paired_comparison"]["a"] == "indomain/fused/knn"
    picks = pd.read_csv(r / "h.csv").set_index("model")["picked by"]
    assert picks["knn on fused features"] == "out-of-fold val AUC 0.900"


def test_split_composition_counts_images_and_class_shares_per_split(tmp_path):
    rows = [("test", 2, "c")] * 3 + [("train", 0, "a")] * 3 + [("train", 1, "b")] + [("val", 1, "b")] * 2
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=["split", "label", "label_name"]).to_csv(path, index=False)
    composition = split_composition(path)
    assert composition["classes"] == ["a", "b", "c"]  # in label order, not in order of appearance
    assert list(composition["splits"]) == ["train", "val", "test"]
    assert composition["splits"]["train"] == {"n": 4, "shares": {"a": 0.75, "b": 0.25, "c": 0.0}}
    assert composition["splits"]["test"] == {"n": 3, "shares": {"a": 0.0, "b": 0.0, "c": 1.0}}
