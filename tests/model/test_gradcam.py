"""Grad-CAM: probabilities and maps from one pass, localisation, overlay colours and PNG output."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model import gradcam
from model.architecture import build_classifier
from model.constants import LAST_CONV_LAYER, LOGIT_LAYER

IMAGE_SIZE = 32
PATCH = 8  # side of the bright square the toy model detects


@pytest.fixture(scope="module")
def classifier() -> keras.Model:
    """A small randomly initialised VGG16 classifier (block5_conv3 maps are 2x2 at 32 pixels)."""
    keras.utils.set_random_seed(0)
    return build_classifier(IMAGE_SIZE, weights="none", dense_units=8)


@pytest.fixture(scope="module")
def classifier_gradcam(classifier) -> keras.Model:
    return gradcam.gradcam_model(classifier)


def _toy_model(kernel: np.ndarray, bias: np.ndarray, dense: np.ndarray) -> keras.Model:
    """Input -> Conv2D named like VGG16's last conv -> global average -> logit -> sigmoid."""
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    maps = keras.layers.Conv2D(
        kernel.shape[-1], 3, padding="same", activation="relu", name=LAST_CONV_LAYER
    )(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(maps)
    logit = keras.layers.Dense(1, name=LOGIT_LAYER)(pooled)
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(logit))
    model.get_layer(LAST_CONV_LAYER).set_weights([kernel, bias])
    model.get_layer(LOGIT_LAYER).set_weights([dense, np.zeros(1, np.float32)])
    return model


@pytest.fixture(scope="module")
def square_detector() -> keras.Model:
    """A toy whose logit rises with bright pixels (channel 0) and falls with dark ones (1).

    With an 8x8 bright square on black, logit = 20 * 64/1024 - 960/1024 > 0 (malignant); a
    black image gives logit -1 (benign). Malignant evidence is the square, benign the rest.
    """
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[1, 1, :, 0] = 1.0 / 3.0  # brightness
    kernel[1, 1, :, 1] = -1.0 / 3.0  # with bias 1: darkness
    bias = np.array([0.0, 1.0], np.float32)
    dense = np.array([[20.0], [-1.0]], np.float32)
    return gradcam.gradcam_model(_toy_model(kernel, bias, dense))


def _square_image(top: int, left: int) -> np.ndarray:
    image = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    image[0, top : top + PATCH, left : left + PATCH] = 1.0
    return image


def _random_input(count: int, seed: int = 1) -> np.ndarray:
    """Random values on the scale of VGG16-normalised input."""
    return np.random.default_rng(seed).uniform(-120, 130, (count, IMAGE_SIZE, IMAGE_SIZE, 3))


def _reference_gradcam(model: keras.Model, image: np.ndarray, class_index: int) -> np.ndarray:
    """Textbook eager Grad-CAM for one image, to check the batched implementation against."""
    grad_model = keras.Model(
        model.input, [model.get_layer(LAST_CONV_LAYER).output, model.get_layer(LOGIT_LAYER).output]
    )
    with tf.GradientTape() as tape:
        maps, logit = grad_model(tf.constant(image[None], tf.float32), training=False)
        score = logit[0, 0] if class_index == 1 else -logit[0, 0]
    grads = tape.gradient(score, maps)[0].numpy()
    cam = np.maximum((maps[0].numpy() * grads.mean(axis=(0, 1))).sum(axis=-1), 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def test_returns_float32_probabilities_and_conv_sized_maps(classifier_gradcam):
    probabilities, heatmaps = gradcam.predict_with_gradcam(classifier_gradcam, _random_input(3))
    assert probabilities.shape == (3,) and probabilities.dtype == np.float32
    assert heatmaps.shape == (3, 2, 2) and heatmaps.dtype == np.float32
    assert np.all((heatmaps >= 0.0) & (heatmaps <= 1.0))


def test_probabilities_equal_the_classifier_output(classifier, classifier_gradcam):
    images = _random_input(4)
    probabilities, _ = gradcam.predict_with_gradcam(classifier_gradcam, images)
    expected = np.asarray(classifier(images, training=False)).reshape(-1)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_toy_maps_match_textbook_gradcam_for_both_classes(square_detector):
    image = _square_image(5, 17)[0] + np.random.default_rng(4).uniform(0, 0.3, (32, 32, 3))
    for class_index in (0, 1):
        _, heatmaps = gradcam.predict_with_gradcam(
            square_detector, image[None], class_index=class_index
        )
        expected = _reference_gradcam(square_detector, image, class_index)
        assert expected.max() == pytest.approx(1.0)
        np.testing.assert_allclose(heatmaps[0], expected, atol=1e-5)


@pytest.mark.parametrize(("top", "left"), [(0, 0), (0, 24), (24, 0), (20, 12)])
def test_malignant_map_highlights_the_bright_square(square_detector, top, left):
    probabilities, heatmaps = gradcam.predict_with_gradcam(
        square_detector, _square_image(top, left)
    )
    assert probabilities[0] > 0.5
    inside = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    inside[top : top + PATCH, left : left + PATCH] = True
    assert heatmaps[0][inside].mean() > 0.9
    assert heatmaps[0][~inside].mean() < 0.1


def test_benign_map_highlights_everything_but_the_square(square_detector):
    _, malignant = gradcam.predict_with_gradcam(square_detector, _square_image(0, 0), class_index=1)
    _, benign = gradcam.predict_with_gradcam(square_detector, _square_image(0, 0), class_index=0)
    assert benign[0, :PATCH, :PATCH].mean() < 0.1
    assert benign[0, PATCH:, PATCH:].mean() > 0.9
    assert np.abs(malignant - benign).mean() > 0.5


def test_default_class_is_the_predicted_one_at_the_given_threshold(square_detector):
    images = np.concatenate([_square_image(0, 0), np.zeros_like(_square_image(0, 0))])
    probabilities, predicted = gradcam.predict_with_gradcam(square_detector, images)
    assert probabilities[0] > 0.5 > probabilities[1]
    _, as_malignant = gradcam.predict_with_gradcam(square_detector, images, class_index=1)
    _, as_benign = gradcam.predict_with_gradcam(square_detector, images, class_index=0)
    np.testing.assert_array_equal(predicted[0], as_malignant[0])
    np.testing.assert_array_equal(predicted[1], as_benign[1])

    # Above the square's probability, the square image is called benign too.
    _, strict = gradcam.predict_with_gradcam(square_detector, images, threshold=0.99)
    np.testing.assert_array_equal(strict, as_benign)


def test_dead_feature_maps_give_all_zero_heatmaps():
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    bias = np.full(2, -1.0, np.float32)  # ReLU zeroes every activation
    dead = gradcam.gradcam_model(_toy_model(kernel, bias, np.ones((2, 1), np.float32)))
    for class_index in (None, 0, 1):
        probabilities, heatmaps = gradcam.predict_with_gradcam(
            dead, _square_image(0, 0), class_index=class_index
        )
        assert np.all(np.isfinite(probabilities))
        np.testing.assert_array_equal(heatmaps, np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.float32))


def test_flat_inputs_never_give_nan(classifier_gradcam):
    flat = np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 50.0), np.full((32, 32, 3), -1e4)])
    for class_index in (None, 0, 1):
        probabilities, heatmaps = gradcam.predict_with_gradcam(
            classifier_gradcam, flat, class_index=class_index
        )
        assert np.all(np.isfinite(probabilities)) and np.all(np.isfinite(heatmaps))
        assert np.all((heatmaps >= 0.0) & (heatmaps <= 1.0))


def test_batch_size_changes_neither_results_nor_tracing(square_detector):
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 1, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    images[:, :PATCH, :PATCH] = 1.0
    together = gradcam.predict_with_gradcam(square_detector, images)
    alone = gradcam.predict_with_gradcam(square_detector, tf.constant(images[1:2]), class_index=1)
    np.testing.assert_allclose(alone[0], together[0][1:2], atol=1e-6)
    np.testing.assert_allclose(alone[1], together[1][1:2], atol=1e-6)
    traced = gradcam._GRADCAM_FUNCTIONS[square_detector]
    assert traced.experimental_get_tracing_count() == 1


def test_invalid_class_index_is_rejected(square_detector):
    with pytest.raises(ValueError, match="class_index"):
        gradcam.predict_with_gradcam(square_detector, _square_image(0, 0), class_index=2)


def test_missing_layer_is_named_in_the_error(classifier):
    with pytest.raises(ValueError, match="'block9_conv1'"):
        gradcam.gradcam_model(classifier, last_conv_layer="block9_conv1")
    with pytest.raises(ValueError, match="'score'"):
        gradcam.gradcam_model(classifier, logit_layer="score")


def test_upsample_keeps_values_and_orientation():
    heatmap = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)  # left column hot
    resized = gradcam.upsample_heatmap(heatmap, width=70, height=46)
    assert resized.shape == (46, 70) and resized.dtype == np.float32
    assert np.all((resized >= 0.0) & (resized <= 1.0))
    np.testing.assert_allclose(resized[:, :5], 1.0, atol=1e-6)
    np.testing.assert_allclose(resized[:, -5:], 0.0, atol=1e-6)
    assert np.all(np.diff(resized[0]) <= 1e-6)  # falls smoothly from left to right


def test_overlay_keeps_image_size_and_dtype():
    image = np.random.default_rng(6).integers(0, 256, (46, 70, 3), dtype=np.uint8)
    overlay = gradcam.overlay_heatmap(image, np.random.default_rng(7).uniform(0, 1, (2, 2)))
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert not np.array_equal(overlay, image)


def test_overlay_with_zero_alpha_is_the_image():
    image = np.random.default_rng(8).integers(0, 256, (46, 70, 3), dtype=np.uint8)
    overlay = gradcam.overlay_heatmap(image, np.ones((2, 2), np.float32), alpha=0.0)
    np.testing.assert_array_equal(overlay, image)


def test_overlay_colours_hot_red_and_cold_blue():
    image = np.full((46, 70, 3), 200, np.uint8)
    heatmap = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    overlay = gradcam.overlay_heatmap(image, heatmap, alpha=1.0).astype(int)
    hot, cold = overlay[:, :5].reshape(-1, 3), overlay[:, -5:].reshape(-1, 3)
    assert np.all(hot[:, 0] > 100) and np.all(hot[:, 0] > hot[:, 1] + 80)
    assert np.all(hot[:, 0] > hot[:, 2] + 80)
    assert np.all(cold[:, 2] > 100) and np.all(cold[:, 2] > cold[:, 0] + 80)

    half = gradcam.overlay_heatmap(image, heatmap, alpha=0.5).astype(int)
    np.testing.assert_allclose(half, (image + overlay) / 2, atol=1)


def test_encode_png_round_trips_pixels():
    image = np.random.default_rng(9).integers(0, 256, (46, 70, 3), dtype=np.uint8)
    for level in (1, 6):
        data = gradcam.encode_png(image, compress_level=level)
        assert data.startswith(b"\x89PNG")
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(decoded), image)
