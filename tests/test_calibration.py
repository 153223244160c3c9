"""Calibration: temperature scaling fitted on one sample helps on another; ECE, Brier and bins on known cases."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from medxfer.calibration import (
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
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
