"""Tests for decoding, resizing and VGG16 normalisation of images of every mode."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from model.image.preprocessing import (
    VGG16_BGR_MEAN,
    ImageDecodeError,
    decode_image,
    load_image,
    normalize,
    prepare_image,
    preprocess_image,
    resize_image,
)

# Non-square on purpose, so a transposed height and width cannot pass.
HEIGHT, WIDTH = 5, 7


def _encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _rgb_pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)


def _check_rgb(decoded: np.ndarray, height: int = HEIGHT, width: int = WIDTH) -> None:
    assert decoded.shape == (height, width, 3)
    assert decoded.dtype == np.uint8


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_lossless_rgb_round_trips_exactly(image_format):
    pixels = _rgb_pixels()
    decoded = decode_image(_encode(Image.fromarray(pixels), image_format))
    _check_rgb(decoded)
    assert np.array_equal(decoded, pixels)


def test_jpeg_decodes_close_to_the_original():
    # Flat halves so JPEG's lossy blocks barely change the colours.
    pixels = np.zeros((16, 24, 3), dtype=np.uint8)
    pixels[:, :12] = (200, 120, 180)
    pixels[:, 12:] = (60, 30, 110)
    decoded = decode_image(_encode(Image.fromarray(pixels), "JPEG", quality=95))
    _check_rgb(decoded, 16, 24)
    assert np.abs(decoded.astype(int) - pixels).max() < 12


def test_rgba_transparency_becomes_white_and_opacity_keeps_colour():
    rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 40, 120)
    rgba[..., 3] = 255
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent
    rgba[1, 1] = (0, 0, 0, 128)  # half transparent black over white
    decoded = decode_image(_encode(Image.fromarray(rgba), "PNG"))
    _check_rgb(decoded)
    assert tuple(decoded[0, 0]) == (255, 255, 255)
    assert tuple(decoded[2, 3]) == (200, 40, 120)
    assert np.all(np.abs(decoded[1, 1].astype(int) - 127) <= 1)


def test_gray_with_alpha_becomes_white_where_transparent():
    la = np.zeros((HEIGHT, WIDTH, 2), dtype=np.uint8)
    la[..., 0] = 90
    la[..., 1] = 255
    la[4, 6] = (0, 0)
    image = Image.fromarray(la)
    assert image.mode == "LA"
    decoded = decode_image(_encode(image, "PNG"))
    _check_rgb(decoded)
    assert tuple(decoded[4, 6]) == (255, 255, 255)
    assert tuple(decoded[0, 0]) == (90, 90, 90)


def _palette_image() -> Image.Image:
    indices = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    indices[:, 3:] = 1
    indices[0, 0] = 2
    image = Image.new("P", (WIDTH, HEIGHT))
    image.putdata(indices.ravel().tolist())
    image.putpalette([230, 160, 210, 70, 30, 120, 0, 255, 0] + [0] * (256 * 3 - 9))
    return image


def test_palette_image_takes_its_palette_colours():
    decoded = decode_image(_encode(_palette_image(), "PNG"))
    _check_rgb(decoded)
    assert tuple(decoded[1, 0]) == (230, 160, 210)
    assert tuple(decoded[1, 5]) == (70, 30, 120)
    assert tuple(decoded[0, 0]) == (0, 255, 0)


def test_palette_transparency_becomes_white():
    decoded = decode_image(_encode(_palette_image(), "PNG", transparency=2))
    _check_rgb(decoded)
    assert tuple(decoded[0, 0]) == (255, 255, 255)
    assert tuple(decoded[1, 0]) == (230, 160, 210)
    assert tuple(decoded[1, 5]) == (70, 30, 120)


def test_grayscale_is_repeated_into_three_channels():
    gray = _rgb_pixels()[..., 0]
    decoded = decode_image(_encode(Image.fromarray(gray), "PNG"))
    _check_rgb(decoded)
    assert all(np.array_equal(decoded[..., channel], gray) for channel in range(3))


def test_one_bit_image_becomes_black_and_white():
    bits = np.zeros((HEIGHT, WIDTH), dtype=bool)
    bits[:, :3] = True
    decoded = decode_image(_encode(Image.fromarray(bits), "PNG"))
    _check_rgb(decoded)
    assert np.all(decoded[:, :3] == 255)
    assert np.all(decoded[:, 3:] == 0)


def test_sixteen_bit_grayscale_png_scales_to_eight_bits():
    values = np.zeros((HEIGHT, WIDTH), dtype=np.uint16)
    values[0, :4] = (0, 257, 32768, 65535)
    values[1, 0] = 200  # a dark 16-bit value, not an 8-bit 200
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    data = _encode(image, "PNG")
    decoded = decode_image(data)
    _check_rgb(decoded)
    assert list(decoded[0, :4, 0]) == [0, 1, 128, 255]
    assert decoded[1, 0, 0] == 1
    assert np.array_equal(decoded[..., 0], decoded[..., 2])


def test_thirty_two_bit_integer_tiff_keeps_eight_bit_values_and_scales_sixteen_bit_ones():
    small = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
    small[0, :3] = (0, 100, 255)
    decoded = decode_image(_encode(Image.fromarray(small), "TIFF"))
    _check_rgb(decoded)
    assert list(decoded[0, :3, 1]) == [0, 100, 255]

    wide = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
    wide[0, :3] = (0, 32768, 65535)
    image = Image.fromarray(wide)
    assert image.mode == "I"
    decoded = decode_image(_encode(image, "TIFF"))
    assert list(decoded[0, :3, 1]) == [0, 128, 255]


def test_float_tiff_in_unit_range_scales_to_eight_bits():
    values = np.zeros((HEIGHT, WIDTH), dtype=np.float32)
    values[0, :3] = (0.0, 0.25, 1.0)
    image = Image.fromarray(values)
    assert image.mode == "F"
    decoded = decode_image(_encode(image, "TIFF"))
    _check_rgb(decoded)
    assert list(decoded[0, :3, 0]) == [0, 64, 255]


def test_cmyk_jpeg_decodes_to_rgb():
    cmyk = Image.new("CMYK", (24, 16), (0, 0, 0, 0))  # no ink: white
    cmyk.paste((255, 0, 0, 0), (12, 0, 24, 16))  # full cyan
    data = _encode(cmyk, "JPEG", quality=95)
    decoded = decode_image(data)
    _check_rgb(decoded, 16, 24)
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.mode == "CMYK"
    assert np.all(decoded[:, :10] > 240)  # white
    red, green, blue = decoded[:, 14:].reshape(-1, 3).mean(axis=0)
    assert red < 30 and green > 220 and blue > 220  # cyan


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is a text file, not an image\n", "cannot decode"),
        (b"\x89PNG\r\n\x1a\n", "cannot decode"),  # a PNG signature and nothing else
    ],
)
def test_bytes_that_are_not_an_image_raise_decode_error(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_truncated_png_raises_decode_error():
    pixels = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(pixels), "PNG")
    with pytest.raises(ImageDecodeError, match="cannot decode image: .*truncated"):
        decode_image(data[: len(data) // 2])


def test_decode_error_is_a_value_error():
    with pytest.raises(ValueError):
        decode_image(b"not an image")


def test_load_image_resizes_to_a_square_uint8():
    data = _encode(Image.fromarray(_rgb_pixels()), "PNG")
    loaded = load_image(data, 32)
    assert loaded.shape == (32, 32, 3)
    assert loaded.dtype == np.uint8


def test_load_image_keeps_a_flat_colour():
    flat = np.full((46, 70, 3), (212, 150, 200), dtype=np.uint8)
    loaded = load_image(_encode(Image.fromarray(flat), "PNG"), 32)
    assert np.all(loaded == (212, 150, 200))


def test_resize_keeps_an_image_already_at_size():
    pixels = np.random.default_rng(2).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert np.array_equal(resize_image(pixels, 32), pixels)


def test_normalize_turns_rgb_into_bgr_minus_imagenet_means():
    pixel = np.array([[[255.0, 0.0, 0.0]]], dtype=np.float32)
    normalized = normalize(pixel)
    assert normalized.dtype == np.float32
    assert np.allclose(normalized[0, 0], [-103.939, -116.779, 131.32], atol=1e-4)
    assert np.allclose(normalize(np.zeros((1, 3), np.float32))[0], -VGG16_BGR_MEAN)


def test_normalize_gives_identical_values_on_numpy_and_tensorflow():
    tf = pytest.importorskip("tensorflow")
    images = np.random.default_rng(3).integers(0, 256, size=(2, 8, 8, 3)).astype(np.float32)
    from_tensor = normalize(tf.constant(images)).numpy()
    assert from_tensor.dtype == np.float32
    assert np.array_equal(from_tensor, normalize(images))


def test_preprocess_image_is_normalize_of_load_image():
    data = _encode(Image.fromarray(_rgb_pixels(4)), "PNG")
    preprocessed = preprocess_image(data, 32)
    assert preprocessed.shape == (32, 32, 3)
    assert preprocessed.dtype == np.float32
    assert np.array_equal(preprocessed, normalize(load_image(data, 32).astype(np.float32)))


def test_real_sample_images_decode_at_their_manifest_size(breakhis_sample):
    with open(breakhis_sample / "MANIFEST.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # One file of each pixel size in the sample (700x460, 700x456 and 500x328 copies).
    by_size = {(int(row["width"]), int(row["height"])): row for row in rows}
    assert (700, 460) in by_size
    for (width, height), row in sorted(by_size.items()):
        data = (breakhis_sample / row["relative_path"]).read_bytes()
        decoded = decode_image(data)
        _check_rgb(decoded, height, width)
        assert decoded.std() > 5  # tissue, not a blank page
        assert load_image(data, 32).shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("orientation", "transform"),
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # viewers turn it 90 degrees clockwise
        (8, lambda a: np.rot90(a, 1)),
        (2, lambda a: a[:, ::-1]),
    ],
)
@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_exif_orientation_is_applied_as_viewers_show_the_image(
    orientation, transform, image_format
):
    # Blocks of flat colour, so JPEG's loss cannot hide a wrong turn.
    pixels = np.zeros((16, 24, 3), np.uint8)
    pixels[:8, :8] = (250, 20, 20)
    pixels[8:, 16:] = (20, 20, 250)
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    data = _encode(Image.fromarray(pixels), image_format, exif=exif.tobytes(), quality=95)
    decoded = decode_image(data)
    expected = transform(pixels)
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).mean() < 4
    # Training and scoring see the same, turned image.
    np.testing.assert_array_equal(load_image(data, 8), resize_image(decoded, 8))


def test_prepare_image_gives_the_training_input_and_a_bounded_original():
    pixels = np.random.default_rng(1).integers(0, 256, (60, 90, 3), np.uint8)
    data = _encode(Image.fromarray(pixels), "PNG")
    model_input, original = prepare_image(data, 16, overlay_max_side=30)
    np.testing.assert_array_equal(model_input, preprocess_image(data, 16))
    assert original.shape == (20, 30, 3) and original.dtype == np.uint8
    _, full = prepare_image(data, 16, overlay_max_side=90)
    np.testing.assert_array_equal(full, pixels)  # at or under the cap: kept as it is
    assert prepare_image(data, 16, overlay_max_side=None)[1] is None


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(monkeypatch):
    import model.image.preprocessing as preprocessing

    monkeypatch.setattr(preprocessing, "MAX_IMAGE_PIXELS", 5 * 7 - 1)
    with pytest.raises(ImageDecodeError, match="7 x 5 = 35 pixels, above the limit of 34"):
        decode_image(_encode(Image.fromarray(_rgb_pixels()), "PNG"))
