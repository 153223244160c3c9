"""Seed replicates, decision thresholds chosen on validation data, and the benchmark table built from them."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import result_identity
from sklearn import metrics as skm

from medxfer import config as cfg
from medxfer.metrics import (
    METRICS,
    bootstrap_metrics,
    choose_threshold,
    classification_metrics,
    paired_bootstrap,
    replicate_bootstrap,
)
from medxfer.report import summarize_results


def _binary(n: int = 300, seed: int = 0, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced binary scores whose best cut-off is not 0.5 (the positive class scores low)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(np.int64)
    p1 = np.clip(0.15 + 0.25 * y + rng.normal(0, 0.08, n) + shift, 0.001, 0.999)
    return y, np.stack([1 - p1, p1], axis=1)


def test_threshold_maximises_the_metric_on_the_given_cases():
    y, proba = _binary()
    threshold = choose_threshold(y, proba, "cohen_kappa")
    best = max(skm.cohen_kappa_score(y, (proba[:, 1] >= t).astype(int)) for t in np.linspace(0, 1, 1001))
    assert threshold < 0.5
    assert classification_metrics(y, proba, threshold)["cohen_kappa"] == pytest.approx(best, abs=0.01)
    assert classification_metrics(y, proba, threshold)["cohen_kappa"] > classification_metrics(y, proba)["cohen_kappa"]
    # the thresholded confusion matrix is sklearn's
    pred = (proba[:, 1] >= threshold).astype(int)
    assert classification_metrics(y, proba, threshold)["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert classification_metrics(y, proba, threshold)["roc_auc"] == classification_metrics(y, proba)["roc_auc"]


def test_threshold_is_none_where_argmax_must_stay():
    y3 = np.array([0, 1, 2, 0])
    assert choose_threshold(y3, np.eye(3)[y3], "accuracy") is None
    assert choose_threshold(np.zeros(4, int), np.full((4, 2), 0.5), "accuracy") is None
    with pytest.raises(ValueError, match="unknown decision metric 'auc'"):
        choose_threshold(*_binary(), "auc")


def test_one_replicate_is_the_plain_bootstrap():
    y, proba = _binary(seed=1)
    single = replicate_bootstrap(y, [proba], [0.3], n_resamples=300, seed=5)
    plain = bootstrap_metrics(y, proba, n_resamples=300, seed=5, threshold=0.3)
    for m in METRICS:
        assert single[m] == pytest.approx(plain[m])
        assert [single[f"{m}_lo"], single[f"{m}_hi"]] == pytest.approx(plain["ci"][m])
        assert single[f"{m}_sd"] == 0.0


def test_replicates_give_mean_spread_and_an_interval_of_the_mean():
    y, a = _binary(seed=2)
    _, b = _binary(seed=3)
    _, c = _binary(seed=4, shift=0.1)
    result = replicate_bootstrap(y, [a, b, c], [None, None, None], n_resamples=400, seed=0)
    per_seed = [skm.accuracy_score(y, p.argmax(1)) for p in (a, b, c)]
    assert result["replicates"] == 3
    assert result["accuracy"] == pytest.approx(np.mean(per_seed))
    assert result["accuracy_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert result["accuracy_min"] == pytest.approx(min(per_seed))
    assert result["accuracy_lo"] <= result["accuracy"] <= result["accuracy_hi"]


def test_paired_bootstrap_of_replicates_compares_seed_means():
    y, a1 = _binary(seed=5)
    _, a2 = _binary(seed=6)
    _, b1 = _binary(seed=7, shift=0.2)  # worse calibrated: argmax calls more positives
    result = paired_bootstrap(y, [a1, a2], [b1], n_resamples=300)
    mean_a = np.mean([classification_metrics(y, p)["accuracy"] for p in (a1, a2)])
    assert result["metrics"]["accuracy"]["a"] == pytest.approx(mean_a)
    assert result["metrics"]["accuracy"]["difference"] == pytest.approx(
        mean_a - classification_metrics(y, b1)["accuracy"]
    )
    assert result["replicates"] == [2, 1]
    single = paired_bootstrap(y, a1, b1, n_resamples=300)
    assert single["metrics"] == paired_bootstrap(y, [a1], [b1], n_resamples=300)["metrics"]


def test_seeds_default_to_the_seed_and_name_their_init_folders():
    base = {
        "datasets": {"t": {"format": "npz", "root": ".", "file": "t.npz"}},
        "finetune": {"targets": ["t"], "inits": ["scratch"]},
    }
    conf = cfg.validate(base | {"seed": 4})
    assert conf["finetune"]["seeds"] == [4]
    assert cfg.run_name(conf, "scratch", 4) == "scratch"
    conf = cfg.validate(base | {"finetune": {"targets": ["t"], "inits": ["scratch"], "seeds": [3, 8]}})
    assert [cfg.run_name(conf, "scratch", seed) for seed in (3, 8)] == ["scratch", "scratch-seed8"]
    assert "seeds" not in cfg.training_params(conf, "finetune")  # a new seed must not re-run the other seeds
    with pytest.raises(cfg.ConfigError, match="decision.threshold"):
        cfg.validate(base | {"decision": {"threshold": "youden"}})


def _run(
    root: Path, rel: str, y: np.ndarray, proba: np.ndarray, threshold: float | None, seconds: float = 0, **extra
) -> Path:
    folder = root / rel
    folder.mkdir(parents=True)
    if seconds:
        pd.DataFrame({"epoch": [1, 2], "seconds": [seconds / 2, seconds / 2]}).to_csv(folder / "log.csv", index=False)
    table = pd.DataFrame({"image_id": [f"i{k}" for k in range(len(y))], "label": y})
    table["prob_neg"], table["prob_pos"] = proba[:, 0], proba[:, 1]
    table.sample(frac=1, random_state=len(rel)).to_csv(folder / "predictions.csv", index=False)  # any row order
    metrics = classification_metrics(y, proba, threshold) | extra | result_identity(rel)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder / "metrics.json"


def test_benchmark_table_pools_seeds_and_shows_costs_anchors_and_init_comparisons(tmp_path):
    y, _ = _binary(seed=10)
    probas = {}
    paths = []
    for k, run in enumerate(["scratch", "scratch-seed1", "scratch-seed2"]):
        probas[run] = _binary(seed=20 + k, shift=0.15)[1]
        cost = {"num_parameters": 1000, "seconds": 10.0 + k, "val": {"roc_auc": 0.6}}
        paths.append(_run(tmp_path, f"finetune/t/{run}/netA", y, probas[run], None, **cost))
    for k, run in enumerate(["indomain", "indomain-seed1", "indomain-seed2"]):
        probas[run] = _binary(seed=30 + k)[1]
        cost = {"num_parameters": 1000, "seconds": 20.0, "val": {"roc_auc": 0.9}}
        paths.append(_run(tmp_path, f"finetune/t/{run}/netA", y, probas[run], 0.3, **cost))
        paths.append(
            _run(tmp_path, f"classify/t/{run}/fused/logreg", y, probas[run], 0.3, fit_seconds=1.5, val={"roc_auc": 0.8})
        )
    anchors = {"t": [{"model": "Published net", "accuracy": 0.912, "roc_auc": 0.95, "source": "Paper, Table 1"}]}
    report = {"anchors": anchors, "notes": {"t": "Split by patient."}}
    out = tmp_path / "report"
    overlap = tmp_path / "datasets/t/source_overlap.json"
    overlap.parent.mkdir(parents=True)
    checked = {"n_test": len(y), "overlap": {"src": {"count": 0, "examples": []}}}
    overlap.write_text(json.dumps(checked | {"target": str(overlap.with_name("manifest.csv"))}))
    manifest = overlap.with_name("manifest.csv")
    labels = {"train": [0] * 2 + [1] * 6, "val": [0] * 1 + [1] * 3, "test": list(y)}
    rows = [(split, int(label), ["neg", "pos"][label]) for split, ys in labels.items() for label in ys]
    pd.DataFrame(rows, columns=["split", "label", "label_name"]).to_csv(manifest, index=False)
    test_pos = 100 * float(np.mean(y))
    summarize_results(
        paths,
        out / "s.csv",
        out / "m.json",
        out / "s.md",
        n_bootstrap=200,
        out_benchmark_md=out / "b.md",
        out_benchmark_csv=out / "b.csv",
        report=report,
        overlap_paths={"t": overlap},
        manifest_paths={"t": manifest},
    )
    bench = pd.read_csv(out / "b.csv")
    assert len(bench) == 3 and set(bench["seeds"]) == {3}
    scratch = bench[(bench["init"] == "scratch") & (bench["classifier"] == "cnn")].iloc[0]
    kappas = [skm.cohen_kappa_score(y, probas[r].argmax(1)) for r in ("scratch", "scratch-seed1", "scratch-seed2")]
    assert scratch["cohen_kappa"] == pytest.approx(np.mean(kappas), abs=1e-4)
    assert scratch["cohen_kappa_sd"] == pytest.approx(np.std(kappas, ddof=1), abs=1e-4)
    assert scratch["train_seconds"] == pytest.approx(11.0) and scratch["parameters"] == 1000
    indomain = bench[(bench["init"] == "indomain") & (bench["classifier"] == "cnn")].iloc[0]
    runs = ("indomain", "indomain-seed1", "indomain-seed2")
    kappas = [skm.cohen_kappa_score(y, (probas[r][:, 1] >= 0.3).astype(int)) for r in runs]
    assert indomain["cohen_kappa"] == pytest.approx(np.mean(kappas), abs=1e-4)  # each seed's own threshold
    fused = bench[bench["features"] == "fused"].iloc[0]
    assert fused["train_seconds"] == pytest.approx(20.0)  # the fine-tuning of the CNN whose features it uses
    md = (out / "b.md").read_text()
    assert "| Published net | 0.912 | n/a | n/a | n/a | 0.950 | Paper, Table 1 |" in md
    assert "Split by patient." in md and " ± " in md
    assert f"0 of {len(y)} test images are exact copies of an image in the in-domain pretraining sources (src 0)" in md
    assert "| netA | indomain/netA/cnn (3 seeds) | scratch/netA/cnn (3 seeds) |" in md
    splits = f"train 8 (neg 25.0 %, pos 75.0 %); val 4 (25.0 %, 75.0 %); test {len(y)} ({100 - test_pos:.1f} %"
    assert splits in md
    shifted = abs(75.0 - test_pos) > 5
    assert shifted and f"differ by up to {abs(75.0 - test_pos):.1f} points" in md
    comparison = json.loads((out / "m.json").read_text())["t"]["paired_comparison"]
    assert comparison["a"] == "indomain/fused/logreg (3 seeds)" and comparison["replicates"] == [3, 3]
