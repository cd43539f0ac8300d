"""Input quality control: real tissue passes, each kind of bad input gets its flag.

The bad inputs and the flags they must get (several may apply; each test checks the one that
names the problem, and the blurred, grayscale and noise copies get no other flag):

- blank white image -> low_tissue (no pixel differs from background glass; it also has no
  colour and no detail, so not_he_stained and out_of_focus apply too)
- uniform grey (128) -> not_he_stained (grey has no stain colour at all; it is too dark to
  be glass, so not low_tissue) and out_of_focus (no detail)
- Gaussian blur of sigma 4 px of a 700 x 460 image -> out_of_focus only
- grayscale copy -> not_he_stained only (the colour is gone, the structure is not)
- random RGB noise -> not_he_stained only (random colours cancel out; noise is very "sharp")
- 1 x 1 image -> unexpected_size when the card records the training sizes, and out_of_focus
  (a single pixel has no detail); without recorded sizes, no size check
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image, ImageFilter

from model.image.preprocessing import decode_rgb
from model.image.quality import (
    LOW_TISSUE,
    NOT_HE_STAINED,
    OUT_OF_FOCUS,
    QC_FLAGS,
    UNEXPECTED_SIZE,
    SizeRange,
    format_flags,
    measure_quality,
    parse_flags,
    quality_flags,
    size_range,
    size_range_from_card,
    stain_agreement,
)
from model.synthetic_data import draw_tile

BLUR_SIGMA = 4  # pixels, at 700 x 460
# The size range a model trained on the BreakHis sample records (its tiles are 500-700 wide).
SAMPLE_SIZES = SizeRange(500, 700, 328, 460, images=345)


def flags_of(image: Image.Image, sizes: SizeRange | None = SAMPLE_SIZES) -> tuple[str, ...]:
    return quality_flags(measure_quality(image), sizes)


@pytest.fixture(scope="module")
def sample_images(breakhis_sample) -> dict[str, Image.Image]:
    """Every image of the real sample, decoded, by relative path."""
    with open(breakhis_sample / "MANIFEST.csv", newline="") as handle:
        entries = list(csv.DictReader(handle))
    return {
        entry["relative_path"]: decode_rgb((breakhis_sample / entry["relative_path"]).read_bytes())
        for entry in entries
    }


@pytest.fixture(scope="module")
def synthetic_tile() -> Image.Image:
    """A drawn 700 x 460 H&E-like tile (clean), for the checks that need no real sample."""
    return Image.fromarray(draw_tile(np.random.default_rng(5), False, 700, 460, "100X"))


def test_every_real_sample_image_passes(sample_images):
    assert len(sample_images) == 345
    sizes = size_range(image.size for image in sample_images.values())
    assert sizes[:4] == SAMPLE_SIZES[:4]
    flagged = {
        path: flags
        for path, image in sample_images.items()
        if (flags := quality_flags(measure_quality(image), sizes))
    }
    assert flagged == {}


def test_blurred_and_grayscale_copies_of_real_images_are_flagged_for_that_alone(sample_images):
    wide = [image for image in sample_images.values() if image.size == (700, 460)]
    for image in wide[::12]:  # 25 images across classes, subtypes and magnifications
        blurred = image.filter(ImageFilter.GaussianBlur(BLUR_SIGMA))
        assert flags_of(blurred) == (OUT_OF_FOCUS,)
        assert flags_of(image.convert("L").convert("RGB")) == (NOT_HE_STAINED,)


def test_a_drawn_tile_passes_and_its_blurred_and_grayscale_copies_do_not(synthetic_tile):
    assert flags_of(synthetic_tile) == ()
    assert flags_of(synthetic_tile.filter(ImageFilter.GaussianBlur(BLUR_SIGMA))) == (OUT_OF_FOCUS,)
    assert flags_of(synthetic_tile.convert("L").convert("RGB")) == (NOT_HE_STAINED,)


def test_blank_white_glass_is_low_tissue():
    blank = Image.new("RGB", (700, 460), (255, 255, 255))
    measures = measure_quality(blank)
    assert measures.tissue_fraction == 0.0
    assert LOW_TISSUE in quality_flags(measures, SAMPLE_SIZES)


def test_uniform_grey_has_no_stain_and_no_detail():
    flags = flags_of(Image.new("RGB", (700, 460), (128, 128, 128)))
    assert NOT_HE_STAINED in flags and OUT_OF_FOCUS in flags
    assert LOW_TISSUE not in flags


def test_random_noise_is_not_he_stained():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (460, 700, 3), dtype=np.uint8))
    assert flags_of(noise) == (NOT_HE_STAINED,)


def test_a_one_pixel_image_has_an_unexpected_size_when_the_card_records_sizes():
    pixel = Image.new("RGB", (1, 1), (200, 120, 180))  # an H&E pink
    flags = flags_of(pixel)
    assert UNEXPECTED_SIZE in flags and OUT_OF_FOCUS in flags
    assert UNEXPECTED_SIZE not in flags_of(pixel, sizes=None)  # an older card: no size check


def test_the_size_check_allows_the_tolerance_beyond_the_training_range():
    sizes = SizeRange(500, 700, 328, 460, images=3)
    assert sizes.accepts(400, 263) and sizes.accepts(875, 575)
    assert not sizes.accepts(399, 460) and not sizes.accepts(700, 576)
    assert not sizes.accepts(460, 700)  # a portrait tile of a landscape-trained model


def test_flags_are_listed_in_alphabetical_order_and_empty_when_clean():
    assert list(QC_FLAGS) == sorted(QC_FLAGS)
    assert format_flags([OUT_OF_FOCUS, LOW_TISSUE]) == "low_tissue;out_of_focus"
    assert format_flags([]) == "" and parse_flags("") == ()
    assert parse_flags("low_tissue;out_of_focus") == (LOW_TISSUE, OUT_OF_FOCUS)


def test_grey_pixels_have_no_colour_at_all():
    levels = np.arange(256, dtype=np.uint8)
    grey = np.stack([levels, levels, levels], axis=1)
    assert stain_agreement(grey) == 0.0
    assert stain_agreement(np.zeros((0, 3), np.uint8)) == 0.0


def test_stain_score_is_high_for_h_and_e_colours_and_negative_for_their_complement():
    haematoxylin_purple = [[90, 60, 140]] * 10
    eosin_pink = [[230, 120, 190]] * 10
    assert stain_agreement(np.array(haematoxylin_purple + eosin_pink, np.uint8)) > 0.7
    assert stain_agreement(np.array([[120, 200, 90]] * 10, np.uint8)) < 0  # green


def test_card_size_records_round_trip_and_malformed_ones_are_refused():
    sizes = SizeRange(500, 700, 328, 460, images=12)
    assert size_range_from_card(sizes.to_card()) == sizes
    assert size_range_from_card({}) is None and size_range_from_card(None) is None
    for bad in (
        {"width": {"min": 500}, "height": {"min": 1, "max": 2}},
        {"width": {"min": 700, "max": 500}, "height": {"min": 1, "max": 2}},
        {"width": {"min": "500", "max": 700}, "height": {"min": 1, "max": 2}},
        {"width": {"min": True, "max": 700}, "height": {"min": 1, "max": 2}},
        [1, 2],
    ):
        with pytest.raises(ValueError, match="training_image_sizes"):
            size_range_from_card(bad)
