"""Grad-CAM: probabilities and maps from one pass (with test-time views), localisation, the
shared scale, overlay colours and PNG output."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.constants import LAST_CONV_LAYER, LOGIT_LAYER
from model.image import overlay
from model.network import gradcam
from model.network.architecture import build_classifier
from model.network.tta import tta_views

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
    return np.maximum((maps[0].numpy() * grads.mean(axis=(0, 1))).sum(axis=-1), 0.0)


def _normalised(heatmap: np.ndarray) -> np.ndarray:
    return heatmap / heatmap.max()


def _turned(images: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """[N, H, W, ...] images mirrored left-right (if flip), then turned counter-clockwise."""
    if flip:
        images = images[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(images, turns, axes=(1, 2)))


def test_returns_float32_probabilities_spreads_and_conv_sized_maps(classifier_gradcam):
    result = gradcam.predict_with_gradcam(classifier_gradcam, _random_input(3))
    assert result.p_malignant.shape == result.p_std.shape == (3,)
    assert result.p_malignant.dtype == result.p_std.dtype == np.float32
    assert result.heatmaps.shape == (3, 2, 2) and result.heatmaps.dtype == np.float32
    assert np.all(result.heatmaps >= 0.0)


def test_tta_1_gives_exactly_the_classifier_output_and_no_spread(classifier, classifier_gradcam):
    images = _random_input(4)
    result = gradcam.predict_with_gradcam(classifier_gradcam, images, tta=1)
    expected = np.asarray(classifier(images, training=False)).reshape(-1)
    np.testing.assert_array_equal(result.p_malignant, expected)
    np.testing.assert_array_equal(result.p_std, np.zeros(4, np.float32))


def test_toy_maps_match_textbook_gradcam_for_both_classes(square_detector):
    image = _square_image(5, 17)[0] + np.random.default_rng(4).uniform(0, 0.3, (32, 32, 3))
    for class_index in (0, 1):
        result = gradcam.predict_with_gradcam(square_detector, image[None], class_index=class_index)
        expected = _reference_gradcam(square_detector, image, class_index)
        assert expected.max() > 0
        np.testing.assert_allclose(result.heatmaps[0], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("top", "left"), [(0, 0), (0, 24), (24, 0), (20, 12)])
def test_malignant_map_highlights_the_bright_square(square_detector, top, left):
    result = gradcam.predict_with_gradcam(square_detector, _square_image(top, left))
    assert result.p_malignant[0] > 0.5
    inside = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    inside[top : top + PATCH, left : left + PATCH] = True
    heatmap = _normalised(result.heatmaps[0])
    assert heatmap[inside].mean() > 0.9
    assert heatmap[~inside].mean() < 0.1


def test_benign_map_highlights_everything_but_the_square(square_detector):
    malignant = gradcam.predict_with_gradcam(square_detector, _square_image(0, 0), class_index=1)
    benign = gradcam.predict_with_gradcam(square_detector, _square_image(0, 0), class_index=0)
    benign_map = _normalised(benign.heatmaps[0])
    assert benign_map[:PATCH, :PATCH].mean() < 0.1
    assert benign_map[PATCH:, PATCH:].mean() > 0.9
    assert np.abs(_normalised(malignant.heatmaps[0]) - benign_map).mean() > 0.5


def test_maps_show_the_malignant_evidence_whatever_the_call(square_detector):
    # A small square: some evidence for malignancy, but the image is called benign.
    small = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    small[0, 4:8, 4:8] = 1.0
    images = np.concatenate([_square_image(0, 0), small])
    default = gradcam.predict_with_gradcam(square_detector, images)
    assert default.p_malignant[0] > 0.5 > default.p_malignant[1]
    as_malignant = gradcam.predict_with_gradcam(square_detector, images, class_index=1)
    np.testing.assert_array_equal(default.heatmaps, as_malignant.heatmaps)
    assert _normalised(default.heatmaps[1])[4:8, 4:8].mean() > 0.9  # the benign call's evidence


def test_dead_feature_maps_give_all_zero_heatmaps():
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    bias = np.full(2, -1.0, np.float32)  # ReLU zeroes every activation
    dead = gradcam.gradcam_model(_toy_model(kernel, bias, np.ones((2, 1), np.float32)))
    for class_index, tta in ((0, 1), (1, 1), (1, 8)):
        result = gradcam.predict_with_gradcam(
            dead, _square_image(0, 0), tta=tta, class_index=class_index
        )
        assert np.all(np.isfinite(result.p_malignant))
        np.testing.assert_array_equal(
            result.heatmaps, np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        )
        np.testing.assert_array_equal(overlay.heatmap_peaks(result.heatmaps), [0.0])


def test_flat_inputs_never_give_nan(classifier_gradcam):
    flat = np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 50.0), np.full((32, 32, 3), -1e4)])
    for class_index, tta in ((0, 1), (1, 1), (1, 8)):
        result = gradcam.predict_with_gradcam(
            classifier_gradcam, flat, tta=tta, class_index=class_index
        )
        for values in result:
            assert np.all(np.isfinite(values))
        assert np.all(result.heatmaps >= 0.0)


def test_batch_size_changes_neither_results_nor_tracing(square_detector):
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 1, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    images[:, :PATCH, :PATCH] = 1.0
    together = gradcam.predict_with_gradcam(square_detector, images)
    alone = gradcam.predict_with_gradcam(square_detector, tf.constant(images[1:2]), class_index=1)
    for single, batched in zip(alone, together, strict=True):
        np.testing.assert_allclose(single, batched[1:2], rtol=1e-5, atol=1e-6)
    traced = gradcam._GRADCAM_FUNCTIONS[square_detector][(tta_views(1), gradcam.MALIGNANT)]
    assert traced.experimental_get_tracing_count() == 1


@pytest.fixture(scope="module")
def vgg64_gradcam() -> keras.Model:
    """A random VGG16 at 64 pixels: 4x4 maps, and not invariant to turns or mirrors."""
    keras.utils.set_random_seed(3)
    return gradcam.gradcam_model(build_classifier(64, weights="none", dense_units=8))


def _with_evidence(grad_model: keras.Model, count: int) -> np.ndarray:
    """Random 64-pixel inputs whose tta-8 malignant maps are not empty (the test needs some)."""
    images = np.random.default_rng(11).uniform(-120, 130, (4 * count, 64, 64, 3))
    peaks = overlay.heatmap_peaks(gradcam.predict_with_gradcam(grad_model, images, 8).heatmaps)
    chosen = images[peaks > 0][:count]
    assert len(chosen) == count
    return chosen.astype(np.float32)


@pytest.mark.parametrize(
    ("turns", "flip"), [(1, False), (2, False), (3, False), (0, True), (1, True)]
)
def test_tta_8_gives_turned_and_mirrored_copies_the_same_p_and_registered_maps(
    vgg64_gradcam, turns, flip
):
    images = _with_evidence(vgg64_gradcam, 2)
    original = gradcam.predict_with_gradcam(vgg64_gradcam, images, tta=8)
    moved = gradcam.predict_with_gradcam(vgg64_gradcam, _turned(images, turns, flip), tta=8)
    np.testing.assert_allclose(moved.p_malignant, original.p_malignant, atol=1e-6)
    np.testing.assert_allclose(moved.p_std, original.p_std, atol=1e-6)
    # The map of the turned copy is the original's map, turned the same way.
    expected = _turned(original.heatmaps, turns, flip)
    assert not np.allclose(expected, original.heatmaps), "the maps must not be symmetric"
    np.testing.assert_allclose(moved.heatmaps, expected, rtol=1e-4, atol=1e-6 * expected.max())
    # Without test-time views, the network alone gives another p: the test can tell.
    single = gradcam.predict_with_gradcam(vgg64_gradcam, images, tta=1).p_malignant
    single_moved = gradcam.predict_with_gradcam(
        vgg64_gradcam, _turned(images, turns, flip), tta=1
    ).p_malignant
    assert np.abs(single - single_moved).max() > 1e-4


def test_views_are_averaged_as_mean_logit_spread_and_registered_maps(vgg64_gradcam):
    images = _with_evidence(vgg64_gradcam, 2)
    result = gradcam.predict_with_gradcam(vgg64_gradcam, images, tta=4)
    logits, maps = [], []
    for turns, flip in ((0, False), (0, True), (2, False), (2, True)):
        view = gradcam.predict_with_gradcam(vgg64_gradcam, _turned(images, turns, flip), tta=1)
        logits.append(np.log(view.p_malignant / (1 - view.p_malignant)))
        # Turn the view's map back: undo the turn, then the mirror.
        back = np.rot90(view.heatmaps, -turns, axes=(1, 2))
        maps.append(back[:, :, ::-1] if flip else back)
    np.testing.assert_allclose(
        result.p_malignant, 1 / (1 + np.exp(-np.mean(logits, axis=0))), atol=1e-5
    )
    np.testing.assert_allclose(
        result.p_std, np.std(1 / (1 + np.exp(-np.array(logits))), axis=0), atol=1e-5
    )
    np.testing.assert_allclose(result.heatmaps, np.mean(maps, axis=0), rtol=1e-4, atol=1e-9)
    assert np.all(result.p_std > 0), "the network is not invariant, so its views disagree"


def test_views_need_a_square_input():
    inputs = keras.Input((32, 48, 3))
    maps = keras.layers.Conv2D(2, 3, padding="same", name=LAST_CONV_LAYER)(inputs)
    logit = keras.layers.Dense(1, name=LOGIT_LAYER)(keras.layers.GlobalAveragePooling2D()(maps))
    grad_model = gradcam.gradcam_model(keras.Model(inputs, logit))
    # Mirrors and half turns keep a rectangle; quarter turns do not.
    result = gradcam.predict_with_gradcam(grad_model, np.ones((1, 32, 48, 3)), tta=4)
    assert result.heatmaps.shape == (1, 32, 48)
    with pytest.raises(ValueError, match="square"):
        gradcam.predict_with_gradcam(grad_model, np.zeros((1, 32, 48, 3)), tta=8)


def test_shared_scale_makes_a_benign_call_fainter_than_a_malignant_one(square_detector):
    """On a model whose evidence grows with malignancy, shared scaling keeps that order."""
    strong = _square_image(0, 0)  # a bright square: called malignant
    weak = 0.2 * _square_image(16, 16)  # a dim one: a little evidence, called benign
    result = gradcam.predict_with_gradcam(square_detector, np.concatenate([strong, weak]))
    assert result.p_malignant[0] > 0.5 > result.p_malignant[1]
    scale = gradcam.heatmap_scale(square_detector, [strong, weak])
    assert scale == pytest.approx(
        np.percentile(overlay.heatmap_peaks(result.heatmaps), 95), rel=1e-6
    )
    shared = [overlay.scale_heatmap(heatmap, scale) for heatmap in result.heatmaps]
    assert shared[0].max() > 0.9 and 0 < shared[1].max() < 0.5 * shared[0].max()
    # On its own peak (exports without heatmap_scale) each map reaches full colour.
    own = [overlay.scale_heatmap(heatmap, None) for heatmap in result.heatmaps]
    assert own[0].max() == own[1].max() == 1.0


def test_invalid_class_index_is_rejected(square_detector):
    with pytest.raises(ValueError, match="class_index"):
        gradcam.predict_with_gradcam(square_detector, _square_image(0, 0), class_index=2)


def test_missing_layer_is_named_in_the_error(classifier):
    with pytest.raises(ValueError, match="'block9_conv1'"):
        gradcam.gradcam_model(classifier, last_conv_layer="block9_conv1")
    with pytest.raises(ValueError, match="'score'"):
        gradcam.gradcam_model(classifier, logit_layer="score")
