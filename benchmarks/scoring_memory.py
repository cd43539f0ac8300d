"""Peak memory of scoring: flat in the number of images, and bounded for one huge image.

    PYTHONPATH=$PWD python benchmarks/scoring_memory.py --model_dir EXPORT \
        [--counts 1000 5000] [--side 12000]

Scale: `python -m pipelines.score` (multi_processing DirectRunner on every core, Grad-CAM on)
over folders of 1,000 and 5,000 distinct files (links to 16 synthetic 700 x 460 tiles: the
content does not matter, the number of images does); the peak RSS of the largest scoring
process must not grow with the count.
Huge image: a 12000 x 12000 PNG written row by row (never held in memory), scored in one
in-memory process with and without Grad-CAM, against 16 tiles as the baseline.

Each peak RSS is that of the largest process of the run (the launcher or a worker), measured
through a small probe process (tests/pipelines/helpers.run_with_peak_rss: a child's peak would
otherwise include the address space of the process it was forked from), and printed with its
ratio to the run's baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

from model.synthetic_data import generate_dataset
from tests.pipelines.helpers import run_with_peak_rss, write_large_png

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ALL_CORES = ["--direct_num_workers", "0", "--direct_running_mode", "multi_processing"]


def peak_rss_mb(argv: list[str]) -> float:
    """Run the scorer's command line; the peak RSS of its largest process in MiB."""
    returncode, peak = run_with_peak_rss(
        [sys.executable, "-m", "pipelines.score", *argv],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if returncode != 0:
        raise RuntimeError(f"scoring failed: {argv}")
    return peak


def _linked(tiles: list[pathlib.Path], count: int, folder: pathlib.Path) -> None:
    """count distinct files in folder, each a link to one of the tiles."""
    folder.mkdir()
    for index in range(count):
        os.symlink(tiles[index % len(tiles)], folder / f"image_{index:05d}.png")


def _table(title: str, results: dict[str, float]) -> None:
    baseline = next(iter(results.values()))
    print(f"\n{title}")
    print(f"{'run':45s} {'peak RSS':>10s} {'ratio':>6s}")
    for label, peak in results.items():
        print(f"{label:45s} {peak:8.0f} MB {peak / baseline:6.2f}")


def main() -> None:
    """Measure the runs and print the two tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model_dir", required=True, help="a training export")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--side", type=int, default=12000, help="the huge PNG's side in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = pathlib.Path(scratch_name)
        tiles_dir = scratch / "tiles"
        generate_dataset(str(tiles_dir), patients_per_class=1, images_per_magnification=2, seed=0)
        tiles = sorted(tiles_dir.rglob("*.png"))
        scale = {}
        for count in args.counts:
            folder = scratch / f"images_{count}"
            _linked(tiles, count, folder)
            argv = ["--input", str(folder), "--model_dir", args.model_dir]
            argv += ["--output_dir", str(scratch / f"out_{count}"), *ALL_CORES]
            scale[f"{count} images, Grad-CAM, all cores"] = peak_rss_mb(argv)
        huge = scratch / "huge.png"
        write_large_png(str(huge), args.side, args.side)
        runs = {
            "16 tiles 700x460, Grad-CAM (baseline)": [str(tiles_dir)],
            f"{args.side}x{args.side} PNG, Grad-CAM": [str(huge)],
            f"{args.side}x{args.side} PNG, --no_gradcam": [str(huge), "--no_gradcam"],
        }
        single = {}
        for index, (label, extra) in enumerate(runs.items()):
            argv = ["--input", extra[0], "--model_dir", args.model_dir]
            argv += ["--output_dir", str(scratch / f"huge_out{index}"), *extra[1:]]
            single[label] = peak_rss_mb(argv)
    _table("Number of images (largest process of the run):", scale)
    _table("One huge image (one in-memory process):", single)


if __name__ == "__main__":
    main()
