"""Gallery images for report.html: a downsized original and its Grad-CAM overlay, as PNG bytes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from model.image.overlay import encode_png, overlay_heatmap

REPORT_ASSETS_DIR = "report_assets"  # beside report.html: the gallery's downsized images
GALLERY_WIDTH = 360  # pixels; the page shows pairs side by side, full-size files stay elsewhere


def downsize(image: np.ndarray, max_width: int = GALLERY_WIDTH) -> np.ndarray:
    """Shrink an HxWx3 uint8 image to at most max_width wide, keeping its aspect ratio."""
    height, width = image.shape[:2]
    if width <= max_width:
        return image
    size = (max_width, max(1, round(height * max_width / width)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def gallery_pair(
    original: np.ndarray, heatmap: np.ndarray, max_width: int = GALLERY_WIDTH
) -> tuple[bytes, bytes]:
    """PNG bytes of the downsized original and of the overlay at that same size."""
    small = downsize(original, max_width)
    return encode_png(small), encode_png(overlay_heatmap(small, heatmap))
