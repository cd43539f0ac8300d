"""The one preprocessing path of both jobs: decode any image to RGB, resize, VGG16-normalise.

Training (`train_job.data`) and scoring (`pipelines`) both call `load_image` and `normalize`
(or `preprocess_image`, which is the two together), so a model never sees an image prepared
differently from the ones it was trained on. Training caches the resized uint8 images, augments
them, then normalises; scoring normalises straight away.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Keras' VGG16 weights expect BGR channels with the ImageNet means subtracted ("caffe" mode).
VGG16_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
NORMALIZATION = "vgg16_caffe"
RESIZE_METHOD = "PIL bilinear (antialiased), to a square, aspect ratio not kept"

# Histopathology slides are white where there is no tissue, so transparency becomes white.
_BACKGROUND = (255, 255, 255)


class ImageDecodeError(ValueError):
    """The bytes are not an image this project can read."""


def decode_image(data: bytes) -> np.ndarray:
    """Decode PNG, JPEG or TIFF bytes in any mode to an HxWx3 uint8 RGB array."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _to_rgb_array(image)
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"cannot decode image: {error}") from error


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to uint8 RGB, scaling high bit depths."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = values.max(initial=0.0)
        if mode.startswith("I;16"):
            full_scale = 65535.0
        elif mode == "F" and peak <= 1.0:
            full_scale = 1.0  # float images in [0, 1]
        elif peak <= 255.0:
            full_scale = 255.0  # 8-bit values stored in a wider mode
        else:
            full_scale = 65535.0  # 16-bit
        gray = np.clip(np.round(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def resize_image(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image to image_size x image_size (antialiased bilinear)."""
    if rgb.shape[:2] == (image_size, image_size):
        return np.ascontiguousarray(rgb)
    resized = Image.fromarray(rgb).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def load_image(data: bytes, image_size: int) -> np.ndarray:
    """Decode and resize: the uint8 image_size x image_size x 3 RGB array training caches."""
    return resize_image(decode_image(data), image_size)


def normalize(images):
    """VGG16 normalisation of RGB values in [0, 255]: to BGR, minus the ImageNet means.

    Works on NumPy arrays and TensorFlow tensors alike (same float32 operations), so the tf.data
    training path and the NumPy scoring path give identical values.
    """
    return images[..., ::-1] - VGG16_BGR_MEAN


def model_input(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """A decoded HxWx3 uint8 image to the float32 model input (image_size x image_size x 3).

    For callers that keep the decoded original (Grad-CAM overlays) and must not decode twice.
    """
    return normalize(resize_image(rgb, image_size).astype(np.float32))


def preprocess_image(data: bytes, image_size: int) -> np.ndarray:
    """Image file bytes to the float32 model input (image_size x image_size x 3)."""
    return model_input(decode_image(data), image_size)
