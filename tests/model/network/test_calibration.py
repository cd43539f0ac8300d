"""Temperature scaling, ECE and the reliability bins: fitted, measured and guarded."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss as sklearn_log_loss

from model.network.calibration import (
    CALIBRATION_BINS,
    ReliabilityTally,
    calibrated_probability,
    calibration_bin,
    expected_calibration_error,
    fit_temperature,
    log_loss,
)


def simulated(temperature: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, logits): labels drawn from sigmoid(z), the model reporting z x temperature.

    Dividing the logits by `temperature` gives back calibrated probabilities, so a fit should
    recover it; above 1 the model is overconfident.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    return y, z * temperature


@pytest.mark.parametrize("temperature", [0.4, 1.0, 2.5, 6.0])
def test_the_fitted_temperature_recovers_the_one_that_generated_the_logits(temperature):
    y, logits = simulated(temperature, n=20_000, seed=int(temperature * 10))
    fit = fit_temperature(y, logits)
    assert fit.fitted and fit.method == "temperature" and fit.note == ""
    assert fit.temperature == pytest.approx(temperature, rel=0.05)
    assert fit.log_loss_after <= fit.log_loss_before


def test_calibration_fitted_on_validation_lowers_the_test_ece_of_an_overconfident_model():
    validation_y, validation_logits = simulated(3.0, n=2_000, seed=1)
    test_y, test_logits = simulated(3.0, n=2_000, seed=2)
    fit = fit_temperature(validation_y, validation_logits)
    before = expected_calibration_error(test_y, calibrated_probability(test_logits, 1.0))
    after = expected_calibration_error(test_y, calibrated_probability(test_logits, fit.temperature))
    assert before > 0.1  # overconfident: confident calls are right far less often than claimed
    assert after < before / 3
    assert fit.ece_after < fit.ece_before  # on validation too, as the card records


def test_log_loss_from_logits_equals_sklearn_on_probabilities():
    y, logits = simulated(1.5, n=500, seed=3)
    for temperature in (0.5, 1.0, 3.0):
        p = calibrated_probability(logits, temperature)
        assert log_loss(y, logits, temperature) == pytest.approx(sklearn_log_loss(y, p), rel=1e-9)
    # Logits far beyond float precision of p stay finite.
    assert np.isfinite(log_loss([0, 1], [800.0, -800.0]))


def test_ece_matches_hand_computed_values():
    # p 0.05 (bin 0) and 0.95 (bin 14), each bin half malignant: |0.05 - 0.5| = |0.95 - 0.5|.
    assert expected_calibration_error([0, 1, 0, 1], [0.05, 0.05, 0.95, 0.95]) == pytest.approx(0.45)
    # Bin 0: 0.05 vs 0 benign; bin 7 (7/15 < 0.5 <= 8/15): 0.5 vs 1 of 2; bin 14: 0.95 vs 1.
    # (1 x 0.05 + 2 x 0 + 1 x 0.05) / 4.
    assert expected_calibration_error([0, 0, 1, 1], [0.05, 0.5, 0.5, 0.95]) == pytest.approx(0.025)
    assert expected_calibration_error([], []) is None


def test_bins_are_right_closed_like_sklearns_calibration_curve():
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(size=400), edges, [0.0, 1.0, 0.5]])  # every edge itself
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert calibration_bin(0.0) == 0 and calibration_bin(1.0) == CALIBRATION_BINS - 1
    assert calibration_bin(edges[1]) == 0 and calibration_bin(np.nextafter(edges[1], 1)) == 1
    fraction, mean_p = calibration_curve(y, p, n_bins=CALIBRATION_BINS, strategy="uniform")
    bins = ReliabilityTally.from_scores(y, p).bins()
    filled = [b for b in bins if b["count"]]
    np.testing.assert_allclose([b["fraction_malignant"] for b in filled], fraction, rtol=1e-12)
    np.testing.assert_allclose([b["mean_p"] for b in filled], mean_p, rtol=1e-12)
    assert sum(b["count"] for b in bins) == p.size
    assert [(b["lower"], b["upper"]) for b in bins] == list(zip(edges[:-1], edges[1:], strict=True))
    empty = [b for b in bins if not b["count"]]
    assert all(b["mean_p"] is None and b["fraction_malignant"] is None for b in empty)


def test_a_tally_added_image_by_image_and_merged_equals_the_one_from_arrays():
    rng = np.random.default_rng(5)
    p = np.round(rng.uniform(size=300), 6)
    y = (rng.uniform(size=300) < p**2).astype(int)
    parts = [ReliabilityTally() for _ in range(3)]
    for index, (label, score) in enumerate(zip(y, p, strict=True)):
        parts[index % 3].add(int(label), float(score))
    merged = parts[0].merge(parts[1]).merge(parts[2])
    exact = ReliabilityTally.from_scores(y, p)
    np.testing.assert_array_equal(merged.counts, exact.counts)
    np.testing.assert_array_equal(merged.positives, exact.positives)
    np.testing.assert_allclose(merged.p_sums, exact.p_sums, rtol=1e-12)
    assert merged.ece() == pytest.approx(exact.ece(), abs=1e-12)


def test_a_tally_refuses_scores_outside_0_1_and_bad_labels():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReliabilityTally().add(1, 1.5)
    with pytest.raises(ValueError, match="label 0/1"):
        ReliabilityTally().add(2, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReliabilityTally.from_scores([0], [-0.1])


@pytest.mark.parametrize(
    ("labels", "logits", "reason"),
    [
        ([], [], "no images"),
        ([1, 1, 1], [0.5, -2.0, 3.0], "only malignant images"),
        ([0, 0], [0.5, -2.0], "only benign images"),
        ([0, 1, 1, 0], [0.7, 0.7, 0.7, 0.7], "same logit"),
        ([0, 0, 1, 1], [-3.0, -0.1, 0.2, 5.0], "separate the classes perfectly"),
    ],
)
def test_a_degenerate_validation_split_keeps_t_at_1_with_a_warning(labels, logits, reason, caplog):
    with caplog.at_level(logging.WARNING, logger="model.network.calibration"):
        fit = fit_temperature(labels, logits)
    assert fit.temperature == 1.0 and not fit.fitted and reason in fit.note
    assert any(reason in record.getMessage() for record in caplog.records)
    entry = json.loads(json.dumps(fit.card_entry(), allow_nan=False))  # never NaN in the card
    assert entry["temperature"] == 1.0 and entry["bins"] == CALIBRATION_BINS
    if labels:
        assert entry["log_loss_after"] == entry["log_loss_before"]
    else:
        assert entry["log_loss_before"] is None and entry["ece_before"] is None


def test_a_tiny_validation_split_is_fitted_with_a_caution(caplog):
    labels, logits = [0, 1, 0, 1, 1], [-2.0, 1.5, 0.8, -0.3, 2.5]
    with caplog.at_level(logging.WARNING, logger="model.network.calibration"):
        fit = fit_temperature(labels, logits)
    assert fit.fitted and fit.temperature != 1.0
    assert "only 5 validation images" in fit.note
    assert any("uncertain" in record.getMessage() for record in caplog.records)


def test_calibration_none_keeps_t_at_1_and_still_measures_validation():
    y, logits = simulated(3.0, n=300, seed=6)
    fit = fit_temperature(y, logits, "none")
    assert fit.temperature == 1.0 and not fit.fitted and fit.method == "none"
    assert fit.ece_before == fit.ece_after > 0.05
    with pytest.raises(ValueError, match="calibration method"):
        fit_temperature(y, logits, "platt")


def test_non_finite_logits_are_refused():
    with pytest.raises(ValueError, match="NaN or infinity"):
        fit_temperature([0, 1], [0.5, float("nan")])
