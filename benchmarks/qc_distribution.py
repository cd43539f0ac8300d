"""The input-quality measures over real images, and over the bad inputs each flag must catch.

    python benchmarks/qc_distribution.py [--image_dir ../shared/breakhis-sample] [--noise 20]

For every PNG under --image_dir: tissue_fraction, focus_score and stain_score (model.image.quality),
printed as min / 1st percentile / median / max, with the images at the minimum. Then the same
measures for copies made from those images that QC must flag: each 700-pixel-wide image blurred
with a Gaussian of sigma 4 px (PIL's GaussianBlur), each image as grayscale, and random RGB
noise at 700 x 460 (--noise seeds). The thresholds in model/image/quality.py sit between the two.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from PIL import Image, ImageFilter

from model.image.preprocessing import decode_rgb
from model.image.quality import (
    MIN_FOCUS_SCORE,
    MIN_STAIN_SCORE,
    MIN_TISSUE_FRACTION,
    QualityMeasures,
    measure_quality,
)

MEASURES = ("tissue_fraction", "focus_score", "stain_score")
THRESHOLDS = {
    "tissue_fraction": MIN_TISSUE_FRACTION,
    "focus_score": MIN_FOCUS_SCORE,
    "stain_score": MIN_STAIN_SCORE,
}
BLUR_SIGMA = 4


def _table(title: str, names: list[str], measured: list[QualityMeasures]) -> None:
    print(f"\n{title} ({len(measured)} images)")
    print(f"  {'measure':16s} {'min':>9s} {'p1':>9s} {'median':>9s} {'max':>9s}  threshold")
    for measure in MEASURES:
        values = np.array([getattr(m, measure) for m in measured], dtype=np.float64)
        low, high = int(np.argmin(values)), int(np.argmax(values))
        print(
            f"  {measure:16s} {values.min():9.4f} {np.percentile(values, 1):9.4f} "
            f"{np.median(values):9.4f} {values.max():9.4f}  {THRESHOLDS[measure]}"
            f"   (min: {names[low]}; max: {names[high]})"
        )


def main() -> None:
    """Measure and print the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--image_dir", default="../shared/breakhis-sample")
    parser.add_argument("--noise", type=int, default=20, help="random-noise images to measure")
    args = parser.parse_args()
    paths = sorted(pathlib.Path(args.image_dir).rglob("*.png"))
    if not paths:
        parser.error(f"no PNG images under {args.image_dir}")
    images = [decode_rgb(path.read_bytes()) for path in paths]
    names = [path.name for path in paths]
    _table("Real images", names, [measure_quality(image) for image in images])

    wide = [(name, image) for name, image in zip(names, images, strict=True) if image.width == 700]
    _table(
        f"Blurred copies (Gaussian sigma {BLUR_SIGMA} px, 700-pixel-wide images)",
        [name for name, _ in wide],
        [measure_quality(image.filter(ImageFilter.GaussianBlur(BLUR_SIGMA))) for _, image in wide],
    )
    _table(
        "Grayscale copies",
        names,
        [measure_quality(image.convert("L").convert("RGB")) for image in images],
    )
    noise = [
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (460, 700, 3), np.uint8))
        for seed in range(args.noise)
    ]
    _table(
        "Random RGB noise, 700 x 460",
        [f"seed {seed}" for seed in range(args.noise)],
        [measure_quality(image) for image in noise],
    )


if __name__ == "__main__":
    main()
