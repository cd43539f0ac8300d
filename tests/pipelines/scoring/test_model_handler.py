"""The RunInference model handler: training preprocessing, one batched pass, dead letters."""

from __future__ import annotations

import os
import pathlib

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from model.image.preprocessing import decode_image, preprocess_image
from model.network import gradcam
from pipelines.scoring.heatmaps import DEFAULT_HEATMAP_FORMAT, heatmap_name
from pipelines.scoring.keyed_handler import keyed_scoring_handler
from pipelines.scoring.model_handler import GradCamModelHandler, LoadedScorer, read_and_prepare
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
    return GradCamModelHandler(tiny_export).load_model()


def _prepared(paths, keep_original=True):
    return [
        read_and_prepare(path, IMAGE_SIZE, keep_original=keep_original, max_bytes=MAX_BYTES)[1]
        for path in paths
    ]


def _spy_on_gradcam(monkeypatch) -> list[int]:
    """Record the number of images of each Grad-CAM pass."""
    calls = []
    real = gradcam.predict_with_gradcam

    def spy(grad_model, images, tta=1, class_index=gradcam.MALIGNANT):
        calls.append(len(images))
        return real(grad_model, images, tta, class_index)

    monkeypatch.setattr(gradcam, "predict_with_gradcam", spy)
    return calls


def test_a_batch_is_scored_and_explained_by_one_forward_pass(loaded, scoring_inputs, monkeypatch):
    paths = scoring_inputs.labelled[:5]
    batch = _prepared(paths)
    calls = _spy_on_gradcam(monkeypatch)
    handler = GradCamModelHandler("unused", batch_size=len(paths))
    scorer = LoadedScorer(model=_NoPlainCalls(), grad_model=loaded.grad_model, model_id="m")
    results = list(handler.run_inference(batch, scorer))

    assert calls == [len(paths)]
    images = np.stack([item.model_input for item in batch])
    expected = loaded.model.predict_on_batch(images)
    # --tta 1 computes p as before test-time views: the sigmoid of one forward pass's logit.
    before = tf.function(lambda x: tf.sigmoid(tf.reshape(loaded.grad_model(x)[1], [-1])))
    np.testing.assert_array_equal(
        [r.inference.p_malignant for r in results], before(tf.constant(images)).numpy()
    )
    for result, item, p in zip(results, batch, expected.reshape(-1), strict=True):
        assert result.example is item and result.model_id == "m"
        assert result.inference.p_malignant == pytest.approx(float(p), abs=1e-6)
        assert result.inference.p_std == 0.0
        heatmap = result.inference.heatmap
        assert heatmap.ndim == 2 and heatmap.min() >= 0.0
        assert result.inference.heatmap_peak == float(heatmap.max())


def test_with_tta_a_pass_takes_all_views_of_batch_size_views_worth_of_images(
    loaded, scoring_inputs, monkeypatch
):
    paths = scoring_inputs.labelled[:7]
    batch = _prepared(paths)
    alone = [
        gradcam.predict_with_gradcam(loaded.grad_model, item.model_input[None], tta=4)
        for item in batch
    ]
    calls = _spy_on_gradcam(monkeypatch)
    handler = GradCamModelHandler("unused", batch_size=8, tta=4)
    results = list(handler.run_inference(batch, loaded))
    assert calls == [2, 2, 2, 1]  # 8 views a pass, each image's 4 views in one pass
    for result, single in zip(results, alone, strict=True):
        score = result.inference
        assert score.p_malignant == pytest.approx(float(single.p_malignant[0]), abs=1e-6)
        assert score.p_std == pytest.approx(float(single.p_std[0]), abs=1e-6)
        np.testing.assert_allclose(score.heatmap, single.heatmaps[0], rtol=1e-4, atol=1e-9)
    assert all(result.inference.p_std > 0 for result in results)


def test_without_gradcam_the_plain_model_scores_and_no_heatmap_is_made(loaded, scoring_inputs):
    from model.network.tta import logit_model

    batch = _prepared(scoring_inputs.labelled[:3], keep_original=False)
    images = np.stack([item.model_input for item in batch])
    scorer = LoadedScorer(
        model=loaded.model, grad_model=None, model_id="m", logit_model=logit_model(loaded.model)
    )
    for tta in (1, 8):
        handler = GradCamModelHandler("unused", gradcam=False, tta=tta)
        results = list(handler.run_inference(batch, scorer))
        assert [(r.inference.heatmap, r.inference.heatmap_peak) for r in results] == [
            (None, None)
        ] * 3
        explained = GradCamModelHandler("unused", tta=tta).run_inference(batch, loaded)
        for plain, with_gradcam in zip(results, explained, strict=True):
            assert plain.inference.p_malignant == pytest.approx(
                with_gradcam.inference.p_malignant, abs=1e-5
            )
            assert plain.inference.p_std == pytest.approx(with_gradcam.inference.p_std, abs=1e-5)
        if tta == 1:  # exactly the classifier's output, as before test-time views
            expected = loaded.model.predict_on_batch(images).reshape(-1)
            assert [r.inference.p_malignant for r in results] == [float(p) for p in expected]
            assert [r.inference.p_std for r in results] == [0.0] * 3
        else:
            assert all(r.inference.p_std > 0 for r in results)


def _square_tile(path: pathlib.Path) -> np.ndarray:
    """A square crop of a synthetic tile at the model input's size (so it is not resized)."""
    with Image.open(path) as tile:
        return np.asarray(tile.convert("RGB"))[:IMAGE_SIZE, :IMAGE_SIZE]


def test_tta_8_scores_turned_and_mirrored_files_alike_with_registered_heatmaps(
    loaded, scoring_inputs, tmp_path
):
    tile = _square_tile(pathlib.Path(scoring_inputs.labelled[0]))
    assert tile.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE)
    transforms = {
        "as_is": lambda a: a,
        "turned_90": lambda a: np.rot90(a, 1),
        "turned_180": lambda a: np.rot90(a, 2),
        "turned_270": lambda a: np.rot90(a, 3),
        "mirrored": lambda a: a[:, ::-1],
        "flipped": lambda a: a[::-1],
    }
    paths = []
    for name, transform in transforms.items():
        path = tmp_path / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(transform(tile))).save(path)
        paths.append(str(path))
    results = list(GradCamModelHandler("unused", tta=8).run_inference(_prepared(paths), loaded))
    reference = results[0].inference
    assert reference.heatmap_peak > 0, "the test needs a map with some evidence"
    for (name, transform), result in zip(transforms.items(), results, strict=True):
        score = result.inference
        assert score.p_malignant == pytest.approx(reference.p_malignant, abs=1e-5), name
        assert score.p_std == pytest.approx(reference.p_std, abs=1e-5), name
        np.testing.assert_allclose(
            score.heatmap,
            transform(reference.heatmap),
            rtol=1e-3,
            atol=1e-4 * reference.heatmap_peak,
            err_msg=name,
        )
    single = [
        r.inference.p_malignant
        for r in GradCamModelHandler("unused").run_inference(_prepared(paths), loaded)
    ]
    assert max(single) - min(single) > 1e-4, "one view alone is not invariant"


def test_batch_size_flag_sets_fixed_size_batches_of_images_whatever_the_views():
    for tta in (1, 8):
        handler = keyed_scoring_handler(
            "unused", IMAGE_SIZE, 0.5, heatmap_dir="unused", batch_size=7, tta=tta
        )
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
        (overlay,) = heatmap_dir.glob(heatmap_name(path, DEFAULT_HEATMAP_FORMAT))
        with Image.open(overlay) as heatmap:
            assert heatmap.size == Image.open(path).size


def test_scoring_and_training_measure_a_files_quality_identically(scoring_inputs):
    from tests.conftest import BREAKHIS_SAMPLE
    from train_job.data.discovery import inspect_images

    # Every tenth real image when the sample is there; the synthetic inputs (RGB tiles, gray,
    # RGBA and 16-bit PNGs) always.
    real = sorted(str(path) for path in BREAKHIS_SAMPLE.rglob("*.png"))[::10]
    paths = real + scoring_inputs.labelled[:2] + scoring_inputs.other_modes
    unreadable, training = inspect_images(paths, max_bytes=MAX_BYTES)
    assert unreadable == {}
    for path in paths:
        _, prepared = read_and_prepare(path, IMAGE_SIZE, keep_original=False, max_bytes=MAX_BYTES)
        assert prepared.quality == training[path], path


def test_tta_8_overlays_of_a_non_square_image_follow_its_turns_and_mirrors(
    loaded, scoring_inputs, tmp_path
):
    """A 96x64 tile is squashed to the square model input and its map stretched back over it.

    Mirrors and half turns of the file give the same squashed input mirrored or turned, so p and
    the overlay follow exactly; a quarter turn swaps which side is squashed, and PIL's two-pass
    resize rounds differently, so p and the overlay are close but not equal.
    """
    from model.image.overlay import overlay_heatmap, scale_heatmap

    with Image.open(scoring_inputs.labelled[0]) as image:
        tile = np.asarray(image.convert("RGB"))
    assert tile.shape[0] != tile.shape[1]
    transforms = {
        "as_is": lambda a: a,
        "mirrored": lambda a: a[:, ::-1],
        "turned_180": lambda a: np.rot90(a, 2),
        "turned_90": lambda a: np.rot90(a, 1),
    }
    paths = []
    for name, transform in transforms.items():
        path = tmp_path / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(transform(tile))).save(path)
        paths.append(str(path))
    prepared = _prepared(paths)
    results = list(GradCamModelHandler("unused", tta=8).run_inference(prepared, loaded))
    overlays = [
        overlay_heatmap(item.original, scale_heatmap(result.inference.heatmap, None)).astype(int)
        for item, result in zip(prepared, results, strict=True)
    ]
    assert np.abs(overlays[0] - tile).max() > 50, "the test needs a visible map"
    for (name, transform), result, overlay in zip(
        transforms.items(), results, overlays, strict=True
    ):
        expected = transform(overlays[0])
        assert overlay.shape == expected.shape, name
        difference = np.abs(overlay - expected)
        p_difference = abs(result.inference.p_malignant - results[0].inference.p_malignant)
        if name == "turned_90":
            assert p_difference < 0.02 and difference.mean() < 3, name
        else:
            assert p_difference < 1e-6 and difference.max() <= 1, name
