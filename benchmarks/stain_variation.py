"""The stain variation of real BreakHis images, and what HED jitter of strength S does to it.

    python benchmarks/stain_variation.py [--image_dir ../shared/breakhis-sample] [--draws 4]

Every PNG under --image_dir is loaded as training loads it (`model.image.preprocessing.load_image`
at --image_size) and split into haematoxylin, eosin and DAB concentrations (`model.image.stain`).
An image's stain statistic is the mean concentration over its tissue pixels
(`model.image.quality`'s tissue mask); a slide's is the mean over its images. The script prints:

1. The spread of those statistics over images and over slides (the between-slide spread of one
   lab's slides is a floor for the variation between labs).
2. For each stain, the jitter strength that reaches the slide statistics farthest from the
   median: jitter of strength S moves a mean concentration c by at most S * c + S, so reaching
   a slide at distance d from the median m needs S >= d / (1 + m). Given for the middle half of
   the slides, their 5-95% range and their full range.
3. For candidate strengths, --draws random jitters of every image (the training input's draws):
   the share of pixel values clipped to 0 or 255, the QC measures of the jittered images
   (stain_score, with the share that `model.image.quality` would flag as not H&E stained, and the
   share with too little tissue), and how far the jittered images' mean H and E spread compared
   with the real slides' range.
"""

from __future__ import annotations

import argparse
import collections
import pathlib

import numpy as np
import tensorflow as tf

from model.image.naming import parse_breakhis_name
from model.image.preprocessing import load_image
from model.image.quality import (
    MIN_STAIN_SCORE,
    MIN_TISSUE_FRACTION,
    stain_agreement,
    tissue_mask,
)
from model.image.stain import STAIN_NAMES, stain_concentrations, stain_jitter

CANDIDATES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


def tissue_means(rgb: np.ndarray) -> np.ndarray:
    """Mean H, E and DAB concentration over the tissue pixels of a uint8 image ([3])."""
    concentrations = stain_concentrations(tf.constant(rgb, tf.float32)).numpy().reshape(-1, 3)
    mask = tissue_mask(rgb).reshape(-1)
    return concentrations[mask].mean(axis=0) if mask.any() else concentrations.mean(axis=0)


def _spread_table(title: str, values: np.ndarray) -> None:
    print(f"\n{title} ({len(values)})")
    columns = " ".join(f"{name:>7s}" for name in ("min", "p5", "median", "p95", "max", "sd"))
    print(f"  {'stain':13s} {columns}")
    for index, name in enumerate(STAIN_NAMES):
        column = values[:, index]
        p5, median, p95 = np.percentile(column, [5, 50, 95])
        print(
            f"  {name:13s} {column.min():7.3f} {p5:7.3f} {median:7.3f} {p95:7.3f} "
            f"{column.max():7.3f} {column.std(ddof=1):7.3f}"
        )


def _reach(median: float, low: float, high: float) -> float:
    """The strength whose jitter moves a mean at `median` as far as `low` and `high`."""
    return max(median - low, high - median) / (1.0 + median)


def _needed_strength(slides: np.ndarray) -> None:
    print("\nJitter strength S that reaches the slides farthest from the median: d / (1 + median)")
    for index, name in enumerate(STAIN_NAMES[:2]):
        column = slides[:, index]
        p5, p25, median, p75, p95 = np.percentile(column, [5, 25, 50, 75, 95])

        print(
            f"  {name:13s} 25-75%: S >= {_reach(median, p25, p75):.3f}   5-95%: S >= "
            f"{_reach(median, p5, p95):.3f}   full range: S >= "
            f"{_reach(median, column.min(), column.max()):.3f}"
        )


def _stain_score(rgb: np.ndarray) -> float:
    """model.image.quality's stain_score of a uint8 image's tissue pixels."""
    flat = rgb.reshape(-1, 3)
    return stain_agreement(flat[tissue_mask(flat)])


def _jittered(images: list[np.ndarray], strength: float, draws: int) -> dict[str, float]:
    clipped, scores, low_tissue, means = [], [], [], []
    for image_index, rgb in enumerate(images):
        image = tf.constant(rgb, tf.float32)
        for draw in range(draws):
            seed = tf.constant([image_index, draw], tf.int64)
            jittered_levels = stain_jitter(image, strength, seed).numpy()
            clipped.append(float(np.mean((jittered_levels <= 0.0) | (jittered_levels >= 255.0))))
            jittered = np.round(jittered_levels).astype(np.uint8)
            low_tissue.append(tissue_mask(jittered).mean() < MIN_TISSUE_FRACTION)
            scores.append(_stain_score(jittered))
            means.append(tissue_means(jittered))
    scores_array, means_array = np.array(scores), np.array(means)
    return {
        "clipped": float(np.mean(clipped)),
        "stain_min": float(scores_array.min()),
        "stain_median": float(np.median(scores_array)),
        "not_he": float(np.mean(scores_array < MIN_STAIN_SCORE)),
        "low_tissue": float(np.mean(low_tissue)),
        "h_range": (float(means_array[:, 0].min()), float(means_array[:, 0].max())),
        "e_range": (float(means_array[:, 1].min()), float(means_array[:, 1].max())),
    }


def main() -> None:
    """Measure and print the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--image_dir", default="../shared/breakhis-sample")
    parser.add_argument("--image_size", type=int, default=128, help="as training loads them")
    parser.add_argument("--draws", type=int, default=4, help="jitters per image and strength")
    args = parser.parse_args()
    paths = sorted(pathlib.Path(args.image_dir).rglob("*.png"))
    if not paths:
        raise SystemExit(f"no PNG under {args.image_dir}")
    images = [load_image(path.read_bytes(), args.image_size) for path in paths]
    per_image = np.stack([tissue_means(rgb) for rgb in images])
    by_slide = collections.defaultdict(list)
    for path, means in zip(paths, per_image, strict=True):
        info = parse_breakhis_name(path.name)
        by_slide[info.slide_id if info else path.parent.name].append(means)
    per_slide = np.stack([np.mean(values, axis=0) for values in by_slide.values()])
    print(f"{len(paths)} images, {len(by_slide)} slides, at {args.image_size} px")
    _spread_table("Mean stain concentration over tissue, per image", per_image)
    _spread_table("Mean stain concentration over tissue, per slide", per_slide)
    _needed_strength(per_slide)
    real_scores = [_stain_score(rgb) for rgb in images]
    print(
        f"\nJittered images ({args.draws} draws per image). Real slides: haematoxylin "
        f"{per_slide[:, 0].min():.3f}..{per_slide[:, 0].max():.3f}, eosin "
        f"{per_slide[:, 1].min():.3f}..{per_slide[:, 1].max():.3f}; real images: stain_score "
        f"min {min(real_scores):.3f}, {np.mean(np.array(real_scores) < MIN_STAIN_SCORE):.2%} "
        "not H&E"
    )
    print(
        f"  {'S':>5s} {'clipped':>8s} {'stain min':>9s} {'median':>7s} {'not H&E':>8s} "
        f"{'low tis.':>8s}  {'H range':>13s}  {'E range':>13s}"
    )
    for strength in CANDIDATES:
        row = _jittered(images, strength, args.draws)
        print(
            f"  {strength:5.2f} {row['clipped']:8.2%} {row['stain_min']:9.3f} "
            f"{row['stain_median']:7.3f} {row['not_he']:8.2%} {row['low_tissue']:8.2%}  "
            f"{row['h_range'][0]:6.3f}..{row['h_range'][1]:5.3f}  "
            f"{row['e_range'][0]:6.3f}..{row['e_range'][1]:5.3f}"
        )


if __name__ == "__main__":
    main()
