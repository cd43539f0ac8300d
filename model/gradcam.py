"""Grad-CAM for the single-logit classifier: compute (batched), upsample, overlay, encode.

One forward pass under a `tf.GradientTape` gives both the probability and the class activation
map, so scoring never runs the network twice. The class score is +logit for malignant and
-logit for benign, the single-logit equivalent of a two-class softmax score.
"""

from __future__ import annotations

import io
import logging
import weakref
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from PIL import Image

from model.constants import LAST_CONV_LAYER, LOGIT_LAYER

logger = logging.getLogger(__name__)

# Built once: calling matplotlib per image would dominate the overlay's cost.
JET_LUT: np.ndarray = np.round(colormaps["jet"](np.arange(256))[:, :3] * 255.0).astype(np.uint8)

# -1 in the traced function means "explain the predicted class".
_PREDICTED_CLASS = -1

# One traced function per Grad-CAM model, dropped with the model.
_GRADCAM_FUNCTIONS: weakref.WeakKeyDictionary[keras.Model, Callable] = weakref.WeakKeyDictionary()


def gradcam_model(
    model: keras.Model,
    last_conv_layer: str = LAST_CONV_LAYER,
    logit_layer: str = LOGIT_LAYER,
) -> keras.Model:
    """A model mapping the classifier's input to [last conv feature maps, pre-sigmoid logit]."""
    outputs = []
    for role, name in (("last conv", last_conv_layer), ("logit", logit_layer)):
        try:
            layer = model.get_layer(name)
        except ValueError as error:
            raise ValueError(
                f"model {model.name!r} has no {role} layer named {name!r}, which Grad-CAM needs"
            ) from error
        outputs.append(layer.output)
    return keras.Model(model.input, outputs, name=f"{model.name}_gradcam")


def predict_with_gradcam(
    grad_model: keras.Model,
    images: np.ndarray | tf.Tensor,
    threshold: float = 0.5,
    class_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """P(malignant) [N] and Grad-CAM maps [N, h, w] in [0, 1] from one batched forward pass.

    images are normalised model input. The map explains `class_index` (0 benign, 1 malignant)
    or, when None, each image's predicted class (p >= threshold means malignant).
    """
    if class_index not in (None, 0, 1):
        raise ValueError(
            f"class_index must be None, 0 (benign) or 1 (malignant), got {class_index}"
        )
    function = _GRADCAM_FUNCTIONS.get(grad_model)
    if function is None:
        function = _trace_gradcam(grad_model)
        _GRADCAM_FUNCTIONS[grad_model] = function
    probabilities, heatmaps = function(
        tf.convert_to_tensor(images, dtype=tf.float32),
        tf.constant(threshold, dtype=tf.float32),
        tf.constant(_PREDICTED_CLASS if class_index is None else class_index, dtype=tf.int32),
    )
    return probabilities.numpy(), heatmaps.numpy()


def _trace_gradcam(grad_model: keras.Model) -> Callable:
    """A tf.function computing (p, heatmaps) for grad_model, traced once for any batch size."""
    # A weak reference, so the cached function does not keep its own cache key alive.
    model_ref = weakref.ref(grad_model)
    image_shape = tuple(grad_model.inputs[0].shape[1:])

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, *image_shape), tf.float32),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.int32),
        ]
    )
    def gradcam(images: tf.Tensor, threshold: tf.Tensor, class_index: tf.Tensor):
        with tf.GradientTape() as tape:
            feature_maps, logit = model_ref()(images, training=False)
            logit = tf.reshape(tf.cast(logit, tf.float32), [-1])
            probability = tf.sigmoid(logit)
            malignant = tf.where(
                class_index == _PREDICTED_CLASS, probability >= threshold, class_index == 1
            )
            sign = tf.stop_gradient(tf.where(malignant, 1.0, -1.0))
            # Images are independent in inference mode, so the gradient of the sum holds
            # each image's own gradient.
            class_score = tf.reduce_sum(sign * logit)
        gradients = tf.cast(tape.gradient(class_score, feature_maps), tf.float32)
        feature_maps = tf.cast(feature_maps, tf.float32)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2))
        cam = tf.nn.relu(tf.einsum("nhwk,nk->nhw", feature_maps, channel_weights))
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        usable = tf.logical_and(
            tf.reduce_all(tf.math.is_finite(cam), axis=(1, 2), keepdims=True), peak > 0.0
        )
        heatmaps = tf.where(
            usable, tf.clip_by_value(tf.math.divide_no_nan(cam, peak), 0.0, 1.0), 0.0
        )
        return probability, heatmaps

    return gradcam


def upsample_heatmap(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of an [h, w] map in [0, 1] to [height, width] float32."""
    resized = Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a jet-coloured heatmap onto an HxWx3 uint8 RGB image at the image's own size."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = image.shape[:2]
    heat = upsample_heatmap(np.nan_to_num(heatmap, nan=0.0), width, height)
    colour = JET_LUT[np.round(heat * 255.0).astype(np.uint8)]
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 image; level 1 is several times faster than PIL's default 6."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
