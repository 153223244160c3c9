"""Calibration: temperature scaling fitted on one sample helps on another; ECE, Brier and bins on known cases."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from medxfer.calibration import (
    brier_score,
    calibration_report,
    choose_recalibration,
    expected_calibration_error,
    fit_temperature,
    recalibrated,
    reliability_bins,
    scaled_proba,
)


def _cases(n: int, seed: int, overconfidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary cases whose true P(class 1) is sigmoid(z); the model's logits are `overconfidence` times too large."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    logits = np.stack([np.zeros(n), overconfidence * z], axis=1)
    return logits, labels


def test_temperature_fitted_on_val_undoes_overconfidence_on_test():
    val_logits, val_labels = _cases(3000, 0, overconfidence=4.0)
    test_logits, test_labels = _cases(3000, 1, overconfidence=4.0)
    temperature = fit_temperature(val_logits, val_labels)
    assert temperature == pytest.approx(4.0, rel=0.15)
    report = calibration_report(test_labels, test_logits, temperature)
    assert report["after"]["ece"] < 0.5 * report["before"]["ece"]
    assert report["after"]["brier"] < report["before"]["brier"]
    before, after = scaled_proba(test_logits), scaled_proba(test_logits, temperature)
    assert np.array_equal(before.argmax(1), after.argmax(1))  # decisions by argmax and the ranking stay
    assert roc_auc_score(test_labels, before[:, 1]) == pytest.approx(roc_auc_score(test_labels, after[:, 1]))


def test_well_calibrated_logits_keep_a_temperature_near_one():
    logits, labels = _cases(4000, 2, overconfidence=1.0)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.12)
    assert expected_calibration_error(labels, scaled_proba(logits)) < 0.03


def test_nothing_to_fit_on_leaves_the_logits_alone():
    logits = np.array([[0.0, 3.0], [0.0, 1.0]])
    assert fit_temperature(logits, np.array([1, 1])) == 1.0
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 1.0
    assert calibration_report(np.zeros(0, dtype=int), np.zeros((0, 2)), 1.0)["before"]["ece"] is None


def test_ece_brier_and_bins_on_known_cases():
    proba = np.array([[0.1, 0.9], [0.1, 0.9], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 0])
    # confidence 0.9 with accuracy 0.5 (2 cases), confidence 0.6 with accuracy 1.0 (2 cases)
    assert expected_calibration_error(labels, proba) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert brier_score(labels, proba) == pytest.approx(2 * brier_score_loss(labels, proba[:, 1]))
    bins = reliability_bins(labels, proba, n_bins=10)
    assert sum(b["n"] for b in bins) == 4 and [b["n"] for b in bins if b["n"]] == [2, 2]
    assert bins[8]["confidence"] == pytest.approx(0.9) and bins[8]["accuracy"] == 0.5  # (0.8, 0.9]
    three = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    assert brier_score(np.array([0, 2]), three) == pytest.approx(
        ((0.3**2 + 0.2**2 + 0.1**2) + (0.2**2 + 0.5**2 + 0.7**2)) / 2
    )


def test_recalibration_is_chosen_out_of_fold_and_fixes_a_distorted_classifier():
    """Out-of-fold probabilities pushed towards 0 and 1 (p^3 odds): Platt or isotonic is chosen and lowers the
    Brier score on fresh cases; calibrated probabilities are left as they are."""
    rng = np.random.default_rng(0)

    def sample(n):
        truth = rng.uniform(0.05, 0.95, n)
        labels = (rng.uniform(size=n) < truth).astype(int)
        odds = (truth / (1 - truth)) ** 3
        distorted = odds / (1 + odds)
        return labels, np.column_stack([1 - distorted, distorted]), np.column_stack([1 - truth, truth])

    labels, oof, _ = sample(600)
    mapping, report = choose_recalibration(labels, oof, seed=0)
    assert report["method"] in ("platt", "isotonic") and mapping["method"] == report["method"]
    assert report["cv_brier"][report["method"]] < report["cv_brier"]["none"]
    test_labels, test_proba, _ = sample(2000)
    assert brier_score(test_labels, recalibrated(mapping, test_proba)) < brier_score(test_labels, test_proba) - 0.01
    if mapping["method"] == "platt":
        assert mapping["slope"] == pytest.approx(1 / 3, rel=0.2)  # undoes the cube of the odds

    labels, _, honest = sample(600)
    mapping, _ = choose_recalibration(labels, honest, seed=0)
    test_labels, _, test_honest = sample(2000)
    harm = brier_score(test_labels, recalibrated(mapping, test_honest)) - brier_score(test_labels, test_honest)
    assert harm < 0.005  # whatever it chose for calibrated probabilities costs next to nothing on fresh cases
    assert choose_recalibration(labels, np.full((600, 3), 1 / 3), seed=0)[0] is None  # multi-class: left alone
