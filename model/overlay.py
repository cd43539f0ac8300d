"""Grad-CAM maps made visible: their peaks, the shared display scale, and the overlay PNG.

NumPy and Pillow only (no TensorFlow), so the writers of overlays and reports need not load it.
A raw map (`model.gradcam`) is divided by a scale shared across images (`scale_heatmap`; the
model card's `heatmap_scale`, the HEATMAP_SCALE_PERCENTILE of the validation split's map
peaks), coloured with the jet colour map, and blended onto the tissue with an opacity that
rises with the evidence (`overlay_heatmap`): tissue without evidence is shown as it is.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from PIL import Image

from model.constants import HEATMAP_SCALE_PERCENTILE

# Built once: calling matplotlib per image would dominate the overlay's cost.
JET_LUT: np.ndarray = np.round(colormaps["jet"](np.arange(256))[:, :3] * 255.0).astype(np.uint8)
# The overlay's opacity where the scaled map is 1 (evidence at or above the shared scale); it
# falls in proportion to the map, so tissue without evidence is shown as it is.
HEATMAP_MAX_ALPHA = 0.5


def heatmap_peaks(heatmaps: np.ndarray) -> np.ndarray:
    """Each raw map's maximum ([N, h, w] -> [N]): 0 for a map with no evidence at all."""
    return np.asarray(heatmaps, dtype=np.float32).reshape(len(heatmaps), -1).max(axis=1)


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
