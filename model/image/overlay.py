"""Grad-CAM maps made visible: their peaks, the shared display scale, the overlay and its file.

NumPy and Pillow only (no TensorFlow), so the writers of overlays and reports need not load it.
A raw map (`model.network.gradcam`) is divided by a scale shared across images (`scale_heatmap`; the
model card's `heatmap_scale`, the HEATMAP_SCALE_PERCENTILE of the validation split's map
peaks), coloured with the jet colour map, and blended onto the tissue with an opacity that
rises with the evidence (`overlay_heatmap`): tissue without evidence is shown as it is. An
overlay is written as JPEG or PNG (`encode_overlay`, OVERLAY_FORMATS).
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
# Overlay file formats and their file name extensions. JPEG at quality 90 encodes a 700x460
# overlay in about 1 ms of CPU for files a seventh of PNG's size; PNG at level 1 takes about
# 25 ms (benchmarks/scoring_profile.py). PNG stays available for lossless overlays.
OVERLAY_FORMATS: dict[str, str] = {"jpeg": "jpg", "png": "png"}
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 1


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
    # pixel + opacity x (colour - pixel), in float32, computed in place: the same operations in
    # the same order as the plain expression (identical pixels), without its five temporary
    # full-size arrays, which cost three quarters of the overlay's time. np.take, not fancy
    # indexing, for the colour lookup: several times faster for the same result.
    blended = np.take(JET_LUT, np.round(heat * 255.0).astype(np.uint8), axis=0).astype(np.float32)
    blended -= image
    blended *= (alpha * heat)[..., None]
    blended += image
    # A convex combination of two values in [0, 255] (opacity in [0, 1]) rounds into [0, 255]:
    # no clipping is needed before the cast.
    return np.round(blended, out=blended).astype(np.uint8)


def encode_png(image: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """PNG bytes of a uint8 image; level 1 is several times faster than PIL's default 6."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of a uint8 RGB image (PIL's default 4:2:0 chroma subsampling)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_overlay(image: np.ndarray, image_format: str) -> bytes:
    """An overlay's file bytes in one of OVERLAY_FORMATS ("jpeg" or "png")."""
    if image_format == "jpeg":
        return encode_jpeg(image)
    if image_format == "png":
        return encode_png(image)
    raise ValueError(
        f"overlay format must be one of {', '.join(OVERLAY_FORMATS)}, got {image_format!r}"
    )
