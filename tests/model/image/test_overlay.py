"""The Grad-CAM display: shared scale, upsampling, the overlay's colour and opacity, PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.image import overlay


def test_heatmap_scale_is_a_high_percentile_of_the_map_peaks():
    peaks = np.arange(101, dtype=np.float32)  # 0 .. 100
    assert overlay.heatmap_scale_from_peaks(peaks) == pytest.approx(95.0)
    assert overlay.heatmap_scale_from_peaks(np.zeros(5)) is None  # no evidence anywhere
    assert overlay.heatmap_scale_from_peaks(np.zeros(0)) is None
    assert overlay.heatmap_scale_from_peaks(np.array([np.nan, 2.0])) == pytest.approx(2.0)


def test_scaling_clips_at_one_and_keeps_an_empty_map_empty():
    heatmap = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    np.testing.assert_allclose(overlay.scale_heatmap(heatmap, 2.0), [[0, 0.5], [1, 1]])
    np.testing.assert_allclose(overlay.scale_heatmap(heatmap, None), [[0, 0.25], [0.5, 1]])
    for scale in (2.0, None):
        np.testing.assert_array_equal(overlay.scale_heatmap(np.zeros((2, 2)), scale), 0.0)


def test_upsample_keeps_values_and_orientation():
    heatmap = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)  # left column hot
    resized = overlay.upsample_heatmap(heatmap, width=70, height=46)
    assert resized.shape == (46, 70) and resized.dtype == np.float32
    assert np.all((resized >= 0.0) & (resized <= 1.0))
    np.testing.assert_allclose(resized[:, :5], 1.0, atol=1e-6)
    np.testing.assert_allclose(resized[:, -5:], 0.0, atol=1e-6)
    assert np.all(np.diff(resized[0]) <= 1e-6)  # falls smoothly from left to right


def test_overlay_keeps_image_size_and_dtype():
    image = np.random.default_rng(6).integers(0, 256, (46, 70, 3), dtype=np.uint8)
    blended = overlay.overlay_heatmap(image, np.random.default_rng(7).uniform(0, 1, (2, 2)))
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert not np.array_equal(blended, image)


def test_overlay_with_zero_alpha_is_the_image():
    image = np.random.default_rng(8).integers(0, 256, (46, 70, 3), dtype=np.uint8)
    blended = overlay.overlay_heatmap(image, np.ones((2, 2), np.float32), alpha=0.0)
    np.testing.assert_array_equal(blended, image)


def test_overlay_colours_hot_red_and_leaves_cold_tissue_as_it_is():
    image = np.full((46, 70, 3), 200, np.uint8)
    heatmap = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    blended = overlay.overlay_heatmap(image, heatmap, alpha=1.0).astype(int)
    hot, cold = blended[:, :5].reshape(-1, 3), blended[:, -5:].reshape(-1, 3)
    assert np.all(hot[:, 0] > 100) and np.all(hot[:, 0] > hot[:, 1] + 80)
    assert np.all(hot[:, 0] > hot[:, 2] + 80)
    np.testing.assert_array_equal(cold, 200)  # no evidence: no blue wash

    half = overlay.overlay_heatmap(image, heatmap, alpha=0.5).astype(int)
    np.testing.assert_allclose(half, (image + blended) / 2, atol=1)


def test_overlay_opacity_follows_the_map_so_faint_maps_look_faint():
    image = np.random.default_rng(10).integers(0, 256, (46, 70, 3), dtype=np.uint8)
    np.testing.assert_array_equal(overlay.overlay_heatmap(image, np.zeros((2, 2))), image)
    changes = [
        np.abs(overlay.overlay_heatmap(image, np.full((2, 2), level)).astype(int) - image).mean()
        for level in (0.1, 0.5, 1.0)
    ]
    assert 0 < changes[0] < changes[1] < changes[2]


def test_encode_png_round_trips_pixels():
    image = np.random.default_rng(9).integers(0, 256, (46, 70, 3), dtype=np.uint8)
    for level in (1, 6):
        data = overlay.encode_png(image, compress_level=level)
        assert data.startswith(b"\x89PNG")
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(decoded), image)


def _plain_blend(image: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    """The overlay as one plain float32 expression (the drawing before it was made faster)."""
    heat = overlay.upsample_heatmap(heatmap, image.shape[1], image.shape[0])
    colour = overlay.JET_LUT[np.round(heat * 255.0).astype(np.uint8)].astype(np.float32)
    pixels = image.astype(np.float32)
    blended = pixels + (alpha * heat)[..., None] * (colour - pixels)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def test_the_overlay_has_exactly_the_pixels_of_the_plain_blend():
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (46, 70, 3), dtype=np.uint8)
    image[:3] = 0  # the extremes of the pixel range
    image[-3:] = 255
    maps = [
        rng.uniform(0, 1, (8, 8)).astype(np.float32),
        np.ones((4, 4), np.float32),
        np.zeros((4, 4), np.float32),
        np.array([[0.0, 1.0], [1.0, 0.0]], np.float32),
    ]
    for heatmap in maps:
        for alpha in (0.0, 0.25, overlay.HEATMAP_MAX_ALPHA, 1.0):
            np.testing.assert_array_equal(
                overlay.overlay_heatmap(image, heatmap, alpha), _plain_blend(image, heatmap, alpha)
            )


def test_each_overlay_format_encodes_the_overlay_it_names():
    image = np.random.default_rng(12).integers(0, 256, (46, 70, 3), dtype=np.uint8)
    smooth = np.repeat(np.linspace(0, 255, 70, dtype=np.uint8)[None, :, None], 46, axis=0)
    smooth = np.repeat(smooth, 3, axis=2)
    magic = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff"}
    assert set(overlay.OVERLAY_FORMATS) == set(magic)
    for image_format, start in magic.items():
        for pixels in (image, smooth):
            data = overlay.encode_overlay(pixels, image_format)
            assert data.startswith(start)
            with Image.open(io.BytesIO(data)) as decoded:
                decoded_pixels = np.asarray(decoded.convert("RGB")).astype(int)
            if image_format == "png":
                np.testing.assert_array_equal(decoded_pixels, pixels)
            elif pixels is smooth:  # JPEG is lossy, but close on smooth content
                assert np.abs(decoded_pixels - pixels).mean() < 2
    with pytest.raises(ValueError, match="overlay format must be one of jpeg, png, got 'gif'"):
        overlay.encode_overlay(image, "gif")
