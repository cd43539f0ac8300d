"""Procedurally drawn H&E-like tiles in the BreakHis folder layout, for tests and demos.

The real dataset cannot ship with the project, so tests and the training demo draw stand-ins:
pink/lavender stroma with texture and white gaps, purple nuclei as irregular ellipses. Malignant
tiles have denser, larger, darker and more pleomorphic nuclei; benign tiles sparse, small, regular,
evenly spaced ones; higher magnifications show larger nuclei. The class difference is carried by
how much of the tile is dark nucleus, so it survives downscaling to a 32x32 model input, while
random positions and per-image colour jitter keep every tile different.

Files follow the dataset's own layout and names (`model.image.naming` parses them). Patients cycle
through the four subtypes of their class, and each class's first two patients are two
letter-suffixed sections of one specimen (`22-NNNNNAB`, `22-NNNNNCD`), so specimen-level splitting
is exercised; the two sections sit under different subtypes, as slide 14-13412 does in the real
dataset.

    python -m model.synthetic_data --output_dir /tmp/breakhis-synthetic
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from model.constants import CLASS_NAMES, MAGNIFICATIONS, SUBTYPES

logger = logging.getLogger(__name__)

DATASET_SUBDIR = os.path.join("BreaKHis_v1", "histology_slides", "breast")
SLIDE_YEAR = "22"  # real slides are from 2014 ("14-..."); "22" marks a slide as synthetic
MULTI_SECTION_SUFFIXES = ("AB", "CD")  # the two sections of each class's split specimen

# Nucleus radius multiplier per magnification: the same cells look larger at higher zoom.
_MAGNIFICATION_ZOOM = {"40X": 0.55, "100X": 1.0, "200X": 1.6, "400X": 2.4}
_REFERENCE_WIDTH = 700  # sizes below are in pixels of a 700-pixel-wide tile
_POLYGON_VERTICES = 14
_BACKGROUND_STEP = 4  # the background is drawn at 1/4 resolution, then upsampled

_STROMA_PINK = np.array([234, 162, 206], dtype=np.float32)
_STROMA_LAVENDER = np.array([214, 166, 222], dtype=np.float32)
_GAP_WHITE = np.array([248, 241, 248], dtype=np.float32)
_NUCLEUS_LIGHT = np.array([170, 115, 195], dtype=np.float32)
_NUCLEUS_DARK = np.array([52, 22, 98], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class _NucleusStyle:
    """How the nuclei of one class are drawn (radii in pixels of a 700-wide tile at 100X)."""

    coverage: tuple[float, float]  # fraction of the tile covered, drawn per image
    radius: float
    radius_spread: float  # relative standard deviation of the radius (pleomorphism)
    max_aspect: float  # elongation: long axis / short axis
    irregularity: float  # amplitude of the outline's wobble, relative to the radius
    darkness: tuple[float, float]  # 0 = light lavender, 1 = dark blue-purple
    clustered: bool  # sheets of cells rather than evenly spaced ones


_STYLES = {
    False: _NucleusStyle(
        coverage=(0.05, 0.12),
        radius=6.0,
        radius_spread=0.10,
        max_aspect=1.4,
        irregularity=0.04,
        darkness=(0.15, 0.45),
        clustered=False,
    ),
    True: _NucleusStyle(
        coverage=(0.24, 0.40),
        radius=9.5,
        radius_spread=0.35,
        max_aspect=2.0,
        irregularity=0.22,
        darkness=(0.55, 1.0),
        clustered=True,
    ),
}


def _smooth_noise(
    rng: np.random.Generator, height: int, width: int, cell_y: float, cell_x: float
) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled bicubically."""
    grid_h = max(2, math.ceil(height / cell_y) + 1)
    grid_w = max(2, math.ceil(width / cell_x) + 1)
    coarse = rng.uniform(-1.0, 1.0, size=(grid_h, grid_w)).astype(np.float32)
    field = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(field)


def _nucleus_centres(
    rng: np.random.Generator, count: int, width: int, height: int, clustered: bool
) -> np.ndarray:
    """Centres (count x 2, x then y): jittered grid when even, Gaussian clusters when not."""
    if not clustered:
        # A jittered grid spaces benign nuclei evenly without looking like a lattice.
        spacing = math.sqrt(width * height / max(count, 1))
        columns = max(1, math.ceil(width / spacing))
        rows = max(1, math.ceil(height / spacing))
        cells = rng.permutation(rows * columns)[:count]
        base = np.stack([cells % columns, cells // columns], axis=1).astype(np.float64) + 0.5
        jitter = rng.uniform(-0.35, 0.35, size=base.shape)
        return (base + jitter) * spacing
    clusters = max(1, int(rng.integers(2, 6)))
    centres = rng.uniform([0, 0], [width, height], size=(clusters, 2))
    spread = 0.18 * min(width, height)
    in_cluster = int(count * 0.7)
    members = centres[rng.integers(0, clusters, size=in_cluster)]
    clustered_points = members + rng.normal(0.0, spread, size=(in_cluster, 2))
    scattered = rng.uniform([0, 0], [width, height], size=(count - in_cluster, 2))
    # Wrapping keeps cluster members that fall off one edge on the tile, so coverage holds.
    return np.concatenate([clustered_points, scattered]) % [width, height]


def _draw_nuclei(
    rng: np.random.Generator,
    tile: Image.Image,
    style: _NucleusStyle,
    zoom: float,
    gaps: np.ndarray,
) -> None:
    """Draw the nuclei onto the tile as filled irregular ellipses, none centred in a gap."""
    width, height = tile.size
    mean_radius = max(1.0, style.radius * zoom * width / _REFERENCE_WIDTH)
    coverage = rng.uniform(*style.coverage)
    count = max(1, round(coverage * width * height / (math.pi * mean_radius**2)))

    centres = _nucleus_centres(rng, count, width, height, style.clustered)
    count = len(centres)
    radii = mean_radius * np.clip(rng.normal(1.0, style.radius_spread, count), 0.4, 2.5)
    aspects = rng.uniform(1.0, style.max_aspect, count)
    rotations = rng.uniform(0.0, math.pi, count)
    darkness = rng.uniform(*style.darkness, count)

    # Nuclei sit in tissue: one whose centre lies in a white gap is left out.
    gap_h, gap_w = gaps.shape
    gap_x = np.clip((centres[:, 0] * gap_w / width).astype(int), 0, gap_w - 1)
    gap_y = np.clip((centres[:, 1] * gap_h / height).astype(int), 0, gap_h - 1)
    in_tissue = rng.uniform(size=count) >= gaps[gap_y, gap_x]

    # Outline: a rotated ellipse whose radius wobbles with random low harmonics.
    angles = np.linspace(0.0, 2.0 * math.pi, _POLYGON_VERTICES, endpoint=False)
    phases = rng.uniform(0.0, 2.0 * math.pi, size=(count, 2, 1))
    amplitudes = rng.uniform(0.0, style.irregularity, size=(count, 2, 1))
    wobble = 1.0 + (amplitudes * np.cos(np.array([[2.0], [3.0]]) * angles + phases)).sum(axis=1)
    semi_x = (radii * np.sqrt(aspects))[:, None] * wobble
    semi_y = (radii / np.sqrt(aspects))[:, None] * wobble
    local_x = semi_x * np.cos(angles)
    local_y = semi_y * np.sin(angles)
    cos_r, sin_r = np.cos(rotations)[:, None], np.sin(rotations)[:, None]
    xs = centres[:, :1] + local_x * cos_r - local_y * sin_r
    ys = centres[:, 1:] + local_x * sin_r + local_y * cos_r
    outlines = np.stack([xs, ys], axis=2).reshape(count, -1)

    # Darker nuclei are bluer as well as darker; the whole slide's stain varies a little.
    jitter = rng.uniform(-8.0, 8.0, size=3)
    colours = _NUCLEUS_LIGHT + jitter + darkness[:, None] * (_NUCLEUS_DARK - _NUCLEUS_LIGHT)
    fills = np.clip(np.round(colours), 0, 255).astype(int)

    draw = ImageDraw.Draw(tile)
    for outline, fill in zip(outlines[in_tissue].tolist(), fills[in_tissue].tolist(), strict=True):
        draw.polygon(outline, fill=tuple(fill))


def draw_tile(
    rng: np.random.Generator, malignant: bool, width: int, height: int, magnification: str
) -> np.ndarray:
    """Draw one H&E-like tile (height x width x 3 uint8) of the given class and magnification."""
    if magnification not in _MAGNIFICATION_ZOOM:
        raise ValueError(
            f"unknown magnification {magnification!r}; expected one of {MAGNIFICATIONS}"
        )
    if width < 8 or height < 8:
        raise ValueError(f"tile must be at least 8x8 pixels, got {width}x{height}")
    style = _STYLES[bool(malignant)]
    zoom = _MAGNIFICATION_ZOOM[magnification]
    scale = width / _REFERENCE_WIDTH

    # The smooth background is computed at a quarter of the resolution and upsampled: it has
    # no detail finer than that, and full-resolution float arithmetic would dominate the time.
    low_w, low_h = math.ceil(width / _BACKGROUND_STEP), math.ceil(height / _BACKGROUND_STEP)
    low_scale = scale / _BACKGROUND_STEP

    # Stroma: a per-image mix of pink and lavender, with fibrous streaks and blotches.
    stroma = _STROMA_PINK + rng.uniform(0.0, 1.0) * (_STROMA_LAVENDER - _STROMA_PINK)
    stroma = stroma + rng.uniform(-10.0, 10.0, size=3)
    streak_x, streak_y = (60.0, 10.0) if rng.random() < 0.5 else (10.0, 60.0)
    streaks = _smooth_noise(
        rng, low_h, low_w, streak_y * low_scale * zoom, streak_x * low_scale * zoom
    )
    blotches = _smooth_noise(rng, low_h, low_w, 120.0 * low_scale, 120.0 * low_scale)
    shade = 1.0 + 0.06 * streaks + 0.05 * blotches
    background = stroma * shade[..., None]

    # White gaps (lumens, torn tissue) where a smooth field crosses a random threshold.
    gap_field = _smooth_noise(rng, low_h, low_w, 90.0 * low_scale * zoom, 90.0 * low_scale * zoom)
    threshold = rng.uniform(0.35, 0.7)
    gaps = np.clip((gap_field - threshold) * 6.0, 0.0, 1.0)
    background = background + gaps[..., None] * (_GAP_WHITE - background)
    background *= rng.uniform(0.93, 1.04)  # illumination differs between captures

    tile = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    _draw_nuclei(rng, tile, style, zoom, gaps)
    # No blur or per-pixel grain: each would cost more than all the drawing, and triple the
    # PNG encoding time, for no signal a model should learn.
    return np.array(tile)  # a writable copy


def _slide_ids(rng: np.random.Generator, patients_per_class: int) -> dict[str, list[str]]:
    """Unique slide ids per class; each class's first two patients are sections of one specimen."""
    numbers = rng.choice(np.arange(10000, 100000), size=2 * patients_per_class, replace=False)
    slide_ids: dict[str, list[str]] = {}
    for class_index, class_name in enumerate(CLASS_NAMES):
        ids = [
            f"{SLIDE_YEAR}-{number}"
            for number in numbers[class_index * patients_per_class :][:patients_per_class]
        ]
        if patients_per_class >= 2:
            ids[0] += MULTI_SECTION_SUFFIXES[0]
            ids[1] = ids[0][: -len(MULTI_SECTION_SUFFIXES[0])] + MULTI_SECTION_SUFFIXES[1]
        slide_ids[class_name] = ids
    return slide_ids


def generate_dataset(
    output_dir: str,
    patients_per_class: int = 4,
    images_per_magnification: int = 6,
    magnifications: Sequence[str] = MAGNIFICATIONS,
    width: int = 700,
    height: int = 460,
    seed: int = 0,
) -> list[str]:
    """Write a synthetic BreakHis tree under output_dir; returns the written PNG paths, sorted."""
    if patients_per_class < 1 or images_per_magnification < 1:
        raise ValueError("patients_per_class and images_per_magnification must be at least 1")
    magnifications = list(magnifications)
    unknown = sorted(set(magnifications) - set(MAGNIFICATIONS))
    if not magnifications or unknown:
        raise ValueError(f"magnifications must be a non-empty subset of {MAGNIFICATIONS}")
    if len(set(magnifications)) != len(magnifications):
        raise ValueError(f"magnifications repeat: {magnifications}")

    slide_ids = _slide_ids(np.random.default_rng([seed, 0]), patients_per_class)
    paths = []
    for class_index, class_name in enumerate(CLASS_NAMES):
        class_letter = class_name[0].upper()
        codes = [code for code, (_, label) in SUBTYPES.items() if label == class_name]
        for patient_index, slide_id in enumerate(slide_ids[class_name]):
            code = codes[patient_index % len(codes)]
            patient_dir = os.path.join(
                output_dir,
                DATASET_SUBDIR,
                class_name,
                "SOB",
                SUBTYPES[code][0],
                f"SOB_{class_letter}_{code}_{slide_id}",
            )
            for magnification in magnifications:
                mag_dir = os.path.join(patient_dir, magnification)
                os.makedirs(mag_dir, exist_ok=True)
                mag_index = MAGNIFICATIONS.index(magnification)
                for sequence in range(1, images_per_magnification + 1):
                    # One generator per image: an image depends only on the seed and its name.
                    rng = np.random.default_rng(
                        [seed, 1, class_index, patient_index, mag_index, sequence]
                    )
                    pixels = draw_tile(rng, class_index == 1, width, height, magnification)
                    name = (
                        f"SOB_{class_letter}_{code}-{slide_id}-"
                        f"{magnification[:-1]}-{sequence:03d}.png"
                    )
                    path = os.path.join(mag_dir, name)
                    Image.fromarray(pixels).save(path, format="PNG", compress_level=1)
                    paths.append(path)
    return sorted(paths)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(
        prog="python -m model.synthetic_data",
        description="Draw synthetic H&E-like tiles in the BreakHis folder layout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--output_dir", required=True, help="directory to write BreaKHis_v1/... under (local)"
    )
    parser.add_argument(
        "--patients_per_class",
        type=int,
        default=4,
        help="patient (slide) folders per class; they cycle through the class's 4 subtypes",
    )
    parser.add_argument(
        "--images_per_magnification",
        type=int,
        default=6,
        help="images per patient and magnification",
    )
    parser.add_argument(
        "--magnifications",
        nargs="+",
        default=list(MAGNIFICATIONS),
        choices=MAGNIFICATIONS,
        help="magnification folders to draw",
    )
    parser.add_argument("--width", type=int, default=700, help="tile width in pixels")
    parser.add_argument("--height", type=int, default=460, help="tile height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    args = parser.parse_args(argv)
    if args.patients_per_class < 1 or args.images_per_magnification < 1:
        parser.error("--patients_per_class and --images_per_magnification must be at least 1")
    if args.width < 8 or args.height < 8:
        parser.error("--width and --height must be at least 8")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: generate the dataset and log a one-line summary."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    start = time.perf_counter()
    paths = generate_dataset(
        output_dir=args.output_dir,
        patients_per_class=args.patients_per_class,
        images_per_magnification=args.images_per_magnification,
        magnifications=args.magnifications,
        width=args.width,
        height=args.height,
        seed=args.seed,
    )
    logger.info(
        "wrote %d synthetic %dx%d images (%d patients per class, %s) under %s in %.1fs",
        len(paths),
        args.width,
        args.height,
        args.patients_per_class,
        " ".join(args.magnifications),
        os.path.join(args.output_dir, DATASET_SUBDIR),
        time.perf_counter() - start,
    )


if __name__ == "__main__":
    main()
