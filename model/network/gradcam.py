"""Grad-CAM for the single-logit classifier, computed batched over test-time views.

One forward pass under a `tf.GradientTape` gives both the probability and the class activation
map, so scoring never runs the network twice. With test-time augmentation the pass takes every
view of each image (`model.network.tta`): P(malignant) is the sigmoid of the mean logit over the
views, and each view's map is turned back to the image's orientation before the maps are averaged.

Maps explain the malignant logit whatever the call (class score +logit; -logit, the benign
score, on request), so every overlay shows the same thing: where the evidence for malignancy is.
They are returned raw (not normalised per image): `model.image.overlay.scale_heatmap` divides by a
scale shared across images (the model card's `heatmap_scale`, which `heatmap_scale` takes on the
validation split), so a map with little evidence looks faint and a strong one saturates.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from model.constants import LAST_CONV_LAYER, LOGIT_LAYER
from model.image.overlay import heatmap_peaks, heatmap_scale_from_peaks
from model.network.tta import View, apply_view, invert_view, tta_views, turns_fit, view_statistics

logger = logging.getLogger(__name__)

MALIGNANT, BENIGN = 1, 0

# Traced functions per Grad-CAM model and (views, class), dropped with the model.
_GRADCAM_FUNCTIONS: weakref.WeakKeyDictionary[keras.Model, dict[tuple, Callable]] = (
    weakref.WeakKeyDictionary()
)


class GradCamResult(NamedTuple):
    """What one batched pass gives for N images."""

    p_malignant: np.ndarray  # [N] float32: sigmoid of the mean logit over the views
    p_std: np.ndarray  # [N] float32: standard deviation of the views' probabilities
    heatmaps: np.ndarray  # [N, h, w] float32 >= 0: raw map, mean over the views, not normalised


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
    tta: int = 1,
    class_index: int = MALIGNANT,
) -> GradCamResult:
    """P(malignant), its spread over the views and raw Grad-CAM maps from one batched pass.

    images are normalised model input [N, S, S, 3]; the pass scores all N x tta views. The maps
    explain `class_index` (1 malignant, the default, or 0 benign) and are registered to images.
    """
    p, p_std, heatmaps, _ = _gradcam_pass(grad_model, images, tta, class_index)
    return GradCamResult(p.numpy(), p_std.numpy(), heatmaps.numpy())


def predict_view_logits_with_gradcam(
    grad_model: keras.Model, images: np.ndarray | tf.Tensor, tta: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(each view's logit [N, tta], raw malignant maps [N, h, w]) from one batched pass: what
    an ensemble needs to combine several models' views (`predict_with_gradcam`'s pass)."""
    _, _, heatmaps, view_logits = _gradcam_pass(grad_model, images, tta, MALIGNANT)
    return view_logits.numpy(), heatmaps.numpy()


def _gradcam_pass(
    grad_model: keras.Model, images: np.ndarray | tf.Tensor, tta: int, class_index: int
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(p, p_std, maps, view logits [N, views]) from the cached traced function."""
    if class_index not in (BENIGN, MALIGNANT):
        raise ValueError(f"class_index must be 0 (benign) or 1 (malignant), got {class_index}")
    views = tta_views(tta)
    functions = _GRADCAM_FUNCTIONS.setdefault(grad_model, {})
    key = (views, class_index)
    if key not in functions:
        functions[key] = _trace_gradcam(grad_model, views, class_index)
    return functions[key](tf.convert_to_tensor(images, dtype=tf.float32))


def _trace_gradcam(grad_model: keras.Model, views: tuple[View, ...], class_index: int) -> Callable:
    """A tf.function computing (p, p_std, maps) for grad_model, traced once for any batch size."""
    # A weak reference, so the cached function does not keep its own cache key alive.
    model_ref = weakref.ref(grad_model)
    image_shape = tuple(grad_model.inputs[0].shape[1:])
    if not turns_fit(views, image_shape):
        raise ValueError(f"90-degree views need a square model input, got {image_shape}")
    sign = 1.0 if class_index == MALIGNANT else -1.0

    @tf.function(input_signature=[tf.TensorSpec((None, *image_shape), tf.float32)])
    def gradcam(images: tf.Tensor):
        # View-major: rows [v * N, (v + 1) * N) hold view v of every image.
        batch = tf.concat([apply_view(images, view) for view in views], axis=0)
        with tf.GradientTape() as tape:
            feature_maps, logit = model_ref()(batch, training=False)
            logit = tf.reshape(tf.cast(logit, tf.float32), [-1])
            # Images are independent in inference mode, so the gradient of the sum holds
            # each view's own gradient.
            class_score = sign * tf.reduce_sum(logit)
        gradients = tf.cast(tape.gradient(class_score, feature_maps), tf.float32)
        feature_maps = tf.cast(feature_maps, tf.float32)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2))
        cams = tf.nn.relu(tf.einsum("nhwk,nk->nhw", feature_maps, channel_weights))[..., None]
        registered = [
            invert_view(cam, view)
            for cam, view in zip(tf.split(cams, len(views), axis=0), views, strict=True)
        ]
        heatmaps = tf.reduce_mean(tf.stack(registered), axis=0)[..., 0]
        finite = tf.reduce_all(tf.math.is_finite(heatmaps), axis=(1, 2), keepdims=True)
        heatmaps = tf.where(finite, heatmaps, 0.0)
        probability, spread = view_statistics(logit, len(views))
        return probability, spread, heatmaps, tf.transpose(tf.reshape(logit, [len(views), -1]))

    return gradcam


def collect_heatmap_peaks(
    grad_model: keras.Model, batches: Iterable[np.ndarray | tf.Tensor], tta: int = 1
) -> np.ndarray:
    """The malignant maps' peaks of every image in batches of normalised model input."""
    peaks = [
        heatmap_peaks(predict_with_gradcam(grad_model, batch, tta).heatmaps) for batch in batches
    ]
    return np.concatenate(peaks) if peaks else np.zeros(0, np.float32)


def heatmap_scale(
    grad_model: keras.Model, batches: Iterable[np.ndarray | tf.Tensor], tta: int = 1
) -> float | None:
    """The model card's heatmap_scale from batches of normalised input (the validation split).

    Use the exported model's Grad-CAM model (its card's logit layer) and the card's eval_tta,
    so the scale is in the units of the maps the scorer makes by default.
    """
    return heatmap_scale_from_peaks(collect_heatmap_peaks(grad_model, batches, tta))
