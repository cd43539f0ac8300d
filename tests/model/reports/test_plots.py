"""Tests for model.reports.plots: every plot is a decodable PNG that depends on its input."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from model.network.calibration import ReliabilityTally
from model.reports.plots import (
    EVALUATION_PLOTS,
    RELIABILITY_PLOT,
    confusion_matrix_png,
    exact_curves,
    pr_png,
    reliability_png,
    roc_png,
    training_curves_png,
)
from tests.model.evaluation.test_metrics import summary_of

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(png: bytes) -> Image.Image:
    assert png.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    assert image.width >= 200 and image.height >= 200
    return image


def _scores(seed: int, separation: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    return y, np.clip(rng.normal(0.5 + separation * (y - 0.5), 0.2), 0.0, 1.0)


def test_roc_png_is_a_png_that_changes_with_the_curves():
    good = exact_curves(*_scores(0, 0.6))["roc"]
    poor = exact_curves(*_scores(0, 0.1))["roc"]
    first = roc_png({"pooled": (*good, 0.95), "40X": (*poor, None)})
    second = roc_png({"pooled": (*poor, 0.55), "40X": (*good, 0.9)})
    _decode(first)
    _decode(second)
    assert first != second


def test_roc_png_draws_a_curve_that_is_empty_for_one_class():
    png = roc_png({"pooled": (np.array([]), np.array([]), None)}, title="one class")
    _decode(png)


def test_pr_png_is_a_png_that_changes_with_prevalence_and_curves():
    recall, precision = exact_curves(*_scores(1, 0.6))["pr"]
    with_line = pr_png({"pooled": (recall, precision, 0.9)}, prevalence=0.5)
    without_line = pr_png({"pooled": (recall, precision, 0.9)})
    other_curve = pr_png({"pooled": (*exact_curves(*_scores(1, 0.1))["pr"], 0.6)}, prevalence=0.5)
    for png in (with_line, without_line, other_curve):
        _decode(png)
    assert len({with_line, without_line, other_curve}) == 3


def test_plots_accept_streaming_curves():
    y, p = _scores(2, 0.5)
    summary = summary_of(0.5, y, p)
    metrics = summary.metrics()
    _decode(roc_png({"pooled": (*summary.roc_curve(), metrics["roc_auc"])}))
    _decode(pr_png({"pooled": (*summary.pr_curve(), metrics["pr_auc"])}, prevalence=y.mean()))


def test_confusion_matrix_png_changes_with_counts_and_tolerates_an_empty_row():
    first = confusion_matrix_png([[50, 5], [10, 80]])
    second = confusion_matrix_png([[5, 50], [80, 10]])
    empty_row = confusion_matrix_png([[0, 0], [3, 7]], title="no benign images")
    for png in (first, second, empty_row):
        _decode(png)
    assert first != second


def test_confusion_matrix_png_rejects_a_matrix_of_the_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix_png([[1, 2, 3], [4, 5, 6]])


def test_training_curves_png_marks_fine_tuning_and_ignores_non_list_keys():
    history = {
        "loss": [0.7, 0.5, 0.4, 0.3],
        "val_loss": [0.72, 0.6, 0.5, 0.45],
        "auc": [0.6, 0.75, 0.85, 0.9],
        "val_auc": [0.58, 0.7, 0.8, 0.82],
        "accuracy": [0.55, 0.7, 0.8, 0.85],
        "val_accuracy": [0.5, 0.66, 0.75, 0.8],
        "phase_boundary": 2,
        "learning_rate_note": "not a series",
    }
    with_boundary = training_curves_png(history)
    without_boundary = training_curves_png(
        {k: v for k, v in history.items() if k != "phase_boundary"}
    )
    _decode(with_boundary)
    _decode(without_boundary)
    assert with_boundary != without_boundary


def test_training_curves_png_handles_missing_panels():
    _decode(training_curves_png({"loss": [1.0, 0.8]}))


def test_plots_close_their_figures():
    before = len(plt.get_fignums())
    roc_png({"pooled": (np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0.5)})
    confusion_matrix_png([[1, 0], [0, 1]])
    training_curves_png({"loss": [1.0]})
    assert len(plt.get_fignums()) == before


def test_exact_curves_have_the_shapes_the_plots_expect():
    y, p = _scores(3, 0.5)
    curves = exact_curves(y, p)
    fpr, tpr = curves["roc"]
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    recall, precision = curves["pr"]
    assert recall[0] == 0.0 and precision[0] == 1.0 and recall[-1] == 1.0
    assert np.all(np.diff(recall) >= 0)
    assert precision[-1] == pytest.approx(y.mean())  # the lowest cut predicts all malignant


def test_exact_curves_are_empty_when_undefined():
    only_benign = exact_curves([0, 0, 0], [0.1, 0.5, 0.9])
    assert only_benign["roc"][0].size == 0 and only_benign["pr"][0].size == 0
    only_malignant = exact_curves([1, 1], [0.1, 0.9])
    assert only_malignant["roc"][0].size == 0 and only_malignant["pr"][0].size > 0


def test_reliability_png_is_a_png_that_changes_with_the_bins():
    y, p = _scores(2, 0.6)
    calibrated = ReliabilityTally.from_scores(y, p)
    overconfident = ReliabilityTally.from_scores(y, np.where(p > 0.5, 0.99, 0.01))
    first = reliability_png(calibrated.bins(), calibrated.ece())
    second = reliability_png(overconfident.bins(), overconfident.ece())
    _decode(first)
    _decode(second)
    assert first != second
    _decode(reliability_png(ReliabilityTally().bins(), None, title="no images"))


def test_both_jobs_write_and_show_the_reliability_plot_with_the_others():
    assert EVALUATION_PLOTS["Reliability"] == RELIABILITY_PLOT == "plots/reliability.png"
