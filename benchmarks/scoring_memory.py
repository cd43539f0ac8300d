"""Peak memory of one scoring process: a 12000 x 12000 PNG against a folder of small tiles.

    PYTHONPATH=$PWD python benchmarks/scoring_memory.py --model_dir EXPORT [--side 12000]

Writes the huge PNG row by row (never holding it in memory), then runs
`python -m pipelines.score` (in_memory DirectRunner, one process) on it with and without
Grad-CAM, and on 16 synthetic 700 x 460 tiles as the baseline, and prints each child's peak RSS
(from wait4: the child and the worker processes it waited for) and its ratio to the baseline
measured in the run. Linux counts the address space a child was forked from in its peak, so this
script must stay small (it never loads TensorFlow or a decoded huge image); a child of a
3 GB process reports at least 3 GB (tests/pipelines/test_launcher.py spawns through a probe).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

from model.synthetic_data import generate_dataset
from tests.pipelines.helpers import write_large_png

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def peak_rss_mb(argv: list[str]) -> float:
    """Run the scorer's command line in a child process; its peak RSS in MiB."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.score", *argv],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"scoring failed: {argv}")
    return usage.ru_maxrss / 1024


def main() -> None:
    """Measure the three runs and print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model_dir", required=True, help="a training export")
    parser.add_argument("--side", type=int, default=12000, help="the huge PNG's side in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        huge = os.path.join(scratch, "huge.png")
        write_large_png(huge, args.side, args.side)
        tiles = os.path.join(scratch, "tiles")
        generate_dataset(tiles, patients_per_class=1, images_per_magnification=2, seed=0)
        runs = {
            "16 tiles 700x460, Grad-CAM (baseline)": [tiles],
            f"{args.side}x{args.side} PNG, Grad-CAM": [huge],
            f"{args.side}x{args.side} PNG, --no_gradcam": [huge, "--no_gradcam"],
        }
        results = {}
        for index, (label, extra) in enumerate(runs.items()):
            argv = ["--input", extra[0], "--model_dir", args.model_dir]
            argv += ["--output_dir", os.path.join(scratch, f"out{index}"), *extra[1:]]
            results[label] = peak_rss_mb(argv)
    baseline = next(iter(results.values()))
    print(f"{'run':45s} {'peak RSS':>10s} {'ratio':>6s}")
    for label, peak in results.items():
        print(f"{label:45s} {peak:8.0f} MB {peak / baseline:6.2f}")


if __name__ == "__main__":
    main()
