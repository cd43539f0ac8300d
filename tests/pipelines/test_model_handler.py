"""The RunInference model handler: training preprocessing, one batched pass, dead letters."""

from __future__ import annotations

import os
import pathlib

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from model import gradcam
from model.preprocessing import decode_image, preprocess_image
from pipelines.heatmaps import heatmap_name
from pipelines.model_handler import (
    GradCamModelHandler,
    LoadedScorer,
    keyed_scoring_handler,
    read_and_prepare,
)
from tests.pipelines.conftest import IMAGE_SIZE

MAX_BYTES = 2**20


def test_prepare_image_gives_the_training_tensor_and_keeps_the_decoded_original(
    scoring_inputs,
):
    for path in scoring_inputs.labelled[:1] + scoring_inputs.other_modes:
        data = pathlib.Path(path).read_bytes()
        key, prepared = read_and_prepare(path, IMAGE_SIZE, keep_original=True, max_bytes=MAX_BYTES)
        assert key == path
        assert prepared.model_input.dtype == np.float32
        np.testing.assert_array_equal(prepared.model_input, preprocess_image(data, IMAGE_SIZE))
        np.testing.assert_array_equal(prepared.original, decode_image(data))
    _, without = read_and_prepare(
        scoring_inputs.labelled[0], IMAGE_SIZE, keep_original=False, max_bytes=MAX_BYTES
    )
    assert without.original is None


class _NoPlainCalls:
    """Stands in for the classifier where a second forward pass would be a bug."""

    def __getattr__(self, name):
        raise AssertionError(f"the classifier was used directly ({name}) besides Grad-CAM")


@pytest.fixture(scope="module")
def loaded(tiny_export):
    """The export loaded the way a worker loads it."""
    return GradCamModelHandler(tiny_export, threshold=0.5).load_model()


def test_a_batch_is_scored_and_explained_by_one_forward_pass(loaded, scoring_inputs, monkeypatch):
    paths = scoring_inputs.labelled[:5]
    batch = [
        read_and_prepare(path, IMAGE_SIZE, keep_original=True, max_bytes=MAX_BYTES)[1]
        for path in paths
    ]
    calls = []
    real = gradcam.predict_with_gradcam

    def spy(grad_model, images, threshold=0.5, class_index=None):
        calls.append(len(images))
        return real(grad_model, images, threshold, class_index)

    monkeypatch.setattr(gradcam, "predict_with_gradcam", spy)
    handler = GradCamModelHandler("unused", threshold=0.5)
    scorer = LoadedScorer(model=_NoPlainCalls(), grad_model=loaded.grad_model, model_id="m")
    results = list(handler.run_inference(batch, scorer))

    assert calls == [len(paths)]
    expected = loaded.model.predict(np.stack([item.model_input for item in batch]), verbose=0)
    for result, item, p in zip(results, batch, expected.reshape(-1), strict=True):
        assert result.example is item and result.model_id == "m"
        assert result.inference.p_malignant == pytest.approx(float(p), abs=1e-6)
        heatmap = result.inference.heatmap
        assert heatmap.ndim == 2 and heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def test_without_gradcam_the_plain_model_scores_and_no_heatmap_is_made(loaded, scoring_inputs):
    batch = [
        read_and_prepare(p, IMAGE_SIZE, keep_original=False, max_bytes=MAX_BYTES)[1]
        for p in scoring_inputs.labelled[:3]
    ]
    handler = GradCamModelHandler("unused", threshold=0.5, gradcam=False)
    scorer = LoadedScorer(model=loaded.model, grad_model=None, model_id="m")
    results = list(handler.run_inference(batch, scorer))
    assert [r.inference.heatmap for r in results] == [None] * 3
    with_gradcam = GradCamModelHandler("unused", threshold=0.5).run_inference(batch, loaded)
    for plain, explained in zip(results, with_gradcam, strict=True):
        assert plain.inference.p_malignant == pytest.approx(
            explained.inference.p_malignant, abs=1e-5
        )


def test_batch_size_flag_sets_fixed_size_batches():
    handler = keyed_scoring_handler("unused", IMAGE_SIZE, 0.5, heatmap_dir="unused", batch_size=7)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 7, "max_batch_size": 7}


def test_run_inference_keys_rows_by_path_and_routes_unreadable_files(
    tiny_export, scoring_inputs, tmp_path
):
    good = scoring_inputs.labelled[:3]
    bad = scoring_inputs.broken
    heatmap_dir = tmp_path / "heatmaps"
    handler = keyed_scoring_handler(
        tiny_export, IMAGE_SIZE, 0.5, heatmap_dir=str(heatmap_dir), gradcam=True, batch_size=2
    )
    with test_pipeline.TestPipeline() as pipeline:
        paths = pipeline | beam.Create(good + bad)
        scored, failures = paths | RunInference(handler).with_exception_handling()
        summary = scored | "Summarise" >> beam.Map(
            lambda row: (
                row.image_path,
                os.path.dirname(row.heatmap_path),
                0.0 <= row.p_malignant <= 1.0,
            )
        )
        assert_that(
            summary, equal_to([(path, str(heatmap_dir), True) for path in good]), label="Scored"
        )
        failed = failures.failed_preprocessing[0] | "FailedPaths" >> beam.Map(
            lambda failure: (failure[0], failure[1][0].__name__)
        )
        assert_that(failed, equal_to([(path, "ImageDecodeError") for path in bad]), label="Failed")
    for path in good:  # each overlay at its original's size
        (overlay,) = heatmap_dir.glob(heatmap_name(path))
        with Image.open(overlay) as heatmap:
            assert heatmap.size == Image.open(path).size


def test_scoring_and_training_measure_a_files_quality_identically(scoring_inputs):
    from tests.conftest import BREAKHIS_SAMPLE
    from train_job.data import inspect_images

    # Every tenth real image when the sample is there; the synthetic inputs (RGB tiles, gray,
    # RGBA and 16-bit PNGs) always.
    real = sorted(str(path) for path in BREAKHIS_SAMPLE.rglob("*.png"))[::10]
    paths = real + scoring_inputs.labelled[:2] + scoring_inputs.other_modes
    unreadable, training = inspect_images(paths, max_bytes=MAX_BYTES)
    assert unreadable == {}
    for path in paths:
        _, prepared = read_and_prepare(path, IMAGE_SIZE, keep_original=False, max_bytes=MAX_BYTES)
        assert prepared.quality == training[path], path
