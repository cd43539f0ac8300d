"""The whole flow on built-in synthetic data: generate -> train (CPU) -> score with Beam -> report.

Run through `bash scripts/demo.sh`, which installs the package into .venv first. Each step is
the same command a user would type, so the demo also shows how to run the jobs one by one.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_step(title: str, command: list[str]) -> None:
    """Run one step, echoing the command, and stop the demo if it fails."""
    print(f"\n== {title}\n$ {shlex.join(command)}", flush=True)
    started = time.monotonic()
    completed = subprocess.run(command, cwd=ROOT)
    if completed.returncode != 0:
        sys.exit(f"demo step failed ({title}), exit code {completed.returncode}")
    print(f"-- {title}: {time.monotonic() - started:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse flags and run the three steps."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--output_dir", default="demo_output", help="Where everything goes")
    parser.add_argument("--patients_per_class", type=int, default=6)
    parser.add_argument("--images_per_magnification", type=int, default=4)
    parser.add_argument("--image_size", type=int, default=64, help="Model input side (pixels)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--fine_tune_epochs", type=int, default=4)
    args = parser.parse_args(argv)

    python = sys.executable
    out = os.path.abspath(args.output_dir)
    data_dir, model_dir, scores_dir = (
        os.path.join(out, name) for name in ("data", "model", "scores")
    )
    started = time.monotonic()
    run_step(
        "1/3 generate a synthetic BreakHis-layout data set",
        [
            python,
            "-m",
            "model.synthetic_data",
            "--output_dir",
            data_dir,
            "--patients_per_class",
            str(args.patients_per_class),
            "--images_per_magnification",
            str(args.images_per_magnification),
        ],
    )
    run_step(
        "2/3 train on the CPU (no ImageNet weights needed)",
        [
            python,
            "train_job/main.py",
            "--data_dir",
            data_dir,
            "--output_dir",
            model_dir,
            "--weights",
            "none",
            "--image_size",
            str(args.image_size),
            "--batch_size",
            "16",
            "--epochs",
            str(args.epochs),
            "--fine_tune_epochs",
            str(args.fine_tune_epochs),
            "--fine_tune_from",
            "block1",
            "--fine_tune_learning_rate",
            "1e-4",
            "--val_fraction",
            "0.2",
            "--test_fraction",
            "0.2",
        ],
    )
    run_step(
        "3/3 score every image with the Beam pipeline (DirectRunner, all local cores)",
        [
            python,
            "-m",
            "pipelines.score",
            "--input",
            os.path.join(data_dir, "**", "*.png"),
            "--model_dir",
            model_dir,
            "--output_dir",
            scores_dir,
            "--overwrite",  # a rerun of the demo replaces its earlier scores
            "--direct_num_workers",
            "0",
            "--direct_running_mode",
            "multi_processing",
        ],
    )
    print(
        f"\nDemo finished in {time.monotonic() - started:.0f}s.\n"
        f"  Scoring report:  {os.path.join(scores_dir, 'report.html')}\n"
        f"  Training report: {os.path.join(model_dir, 'report.html')}\n"
        f"  Predictions:     {os.path.join(scores_dir, 'predictions.csv')}\n"
        "Note: the scoring run covers every synthetic image, training ones included; the training "
        "report's figures are for its held-out, specimen-disjoint test split."
    )


if __name__ == "__main__":
    main()
