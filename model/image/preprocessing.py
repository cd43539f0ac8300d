"""The one preprocessing path of both jobs: decode any image to RGB, resize, VGG16-normalise.

Training (`train_job.data.dataset`, its report) and scoring (`pipelines`) both decode with
`decode_rgb` and resize with `resize_image`, through `load_image` (training caches its uint8
result, augments it, then calls `normalize`) or `prepare_image` (scoring: the model input and a
bounded copy of the original for the Grad-CAM overlay). A model never sees an image prepared
differently from the ones it was trained on.

The input quality measures (`model.image.quality`) are taken of the same decoded image, once per
decode: by `prepare_measured_image` in the scorer and by `measure_image` in the training job's
one up-front read of every image, so both jobs measure a file identically.

Images are seen the way viewers show them: an EXIF orientation tag is applied. The memory one
image takes is bounded: at most `MAX_IMAGE_PIXELS` are decoded, and the copy kept for the
overlay is at most `OVERLAY_MAX_SIDE` pixels on its longer side.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from model.image.quality import QualityMeasures, measure_quality

# Keras' VGG16 weights expect BGR channels with the ImageNet means subtracted ("caffe" mode).
VGG16_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
NORMALIZATION = "vgg16_caffe"
RESIZE_METHOD = "PIL bilinear (antialiased), to a square, aspect ratio not kept"

# Pillow's own decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS), enforced here by name so
# the limit and its message are ours: 179 million pixels, 537 MB as 8-bit RGB.
MAX_IMAGE_PIXELS = 178_956_970
# Grad-CAM overlays (and the original kept for them) are at most this many pixels on the longer
# side; BreakHis tiles (700 x 460) and common tiles up to 2048 px keep their own size.
OVERLAY_MAX_SIDE = 2048

# Histopathology slides are white where there is no tissue, so transparency becomes white.
_BACKGROUND = (255, 255, 255)
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ROWS_PER_BLOCK = 1024  # high-bit-depth images are scaled in row blocks to bound temporary memory

# Our own limit replaces Pillow's warning (which would fire for every image above half of it).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageDecodeError(ValueError):
    """The bytes are not an image this project can read."""


def decode_rgb(data: bytes) -> Image.Image:
    """Decode PNG, JPEG or TIFF bytes in any mode to an 8-bit RGB PIL image, EXIF-oriented."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(
                    f"image is {width} x {height} = {width * height:,} pixels, above the limit "
                    f"of {MAX_IMAGE_PIXELS:,}"
                )
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
            return _to_rgb(image)
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"cannot decode image: {error}") from error


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to 8-bit RGB, scaling high bit depths."""
    mode = image.mode
    if mode in _HIGH_BIT_MODES:
        return Image.fromarray(_high_bit_to_gray(image)).convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def _high_bit_to_gray(image: Image.Image) -> np.ndarray:
    """8-bit gray values of a 16-bit, 32-bit integer or float image."""
    values = np.asarray(image)
    peak = float(values.max(initial=0))
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "F" and peak <= 1.0:
        full_scale = 1.0  # float images in [0, 1]
    elif peak <= 255.0:
        full_scale = 255.0  # 8-bit values stored in a wider mode
    else:
        full_scale = 65535.0  # 16-bit
    gray = np.empty(values.shape, np.uint8)
    for start in range(0, values.shape[0], _ROWS_PER_BLOCK):
        block = values[start : start + _ROWS_PER_BLOCK].astype(np.float64)
        gray[start : start + _ROWS_PER_BLOCK] = np.clip(
            np.round(block * (255.0 / full_scale)), 0, 255
        )
    return gray


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes to an HxWx3 uint8 RGB array (see `decode_rgb`)."""
    return np.asarray(decode_rgb(data))


def resize_image(image: np.ndarray | Image.Image, image_size: int) -> np.ndarray:
    """Resize an RGB array or PIL image to image_size x image_size uint8 (antialiased bilinear)."""
    if isinstance(image, np.ndarray):
        if image.shape[:2] == (image_size, image_size):
            return np.ascontiguousarray(image)
        image = Image.fromarray(image)
    if image.size == (image_size, image_size):
        return np.asarray(image)
    return np.asarray(image.resize((image_size, image_size), Image.Resampling.BILINEAR))


def bounded_copy(image: Image.Image, max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """The image as a uint8 array, shrunk (aspect kept) so its longer side is at most max_side."""
    width, height = image.size
    longer = max(width, height)
    if longer > max_side:
        scale = max_side / longer
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image)


def load_image(data: bytes, image_size: int) -> np.ndarray:
    """Decode and resize: the uint8 image_size x image_size x 3 RGB array training caches."""
    return resize_image(decode_rgb(data), image_size)


def normalize(images):
    """VGG16 normalisation of RGB values in [0, 255]: to BGR, minus the ImageNet means.

    Works on NumPy arrays and TensorFlow tensors alike (same float32 operations), so the tf.data
    training path and the NumPy scoring path give identical values.
    """
    return images[..., ::-1] - VGG16_BGR_MEAN


def model_input(rgb: np.ndarray | Image.Image, image_size: int) -> np.ndarray:
    """A decoded RGB image to the float32 model input (image_size x image_size x 3)."""
    return normalize(resize_image(rgb, image_size).astype(np.float32))


def preprocess_image(data: bytes, image_size: int) -> np.ndarray:
    """Image file bytes to the float32 model input (image_size x image_size x 3)."""
    return model_input(decode_rgb(data), image_size)


def prepare_image(
    data: bytes, image_size: int, overlay_max_side: int | None = OVERLAY_MAX_SIDE
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode once: (the model input, the original for an overlay or None when not asked for).

    The model input is `preprocess_image(data)` exactly; the original is shrunk to at most
    overlay_max_side on its longer side, so a huge image does not stay in memory at full size.
    """
    return _input_and_original(decode_rgb(data), image_size, overlay_max_side)


def _input_and_original(
    rgb: Image.Image, image_size: int, overlay_max_side: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    original = None if overlay_max_side is None else bounded_copy(rgb, overlay_max_side)
    return model_input(rgb, image_size), original


class MeasuredImage(NamedTuple):
    """`prepare_image`'s two results and the quality measures of the same decoded image."""

    model_input: np.ndarray
    original: np.ndarray | None
    quality: QualityMeasures


def prepare_measured_image(
    data: bytes, image_size: int, overlay_max_side: int | None = OVERLAY_MAX_SIDE
) -> MeasuredImage:
    """Decode once: `prepare_image`'s model input and original, and the quality measures."""
    rgb = decode_rgb(data)
    return MeasuredImage(
        *_input_and_original(rgb, image_size, overlay_max_side), measure_quality(rgb)
    )


def measure_image(data: bytes) -> QualityMeasures:
    """Decode and measure: the quality measures of image file bytes (raises ImageDecodeError)."""
    return measure_quality(decode_rgb(data))
