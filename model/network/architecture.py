"""The classifier: a VGG16 convolutional base and a small dense head with one malignant output.

The VGG16 layers are built in the classifier's own (top-level) graph rather than nested as a
sub-model, so `block5_conv3`, the trained `logit` and the `calibrated_logit` (logit / T) layers
are reachable by name for Grad-CAM, for fine-tuning from a given block and for calibration.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile

import keras

from model import storage
from model.constants import (
    CALIBRATED_LOGIT_LAYER,
    LOGIT_LAYER,
    MIN_IMAGE_SIZE,
    PROBABILITY_LAYER,
)

logger = logging.getLogger(__name__)

MODEL_NAME = "breakhis_vgg16"
IMAGENET_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + IMAGENET_WEIGHTS_FILE
)


class WeightsUnavailableError(RuntimeError):
    """The requested VGG16 weights could not be loaded."""


def offline_weights_help() -> str:
    """What to do when the ImageNet weights cannot be downloaded."""
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")
    return (
        f"Could not download the VGG16 ImageNet weights ({IMAGENET_WEIGHTS_URL}). On a machine "
        f"without internet access either copy {IMAGENET_WEIGHTS_FILE} into the Keras cache "
        f"({cache}/), or pass --weights /path/or/gs://bucket/{IMAGENET_WEIGHTS_FILE}, or train "
        "from scratch with --weights none."
    )


def build_classifier(
    image_size: int = 128,
    weights: str | None = "imagenet",
    dense_units: int = 256,
    dropout: float = 0.5,
) -> keras.Model:
    """VGG16 base -> Flatten -> Dense(relu) -> BatchNorm -> Dropout -> logit -> logit / T ->
    sigmoid, with T = 1 until `with_temperature` sets the fitted one.

    weights: "imagenet" (Keras download and cache), "none"/None (random init), or a path, local
    or `gs://`, to a Keras VGG16 no-top weights file (.h5 or .weights.h5).
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be at least {MIN_IMAGE_SIZE} for VGG16, got {image_size}"
        )
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    base = _vgg16_base(inputs, weights)
    x = keras.layers.Flatten(name="flatten")(base.output)
    x = keras.layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    # momentum 0.9 (Keras default 0.99): the moving statistics used at inference must catch up
    # within a few dozen steps, or small data sets (few steps per epoch) validate on stale ones.
    x = keras.layers.BatchNormalization(momentum=0.9, name="head_batchnorm")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logit = keras.layers.Dense(1, name=LOGIT_LAYER)(x)
    return keras.Model(inputs, _calibrated_probability(logit, 1.0), name=MODEL_NAME)


def _calibrated_probability(logit: keras.KerasTensor, temperature: float) -> keras.KerasTensor:
    """sigmoid(logit / T) from built-in layers only, so safe-mode loading needs no custom code."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number above 0, got {temperature}")
    # float32 even under mixed precision, so probabilities are not rounded to float16.
    calibrated = keras.layers.Rescaling(
        1.0 / temperature, dtype="float32", name=CALIBRATED_LOGIT_LAYER
    )(logit)
    return keras.layers.Activation("sigmoid", dtype="float32", name=PROBABILITY_LAYER)(calibrated)


def with_temperature(model: keras.Model, temperature: float) -> keras.Model:
    """The classifier with its logit divided by `temperature` before the sigmoid.

    The new model shares every trained layer (and so every weight) of `model` up to its logit;
    only the parameter-free calibration and sigmoid layers are new.
    """
    logit = model.get_layer(LOGIT_LAYER).output
    return keras.Model(model.input, _calibrated_probability(logit, temperature), name=model.name)


def _vgg16_base(inputs: keras.KerasTensor, weights: str | None) -> keras.Model:
    """VGG16 without its top, applied to `inputs`, with the requested weights loaded."""
    spec = (weights or "none").strip()
    if spec.lower() == "imagenet":
        try:
            return keras.applications.VGG16(
                include_top=False, weights="imagenet", input_tensor=inputs
            )
        except Exception as error:  # download failures surface as several exception types
            raise WeightsUnavailableError(f"{offline_weights_help()} ({error})") from error
    base = keras.applications.VGG16(include_top=False, weights=None, input_tensor=inputs)
    if spec.lower() != "none":
        _load_base_weights(base, spec)
    return base


def _load_base_weights(base: keras.Model, path: str) -> None:
    """Load a VGG16 no-top weights file, local or remote, into the base."""
    if not storage.exists(path):
        raise WeightsUnavailableError(f"--weights file not found: {path}")
    with tempfile.TemporaryDirectory() as scratch:
        local = path
        if storage.is_remote(path):
            local = os.path.join(scratch, os.path.basename(path))
            with open(local, "wb") as handle:
                handle.write(storage.read_bytes(path))
        try:
            base.load_weights(local)
        except Exception as error:
            raise WeightsUnavailableError(
                f"{path} is not a Keras VGG16 no-top weights file ({error})"
            ) from error
    logger.info("Loaded VGG16 base weights from %s", path)


def conv_block_names(model: keras.Model) -> list[str]:
    """The VGG16 block prefixes present in the model, in order ("block1" ... "block5")."""
    blocks = []
    for layer in model.layers:
        prefix = layer.name.split("_")[0]
        if prefix.startswith("block") and prefix not in blocks:
            blocks.append(prefix)
    return blocks
