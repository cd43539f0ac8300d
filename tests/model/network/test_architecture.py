"""The classifier's shape, head and layer names, and how it gets its VGG16 weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.constants import CALIBRATED_LOGIT_LAYER, LAST_CONV_LAYER, LOGIT_LAYER
from model.network.architecture import (
    WeightsUnavailableError,
    build_classifier,
    conv_block_names,
    with_temperature,
)

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def classifier() -> keras.Model:
    """A small randomly initialised classifier shared by the read-only tests."""
    keras.utils.set_random_seed(0)
    return build_classifier(IMAGE_SIZE, weights="none", dense_units=8)


def _images(count: int) -> np.ndarray:
    """Random values on the scale of VGG16-normalised input."""
    return np.random.default_rng(1).uniform(-120, 130, (count, IMAGE_SIZE, IMAGE_SIZE, 3))


def test_output_is_one_probability_per_image(classifier):
    probabilities = np.asarray(classifier(_images(3), training=False))
    assert probabilities.shape == (3, 1)
    assert probabilities.dtype == np.float32
    assert np.all((probabilities >= 0.0) & (probabilities <= 1.0))


def test_output_is_sigmoid_of_the_reachable_logit_layer(classifier):
    assert classifier.get_layer(LAST_CONV_LAYER).output.shape[1:] == (2, 2, 512)
    logit_model = keras.Model(classifier.input, classifier.get_layer(LOGIT_LAYER).output)
    images = _images(4)
    logits = np.asarray(logit_model(images, training=False), dtype=np.float64)
    probabilities = np.asarray(classifier(images, training=False))
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-logits)), probabilities, atol=1e-6)


def test_head_is_flatten_dense_relu_batchnorm_dropout_logit_then_calibration(classifier):
    names = [layer.name for layer in classifier.layers]
    head = classifier.layers[names.index(LAST_CONV_LAYER) + 2 :]  # after block5_pool
    kinds = [type(layer) for layer in head]
    assert kinds == [
        keras.layers.Flatten,
        keras.layers.Dense,
        keras.layers.BatchNormalization,
        keras.layers.Dropout,
        keras.layers.Dense,
        keras.layers.Rescaling,
        keras.layers.Activation,
    ]
    assert head[1].activation is keras.activations.relu
    assert head[1].units == 8
    assert head[4].name == LOGIT_LAYER and head[4].units == 1
    assert head[4].activation is keras.activations.linear
    # Untrained, the calibration layer is the identity (T = 1).
    assert head[5].name == CALIBRATED_LOGIT_LAYER and head[5].scale == 1.0 and head[5].offset == 0


def test_with_temperature_divides_the_trained_logit_and_shares_every_weight(classifier, tmp_path):
    calibrated = with_temperature(classifier, 2.5)
    assert [layer.name for layer in calibrated.layers] == [
        layer.name for layer in classifier.layers
    ]
    assert calibrated.get_layer(LOGIT_LAYER) is classifier.get_layer(LOGIT_LAYER)
    images = _images(4)
    logit_model = keras.Model(classifier.input, classifier.get_layer(LOGIT_LAYER).output)
    logits = np.asarray(logit_model(images, training=False), dtype=np.float64).ravel()
    expected = 1.0 / (1.0 + np.exp(-logits / 2.5))
    np.testing.assert_allclose(np.ravel(calibrated(images, training=False)), expected, atol=1e-6)
    # Built-in layers only: the archive loads in safe mode and gives the same scores.
    path = tmp_path / "calibrated.keras"
    calibrated.save(path)
    reloaded = keras.models.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_allclose(np.ravel(reloaded(images, training=False)), expected, atol=1e-6)
    calibrated_logit = keras.Model(
        reloaded.input, reloaded.get_layer(CALIBRATED_LOGIT_LAYER).output
    )
    np.testing.assert_allclose(
        np.ravel(calibrated_logit(images, training=False)), logits / 2.5, rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_with_temperature_refuses_a_temperature_that_is_not_positive_and_finite(
    classifier, temperature
):
    with pytest.raises(ValueError, match="temperature must be a finite number above 0"):
        with_temperature(classifier, temperature)


def test_conv_block_names_lists_the_five_vgg16_blocks_in_order(classifier):
    assert conv_block_names(classifier) == ["block1", "block2", "block3", "block4", "block5"]


def test_image_size_below_vgg16_minimum_is_rejected():
    with pytest.raises(ValueError, match="at least 32"):
        build_classifier(31, weights="none", dense_units=4)


def test_missing_weights_file_raises_weights_unavailable(tmp_path):
    missing = tmp_path / "no_such.weights.h5"
    with pytest.raises(WeightsUnavailableError, match="not found"):
        build_classifier(IMAGE_SIZE, weights=str(missing), dense_units=4)


def test_weights_file_is_loaded_into_the_base(tmp_path):
    keras.utils.set_random_seed(2)
    base = keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    path = tmp_path / "vgg16_notop.weights.h5"
    base.save_weights(str(path))
    expected = base.get_layer("block1_conv1").get_weights()[0]
    expected_last = base.get_layer(LAST_CONV_LAYER).get_weights()[0]

    keras.utils.set_random_seed(3)  # a different random init, which loading must overwrite
    model = build_classifier(IMAGE_SIZE, weights=str(path), dense_units=4)

    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0], expected)
    np.testing.assert_array_equal(model.get_layer(LAST_CONV_LAYER).get_weights()[0], expected_last)


def test_weights_file_on_gs_is_staged_and_loaded(tmp_path, gcs_emulator):
    from model import storage

    keras.utils.set_random_seed(4)
    base = keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    local = tmp_path / "vgg16_notop.weights.h5"
    base.save_weights(str(local))
    remote = f"{gcs_emulator}/weights/vgg16_notop.weights.h5"
    storage.write_bytes(remote, local.read_bytes())

    keras.utils.set_random_seed(5)
    model = build_classifier(IMAGE_SIZE, weights=remote, dense_units=4)
    np.testing.assert_array_equal(
        model.get_layer(LAST_CONV_LAYER).get_weights()[0],
        base.get_layer(LAST_CONV_LAYER).get_weights()[0],
    )


def test_imagenet_download_failure_explains_the_offline_options(monkeypatch, tmp_path):
    real_vgg16 = keras.applications.VGG16

    def vgg16_without_network(*args, **kwargs):
        if kwargs.get("weights") == "imagenet":
            raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")
        return real_vgg16(*args, **kwargs)

    monkeypatch.setattr(keras.applications, "VGG16", vgg16_without_network)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))

    with pytest.raises(WeightsUnavailableError) as raised:
        build_classifier(IMAGE_SIZE, weights="imagenet", dense_units=4)

    message = str(raised.value)
    assert str(tmp_path / "keras_home" / "models") in message
    assert "--weights" in message
    assert "URL fetch failure" in message
