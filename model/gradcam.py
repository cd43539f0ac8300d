"""Grad-CAM for the single-logit classifier: compute (batched, test-time views), scale, overlay.

One forward pass under a `tf.GradientTape` gives both the probability and the class activation
map, so scoring never runs the network twice. With test-time augmentation the pass takes every
view of each image (`model.tta`): P(malignant) is the sigmoid of the mean logit over the views,
and each view's map is turned back to the image's orientation before the maps are averaged.

Maps explain the malignant logit whatever the call (class score +logit; -logit, the benign
score, on request), so every overlay shows the same thing: where the evidence for malignancy is.
They are returned raw (not normalised per image): `scale_heatmap` divides by a scale shared
across images (the model card's `heatmap_scale`, from `heatmap_scale_from_peaks` on the
validation split), so a map with little evidence looks faint and a strong one saturates.
"""

from __future__ import annotations

import io
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from PIL import Image

from model.constants import HEATMAP_SCALE_PERCENTILE, LAST_CONV_LAYER, LOGIT_LAYER
from model.tta import View, apply_view, invert_view, tta_views, turns_fit, view_statistics

logger = logging.getLogger(__name__)

# Built once: calling matplotlib per image would dominate the overlay's cost.
JET_LUT: np.ndarray = np.round(colormaps["jet"](np.arange(256))[:, :3] * 255.0).astype(np.uint8)

MALIGNANT, BENIGN = 1, 0
# The overlay's opacity where the scaled map is 1 (evidence at or above the shared scale); it
# falls in proportion to the map, so tissue without evidence is shown as it is.
HEATMAP_MAX_ALPHA = 0.5

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
    if class_index not in (BENIGN, MALIGNANT):
        raise ValueError(f"class_index must be 0 (benign) or 1 (malignant), got {class_index}")
    views = tta_views(tta)
    functions = _GRADCAM_FUNCTIONS.setdefault(grad_model, {})
    key = (views, class_index)
    if key not in functions:
        functions[key] = _trace_gradcam(grad_model, views, class_index)
    p, p_std, heatmaps = functions[key](tf.convert_to_tensor(images, dtype=tf.float32))
    return GradCamResult(p.numpy(), p_std.numpy(), heatmaps.numpy())


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
        return probability, spread, heatmaps

    return gradcam


def heatmap_peaks(heatmaps: np.ndarray) -> np.ndarray:
    """Each raw map's maximum ([N, h, w] -> [N]): 0 for a map with no evidence at all."""
    return np.asarray(heatmaps, dtype=np.float32).reshape(len(heatmaps), -1).max(axis=1)


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


def heatmap_scale_from_peaks(peaks: np.ndarray) -> float | None:
    """The shared display scale: HEATMAP_SCALE_PERCENTILE of the peaks; None if it is not > 0."""
    peaks = np.asarray(peaks, dtype=np.float64)
    peaks = peaks[np.isfinite(peaks)]
    if peaks.size == 0:
        return None
    scale = float(np.percentile(peaks, HEATMAP_SCALE_PERCENTILE))
    return scale if scale > 0.0 else None


def scale_heatmap(heatmap: np.ndarray, scale: float | None) -> np.ndarray:
    """A raw map in [0, 1] for display: map / scale, clipped at 1.

    scale None (an export without `heatmap_scale`) divides by the map's own peak instead, so the
    colours of different images are not comparable; an all-zero map stays zero either way.
    """
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=0.0)
    divisor = float(heatmap.max(initial=0.0)) if scale is None else float(scale)
    if not divisor > 0.0:
        return np.zeros_like(heatmap)
    return np.clip(heatmap / divisor, 0.0, 1.0)


def heatmap_caption(scale: float | None) -> str:
    """What the overlays show and on which scale: the caption a report puts beside them."""
    shows = (
        "Heatmaps show where the evidence for malignancy is (Grad-CAM of the malignant logit) "
        "whatever the call: colour (blue, green, yellow, red) and opacity rise with the "
        "evidence, and tissue without any is left as it is."
    )
    if scale is None:
        return (
            f"{shows} The model card has no heatmap_scale, so each map is scaled to its own "
            "peak: colours are not comparable between images (heatmap_peak in predictions.csv "
            "is)."
        )
    return (
        f"{shows} One scale for all images: full red at {HEATMAP_MAX_ALPHA:.0%} opacity is a raw "
        f"map value of {scale:.4g} or more (the model card's heatmap_scale, the "
        f"{HEATMAP_SCALE_PERCENTILE:g}th percentile of the map peaks on the validation split), "
        "so a faint map means little evidence."
    )


def upsample_heatmap(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of an [h, w] map in [0, 1] to [height, width] float32."""
    resized = Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def overlay_heatmap(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = HEATMAP_MAX_ALPHA
) -> np.ndarray:
    """Blend a jet-coloured [0, 1] map onto an HxWx3 uint8 RGB image at the image's own size.

    Each pixel's opacity is alpha x its map value: where the map is 0 the image is unchanged,
    so a faint map looks faint rather than washing the whole image in blue.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = image.shape[:2]
    heat = upsample_heatmap(np.nan_to_num(heatmap, nan=0.0), width, height)
    colour = JET_LUT[np.round(heat * 255.0).astype(np.uint8)].astype(np.float32)
    pixels = image.astype(np.float32)
    blended = pixels + (alpha * heat)[..., None] * (colour - pixels)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 image; level 1 is several times faster than PIL's default 6."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
