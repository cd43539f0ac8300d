"""Cost of writing one Grad-CAM overlay per image: PNG compression levels against PIL's default.

    python benchmarks/heatmap_encoding.py [--images 20] [--image_dir DIR | --width 700 --height 460]

Takes real images (the first --images PNGs under --image_dir, e.g. ../shared/breakhis-sample) or
synthetic tiles, overlays a heatmap, and times the overlay and PNG encoding at several
compression levels. Prints each variant's time and size as a ratio of PIL's
default (level 6) measured in the same run; the pipeline uses level 1.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from model.image.overlay import encode_png, overlay_heatmap
from model.image.preprocessing import decode_image
from model.synthetic_data import draw_tile


def main() -> None:
    """Time the variants and print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--width", type=int, default=700)
    parser.add_argument("--height", type=int, default=460)
    parser.add_argument("--image_dir", help="read real PNGs from here instead of drawing tiles")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.image_dir:
        paths = sorted(pathlib.Path(args.image_dir).rglob("*.png"))[: args.images]
        tiles = [decode_image(path.read_bytes()) for path in paths]
        source = f"real images from {args.image_dir}"
    else:
        tiles = [
            draw_tile(rng, bool(i % 2), args.width, args.height, "100X") for i in range(args.images)
        ]
        source = "synthetic tiles"
    heatmaps = [rng.random((4, 4)).astype(np.float32) for _ in tiles]

    started = time.perf_counter()
    overlays = [
        overlay_heatmap(tile, heatmap) for tile, heatmap in zip(tiles, heatmaps, strict=True)
    ]
    overlay_ms = (time.perf_counter() - started) * 1000 / len(tiles)

    results = {}
    for level in (6, 1, 3, 9):
        started = time.perf_counter()
        sizes = [len(encode_png(overlay, compress_level=level)) for overlay in overlays]
        results[level] = (
            (time.perf_counter() - started) * 1000 / len(tiles),
            float(np.mean(sizes)),
        )
    base_ms, base_bytes = results[6]
    shape = "x".join(str(side) for side in tiles[0].shape[1::-1])
    print(f"{len(tiles)} overlays ({source}, first {shape}); overlay {overlay_ms:.1f} ms/image")
    print(f"{'PNG level':>10} {'ms/image':>9} {'x time':>7} {'KB/image':>9} {'x size':>7}")
    for level, (ms, size) in sorted(results.items()):
        note = "  (PIL default, baseline)" if level == 6 else "  (pipeline)" if level == 1 else ""
        ratios = f"{ms / base_ms:>7.2f} {size / 1024:>9.0f} {size / base_bytes:>7.2f}"
        print(f"{level:>10} {ms:>9.1f} {ratios}{note}")


if __name__ == "__main__":
    main()
