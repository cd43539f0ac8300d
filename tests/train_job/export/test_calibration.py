"""Training calibrates on validation: T in the card and inside both exported models, threshold
and test metrics from calibrated scores, `--calibration none` exporting the same structure."""

from __future__ import annotations

import csv
import json
import shutil

import keras
import numpy as np
import pytest

from model.constants import CALIBRATED_LOGIT_LAYER, LOGIT_LAYER
from model.evaluation.metrics import choose_threshold
from model.image.preprocessing import normalize, preprocess_image
from model.network.calibration import calibrated_probability, expected_calibration_error, log_loss
from model.network.model_card import load_exported_model, read_model_card
from tests.train_job.test_train import SHARED_RUN, tiny_config
from train_job.train import train

# Two trainings end to end: the slow tier (the rule: tests/model/network/test_calibration.py).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calibrated(synthetic_data_dir, tmp_path_factory):
    """A tiny run with a fitted T: (result, export folder).

    The shared run's validation logits separate the classes, so its T stays 1. Here every
    patient, benign or malignant, also holds one and the same tile: whichever patients the
    split sends to validation, that tile is there under both labels with one logit, so no
    logit separates the classes and a finite T minimises the log-loss.
    """
    root = tmp_path_factory.mktemp("calibrated")
    data_dir = root / "data"
    shutil.copytree(synthetic_data_dir, data_dir)
    shared_tile = sorted(data_dir.rglob("*.png"))[0].read_bytes()
    for folder in sorted({path.parent for path in data_dir.rglob("*.png")}):
        name = sorted(folder.glob("*.png"))[0].name  # SOB_..-<MAG>-<SEQ>.png
        (folder / (name.rsplit("-", 1)[0] + "-999.png")).write_bytes(shared_tile)
    result = train(tiny_config(data_dir, root / "export", **SHARED_RUN))
    assert read_model_card(str(root / "export")).calibration["fitted"]
    return result, root / "export"


def split_inputs(output_dir, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(model inputs, labels) of one split of an export's split.csv, in its order."""
    rows = [r for r in csv.DictReader(open(output_dir / "split.csv")) if r["split"] == split]
    images = np.stack([preprocess_image(open(r["image_path"], "rb").read(), 32) for r in rows])
    return images, np.array([r["label"] == "malignant" for r in rows], int)


def logits_and_output(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The trained logit and the model's own output P(malignant) for each image."""
    logit_model = keras.Model(model.input, model.get_layer(LOGIT_LAYER).output)
    logits = np.asarray(logit_model.predict(images, verbose=0), np.float64).ravel()
    return logits, np.asarray(model.predict(images, verbose=0), np.float64).ravel()


def test_the_card_records_the_temperature_and_the_validation_calibration(calibrated):
    _, output_dir = calibrated
    card = read_model_card(str(output_dir))
    calibration = card.calibration
    assert card.logit_layer == CALIBRATED_LOGIT_LAYER
    assert calibration["method"] == "temperature" and calibration["fitted"]
    assert card.temperature == calibration["temperature"] and card.temperature > 0
    assert card.temperature != 1.0
    assert calibration["bins"] == 15 and "15 equal-width bins" in calibration["binning"]
    images, labels = split_inputs(output_dir, "validation")
    assert calibration["validation_images"] == len(labels)
    model, _ = load_exported_model(str(output_dir))
    logits, _ = logits_and_output(model, images)
    # The recorded before/after figures are those of the validation logits at T = 1 and T.
    assert calibration["log_loss_before"] == pytest.approx(log_loss(labels, logits), rel=1e-4)
    after = log_loss(labels, logits, card.temperature)
    assert calibration["log_loss_after"] == pytest.approx(after, rel=1e-4)
    assert calibration["log_loss_after"] <= calibration["log_loss_before"]
    p = calibrated_probability(logits, card.temperature)
    assert calibration["ece_after"] == pytest.approx(
        expected_calibration_error(labels, p), abs=1e-5
    )
    raw = json.loads((output_dir / "model_card.json").read_text())
    assert raw["temperature"] == card.temperature and "NaN" not in json.dumps(raw)


def test_both_exported_models_output_the_sigmoid_of_the_logit_over_t(calibrated):
    import tensorflow as tf

    _, output_dir = calibrated
    model, card = load_exported_model(str(output_dir))
    assert model.get_layer(CALIBRATED_LOGIT_LAYER).scale == pytest.approx(1.0 / card.temperature)
    pixels = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    logits, output = logits_and_output(model, normalize(pixels))
    expected = calibrated_probability(logits, card.temperature)
    np.testing.assert_allclose(output, expected, atol=1e-6)
    assert not np.allclose(output, calibrated_probability(logits, 1.0), atol=1e-4)
    served = tf.saved_model.load(str(output_dir / "saved_model")).signatures["serving_default"]
    np.testing.assert_allclose(
        served(images=tf.constant(pixels))["p_malignant"], expected, atol=1e-6
    )


def test_the_threshold_and_the_test_metrics_use_calibrated_scores(calibrated):
    _, output_dir = calibrated
    model, card = load_exported_model(str(output_dir))
    images, labels = split_inputs(output_dir, "validation")
    logits, _ = logits_and_output(model, images)
    threshold, _ = choose_threshold(labels, calibrated_probability(logits, card.temperature))
    assert card.threshold == pytest.approx(threshold, abs=1e-6)
    images, labels = split_inputs(output_dir, "test")
    _, test_p = logits_and_output(model, images)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    pooled = metrics["image_level"]["pooled"]
    assert pooled["ece"] == pytest.approx(expected_calibration_error(labels, test_p), abs=1e-6)
    assert pooled["brier"] == pytest.approx(float(np.mean((test_p - labels) ** 2)), abs=1e-6)


def test_gradcam_with_the_cards_logit_layer_scores_like_the_model(calibrated):
    from model.network.gradcam import gradcam_model, predict_with_gradcam

    _, output_dir = calibrated
    model, card = load_exported_model(str(output_dir))
    images, _ = split_inputs(output_dir, "test")
    grad_model = gradcam_model(model, card.last_conv_layer, card.logit_layer)
    calibrated = predict_with_gradcam(grad_model, images)
    np.testing.assert_allclose(
        calibrated.p_malignant, logits_and_output(model, images)[1], atol=1e-6
    )
    # T only divides the class score, so the raw maps are the uncalibrated logit's divided by T
    # (the card's heatmap_scale is taken on these same calibrated maps).
    uncalibrated = predict_with_gradcam(
        gradcam_model(model, card.last_conv_layer, LOGIT_LAYER), images
    )
    assert uncalibrated.heatmaps.max() > 0, "the test needs maps with evidence"
    np.testing.assert_allclose(
        calibrated.heatmaps * card.temperature,
        uncalibrated.heatmaps,
        rtol=1e-4,
        atol=1e-6 * float(uncalibrated.heatmaps.max()),
    )


def test_metrics_plots_and_report_show_calibration(calibrated):
    from PIL import Image

    _, output_dir = calibrated
    metrics = json.loads((output_dir / "metrics.json").read_text())
    for block in [
        metrics["image_level"]["pooled"],
        *metrics["image_level"]["by_magnification"].values(),
    ]:
        assert isinstance(block["ece"], float)
    bins = metrics["reliability"]["pooled"]
    assert sum(b["count"] for b in bins) == metrics["image_level"]["pooled"]["n"]
    with Image.open(output_dir / "plots" / "reliability.png") as plot:
        assert plot.format == "PNG" and min(plot.size) > 200
    html = (output_dir / "report.html").read_text()
    card = read_model_card(str(output_dir))
    assert "plots/reliability.png" in html
    section = html[html.index('<section id="calibration">') :]
    section = section[: section.index("</section>")]
    assert f"T = {card.temperature:.4f}" in section
    for key in ("log_loss_before", "log_loss_after", "ece_before", "ece_after"):
        assert f">{card.calibration[key]:.4f}<" in section, key
    ece = metrics["image_level"]["pooled"]["ece"]
    assert f'data-metric="image_level.pooled.ece">{ece:.4f}<' in html


def test_calibration_none_exports_the_same_structure_with_t_1(synthetic_data_dir, tmp_path):
    train(
        tiny_config(synthetic_data_dir, tmp_path, epochs=1, fine_tune_epochs=0, calibration="none")
    )
    model, card = load_exported_model(str(tmp_path))
    assert card.temperature == 1.0 and card.calibration["method"] == "none"
    assert not card.calibration["fitted"] and card.logit_layer == CALIBRATED_LOGIT_LAYER
    assert model.get_layer(CALIBRATED_LOGIT_LAYER).scale == 1.0
    calibration = card.calibration
    assert calibration["log_loss_after"] == calibration["log_loss_before"] is not None
    images, _ = split_inputs(tmp_path, "test")
    logits, output = logits_and_output(model, images)
    np.testing.assert_allclose(output, calibrated_probability(logits, 1.0), atol=1e-6)
