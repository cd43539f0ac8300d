"""Input quality control: cheap measures of one decoded image, and the flags they raise.

Both jobs take the measures once per decoded image (`model.image.preprocessing.measure_image` and
`prepare_measured_image`), on fixed-size copies of the image: a 128 x 128 colour copy for the
tissue and stain measures and a 384 x 384 grayscale copy for focus. A fixed size makes the
thresholds mean the same for every image size (the variance of a Laplacian grows with the
resolution it is taken at, and a share of pixels should not depend on how many there are), and
keeps the cost small and the same for every image (a few ms on one core;
benchmarks/qc_overhead.py measures it against the scoring work).

- `tissue_fraction`: the share of pixels that are not background. Glass without tissue is bright
  and unsaturated: mean of R, G, B at least `BACKGROUND_MIN_BRIGHTNESS` and HSV saturation
  (max - min) / max at most `BACKGROUND_MAX_SATURATION`; everything else counts as tissue.
- `focus_score`: the variance of the 4-neighbour Laplacian of the 384 x 384 grayscale copy
  (ITU-R 601 luma, 0-255). Sharp tissue has strong local contrast; a blurred field has little.
  It also falls with contrast and resolution: an image far smaller than 384 px is enlarged for
  the measure and reads as soft, and very high-contrast drawings keep more of it when blurred
  than real tissue does (the threshold is set on real tissue).
- `stain_score`: how well the tissue's colour agrees with haematoxylin and eosin. Each tissue
  pixel's optical density (OD = -log10((I + 1) / 256) per channel) is split into its grey part
  and its chromatic part (the component orthogonal to (1, 1, 1)); H&E tissue's chromatic OD points
  between the hues of the Ruifrok-Johnston H and E stain vectors. The score is the total chromatic
  OD's component along the hue midway between H and E, as a share of the total chromatic OD
  magnitude: near 1 when the colour is H&E's, 0 for grey (no colour at all) and for random
  colours (they cancel), negative for the complementary (green, yellow) hues. With no tissue
  pixel, or no colour at all, the score is 0.
- `width`, `height`: the decoded image's size, checked against the training images' sizes that a
  model card records (`unexpected_size`). A card without them (made before this check existed)
  gives no size check: the flag is never raised.

Flags (`QC_FLAGS`, listed in alphabetical order wherever several apply) and their thresholds
are defined below and nowhere else; the thresholds come from the 345 real images of the BreakHis
sample (benchmarks/qc_distribution.py prints the measured distributions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

LOW_TISSUE = "low_tissue"
NOT_HE_STAINED = "not_he_stained"
OUT_OF_FOCUS = "out_of_focus"
UNEXPECTED_SIZE = "unexpected_size"
QC_FLAGS: tuple[str, ...] = (LOW_TISSUE, NOT_HE_STAINED, OUT_OF_FOCUS, UNEXPECTED_SIZE)
"""Every flag, in the (alphabetical) order a `qc_flags` value lists them."""
FLAG_SEPARATOR = ";"

# Thresholds: an image is flagged when its measure is below the minimum. Tissue and stain sit at
# less than half the lowest value among the 345 real BreakHis sample images; focus, whose real
# and blurred ranges are closer, at the geometric mean of the sharpest blurred copy and the
# softest real image (1.5x from each). benchmarks/qc_distribution.py prints the distributions.
MIN_TISSUE_FRACTION = 0.10  # sample minimum 0.216; blank glass gives 0
MIN_FOCUS_SCORE = 12.0  # sample minimum 18.7; after a Gaussian blur of sigma 4 px: at most 8.1
MIN_STAIN_SCORE = 0.08  # sample minimum 0.17; grayscale 0; random RGB noise about 0.01
# unexpected_size: width or height more than this factor outside the training images' range.
SIZE_TOLERANCE = 1.25

COLOUR_SIZE = 128  # side of the colour copy for the tissue and stain measures
FOCUS_SIZE = 384  # side of the grayscale copy for the focus measure
BACKGROUND_MIN_BRIGHTNESS = 220  # mean of R, G, B (0-255) of background glass, at least
BACKGROUND_MAX_SATURATION = 0.08  # HSV saturation of background glass, at most

# Optical-density vectors of haematoxylin and eosin (R, G, B) from colour deconvolution:
# A. C. Ruifrok and D. A. Johnston, "Quantification of histochemical staining by color
# deconvolution", Analytical and Quantitative Cytology and Histology 23(4):291-299, 2001; the
# values are those of the "H&E" setting of G. Landini's ImageJ Colour Deconvolution plugin,
# which implements that paper (scikit-image's rgb_from_hpx uses the same haematoxylin vector).
HAEMATOXYLIN_OD = (0.644211, 0.716556, 0.266844)
EOSIN_OD = (0.092789, 0.954111, 0.283111)

TISSUE_DECIMALS = 4
FOCUS_DECIMALS = 2
STAIN_DECIMALS = 4

_OD_BY_LEVEL = -np.log10((np.arange(256, dtype=np.float64) + 1.0) / 256.0)


class QualityMeasures(NamedTuple):
    """The quality measures of one decoded image (rounded as predictions.csv writes them)."""

    tissue_fraction: float
    focus_score: float
    stain_score: float
    width: int
    height: int


def _chromatic(od: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The OD's coordinates in the plane orthogonal to grey (1, 1, 1); exactly 0 for grey.

    Differences of equal channel values are exactly zero, so a grey pixel has no colour at all
    (projecting out the grey part with a dot product would leave rounding noise).
    """
    red, green, blue = od[..., 0], od[..., 1], od[..., 2]
    return (red - green) / math.sqrt(2.0), (red + green - 2.0 * blue) / math.sqrt(6.0)


def _unit_hue(od_vector: tuple[float, float, float]) -> np.ndarray:
    u, v = _chromatic(np.asarray(od_vector, np.float64))
    return np.array([u, v]) / math.hypot(u, v)


# The hue midway between haematoxylin's and eosin's: the direction stain_score measures along.
_HE_DIRECTION = _unit_hue(HAEMATOXYLIN_OD) + _unit_hue(EOSIN_OD)
_HE_DIRECTION = _HE_DIRECTION / np.linalg.norm(_HE_DIRECTION)


def _channels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # One int16 array per channel: element-wise maxima over three arrays are many times faster
    # than a reduction over a last axis of length 3, and int16 holds every sum used here.
    return tuple(rgb[..., index].astype(np.int16) for index in range(3))


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """True where a uint8 RGB pixel (last axis) is tissue, not bright unsaturated glass."""
    red, green, blue = _channels(rgb)
    brightest = np.maximum(np.maximum(red, green), blue)
    darkest = np.minimum(np.minimum(red, green), blue)
    bright = red + green + blue >= 3 * BACKGROUND_MIN_BRIGHTNESS
    # saturation (max - min) / max <= limit, in integers: no division by a black pixel's 0
    unsaturated = (brightest - darkest) * 100 <= round(BACKGROUND_MAX_SATURATION * 100) * brightest
    return ~(bright & unsaturated)


def stain_agreement(rgb: np.ndarray) -> float:
    """stain_score of uint8 RGB tissue pixels (N x 3): their colour along the H&E hue, a share."""
    if rgb.size == 0:
        return 0.0
    od = np.stack([_OD_BY_LEVEL[channel] for channel in _channels(rgb)], axis=-1)
    u, v = _chromatic(od)
    colour = float(np.hypot(u, v).sum())
    if colour == 0.0:
        return 0.0
    return float((u * _HE_DIRECTION[0] + v * _HE_DIRECTION[1]).sum()) / colour


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior of a 2-D uint8 array (0 if tiny)."""
    if min(gray.shape) < 3:
        return 0.0
    # Exact integer arithmetic (|values| <= 1020 fit int16): fast, and the same on every machine.
    gray = gray.astype(np.int16)
    laplacian = (
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    )
    return float(laplacian.var(dtype=np.float64))


def measure_quality(image: Image.Image) -> QualityMeasures:
    """The quality measures of a decoded RGB image (see the module docstring for each)."""
    if image.mode != "RGB":
        raise ValueError(f"measure_quality takes an RGB image, not mode {image.mode}")
    colour = np.asarray(
        image.resize((COLOUR_SIZE, COLOUR_SIZE), Image.Resampling.BILINEAR)
    ).reshape(-1, 3)
    tissue = tissue_mask(colour)
    gray = np.asarray(
        image.convert("L").resize((FOCUS_SIZE, FOCUS_SIZE), Image.Resampling.BILINEAR)
    )
    width, height = image.size
    return QualityMeasures(
        tissue_fraction=round(float(tissue.mean()), TISSUE_DECIMALS),
        focus_score=round(laplacian_variance(gray), FOCUS_DECIMALS),
        stain_score=round(stain_agreement(colour[tissue]), STAIN_DECIMALS),
        width=int(width),
        height=int(height),
    )


class SizeRange(NamedTuple):
    """The smallest and largest widths and heights of a model's training images."""

    min_width: int
    max_width: int
    min_height: int
    max_height: int
    images: int

    def accepts(self, width: int, height: int) -> bool:
        """Whether a size is within SIZE_TOLERANCE of the range on both sides."""
        return (
            self.min_width / SIZE_TOLERANCE <= width <= self.max_width * SIZE_TOLERANCE
            and self.min_height / SIZE_TOLERANCE <= height <= self.max_height * SIZE_TOLERANCE
        )

    def to_card(self) -> dict[str, Any]:
        """The model card's `training_image_sizes` record."""
        return {
            "width": {"min": self.min_width, "max": self.max_width},
            "height": {"min": self.min_height, "max": self.max_height},
            "images": self.images,
            "tolerance": SIZE_TOLERANCE,
        }


def size_range(sizes: Iterable[tuple[int, int]]) -> SizeRange | None:
    """The range of (width, height) pairs, or None when there are none."""
    sizes = list(sizes)
    if not sizes:
        return None
    widths = [width for width, _ in sizes]
    heights = [height for _, height in sizes]
    return SizeRange(min(widths), max(widths), min(heights), max(heights), len(sizes))


def size_range_from_card(record: Mapping[str, Any] | None) -> SizeRange | None:
    """The SizeRange a card's `training_image_sizes` records; None for a card without one.

    Raises ValueError, saying what is needed, when the record is not `SizeRange.to_card`'s shape.
    """
    if not record:
        return None
    try:
        sides = [record[side][end] for side in ("width", "height") for end in ("min", "max")]
        images = record.get("images", 0)
    except (KeyError, TypeError, AttributeError):
        sides, images = [], 0
    valid = len(sides) == 4 and all(
        isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in sides
    )
    if not valid or sides[0] > sides[1] or sides[2] > sides[3]:
        raise ValueError(
            f"training_image_sizes {record!r} (need width and height, each with min <= max, "
            "positive integers)"
        )
    return SizeRange(*sides, images=int(images) if isinstance(images, int) else 0)


def quality_flags(measures: QualityMeasures, sizes: SizeRange | None) -> tuple[str, ...]:
    """The flags the measures raise, in QC_FLAGS order; no size check when sizes is None."""
    raised = {
        LOW_TISSUE: measures.tissue_fraction < MIN_TISSUE_FRACTION,
        NOT_HE_STAINED: measures.stain_score < MIN_STAIN_SCORE,
        OUT_OF_FOCUS: measures.focus_score < MIN_FOCUS_SCORE,
        UNEXPECTED_SIZE: sizes is not None and not sizes.accepts(measures.width, measures.height),
    }
    return tuple(flag for flag in QC_FLAGS if raised[flag])


def format_flags(flags: Iterable[str]) -> str:
    """The qc_flags text: flags joined by ';' in QC_FLAGS order, empty when clean."""
    chosen = set(flags)
    return FLAG_SEPARATOR.join(flag for flag in QC_FLAGS if flag in chosen)


def parse_flags(text: str) -> tuple[str, ...]:
    """The flags of a qc_flags text (empty text: none)."""
    return tuple(flag for flag in text.split(FLAG_SEPARATOR) if flag)


def thresholds() -> dict[str, Any]:
    """Every threshold by name, for model cards and summaries."""
    return {
        "min_tissue_fraction": MIN_TISSUE_FRACTION,
        "min_focus_score": MIN_FOCUS_SCORE,
        "min_stain_score": MIN_STAIN_SCORE,
        "size_tolerance": SIZE_TOLERANCE,
    }


def count_flags(flag_lists: Iterable[Iterable[str]]) -> dict[str, Any]:
    """{"images", "clean", "flags": {flag: images it caught}} over images' flag lists."""
    counts = {flag: 0 for flag in QC_FLAGS}
    images = clean = 0
    for flags in flag_lists:
        flags = tuple(flags)
        images += 1
        clean += not flags
        for flag in flags:
            counts[flag] += 1
    return {"images": images, "clean": clean, "flags": counts}
