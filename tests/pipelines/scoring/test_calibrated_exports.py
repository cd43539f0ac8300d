"""The scorer serves what the export's network computes: calibrated scores from an export with
T built in, and the plain sigmoid(logit) from an export made before calibration existed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.constants import LOGIT_LAYER
from model.network.calibration import calibrated_probability
from pipelines.launch.model_checks import check_model_export
from pipelines.scoring.model_handler import GradCamModelHandler, read_and_prepare
from tests.pipelines.conftest import IMAGE_SIZE, load_inputs, run_scoring, spread_logits
from tests.pipelines.helpers import prediction_rows, read_json, sklearn_ece

TEMPERATURE = 2.5


def _trained_like_model(images: np.ndarray):
    """A tiny classifier with spread-out logits on `images` (as if trained)."""
    import keras

    from model.network.architecture import build_classifier

    keras.utils.set_random_seed(1)
    model = build_classifier(IMAGE_SIZE, weights="none", dense_units=16)
    spread_logits(model, images, spread=3.0)
    return model


def _logits(model, images: np.ndarray) -> np.ndarray:
    import keras

    logit_model = keras.Model(model.input, model.get_layer(LOGIT_LAYER).output)
    return np.asarray(logit_model.predict(images, verbose=0), np.float64).ravel()


@pytest.fixture(scope="module")
def calibrated_export(tmp_path_factory, scoring_inputs):
    """An export whose network divides its logit by TEMPERATURE; (folder, logits by path)."""
    from model.network.architecture import with_temperature
    from model.network.model_card import ModelCard
    from train_job.export.files import write_export

    images = load_inputs(scoring_inputs.labelled)
    model = _trained_like_model(images)
    export_dir = tmp_path_factory.mktemp("calibrated_export")
    card = ModelCard(model_id="calibrated", image_size=IMAGE_SIZE, threshold=0.5)
    card.temperature = TEMPERATURE
    write_export(with_temperature(model, TEMPERATURE), card, str(export_dir))
    return str(export_dir), dict(zip(scoring_inputs.labelled, _logits(model, images), strict=True))


@pytest.fixture(scope="module")
def old_style_export(tmp_path_factory, scoring_inputs):
    """An export as made before calibration: logit -> sigmoid, a card without `temperature`
    whose Grad-CAM layer is `logit`; (folder, logits by path)."""
    import keras

    from model.constants import PROBABILITY_LAYER
    from model.network.model_card import ModelCard
    from train_job.export.files import write_export

    images = load_inputs(scoring_inputs.labelled)
    model = _trained_like_model(images)
    probability = keras.layers.Activation("sigmoid", dtype="float32", name=PROBABILITY_LAYER)(
        model.get_layer(LOGIT_LAYER).output
    )
    old_model = keras.Model(model.input, probability, name=model.name)
    export_dir = tmp_path_factory.mktemp("old_style_export")
    card = ModelCard(model_id="old", image_size=IMAGE_SIZE, threshold=0.5, logit_layer=LOGIT_LAYER)
    write_export(old_model, card, str(export_dir))
    values = json.loads((export_dir / "model_card.json").read_text())
    for field in ("temperature", "calibration"):
        del values[field]
    (export_dir / "model_card.json").write_text(json.dumps(values))
    return str(export_dir), dict(zip(scoring_inputs.labelled, _logits(model, images), strict=True))


@pytest.mark.parametrize("gradcam", [True, False])
def test_a_calibrated_export_scores_sigmoid_of_logit_over_t(
    calibrated_export, scoring_inputs, gradcam
):
    export_dir, logits = calibrated_export
    card = check_model_export(export_dir)
    assert card.temperature == TEMPERATURE
    handler = GradCamModelHandler(export_dir, gradcam=gradcam)
    paths = scoring_inputs.labelled
    batch = [read_and_prepare(p, IMAGE_SIZE, gradcam, max_bytes=2**20)[1] for p in paths]
    results = handler.run_inference(batch, handler.load_model())
    scores = np.array([result.inference.p_malignant for result in results])
    expected = calibrated_probability([logits[p] for p in paths], TEMPERATURE)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert not np.allclose(
        scores, calibrated_probability([logits[p] for p in paths], 1.0), atol=1e-3
    )


@pytest.mark.slow
def test_an_export_made_before_calibration_still_scores_with_t_1(
    old_style_export, scoring_inputs, tmp_path
):
    export_dir, logits = old_style_export
    card = check_model_export(export_dir)
    assert card.temperature == 1.0 and card.logit_layer == LOGIT_LAYER
    output_dir = tmp_path / "scores"
    run_scoring(
        [
            "--input",
            *scoring_inputs.labelled,
            "--model_dir",
            export_dir,
            "--output_dir",
            str(output_dir),
        ]
    )
    rows = {row["image_path"]: row for row in prediction_rows(str(output_dir))}
    assert sorted(rows) == sorted(scoring_inputs.labelled)
    paths = scoring_inputs.labelled
    scores = np.array([float(rows[p]["p_malignant"]) for p in paths])
    np.testing.assert_allclose(
        scores, calibrated_probability([logits[p] for p in paths], 1.0), atol=2e-6
    )
    assert all(rows[p]["heatmap_path"] for p in paths)
    metrics = read_json(str(output_dir / "metrics.json"))
    labels = [int(rows[p]["true_label"] == "malignant") for p in paths]
    assert metrics["image_level"]["pooled"]["ece"] == pytest.approx(
        sklearn_ece(labels, scores), abs=1e-9
    )
    assert (output_dir / "plots" / "reliability.png").is_file()
