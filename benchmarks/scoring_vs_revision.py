"""End-to-end scoring throughput of this checkout against an earlier revision, in the same run.

    PYTHONPATH=$PWD python benchmarks/scoring_vs_revision.py [--baseline e6b95dd] \
        [--images ../shared/breakhis-sample] [--rounds 3] [--image_size 128] [-- SCORER FLAGS]

Extracts the baseline revision's files (`git archive`, nothing in this checkout changes), makes
a random-weight VGG16 export with each revision's own code (speed does not depend on the
weights; this checkout's export has its calibration layer, as training writes it), then runs
each revision's `python -m pipelines.score` on the same images, in one in-memory DirectRunner
process, alternating the two for --rounds rounds. It prints each revision's median images/s
over the whole command (start-up included) and over the scoring itself (summary.json's
`wall_time_seconds`), and the ratio of this checkout to the baseline. Extra flags after `--` go
to both scorers (e.g. `-- --no_gradcam`). The default baseline is the last commit before issue 8
(calibration, test-time views, quality control, review queue), so `--tta 1` with QC on is
compared with the scorer as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "e6b95dd"  # the last commit before issue 8

# Run with the revision's folder as the working directory and first on sys.path.
_EXPORT = """
import sys
import keras
import model
from model.network.architecture import build_classifier
from model.network.model_card import ModelCard
from train_job.export.files import write_export

assert model.__file__.startswith(sys.argv[3]), (model.__file__, sys.argv[3])
keras.utils.set_random_seed(0)
size = int(sys.argv[2])
network = build_classifier(size, weights="none")
try:  # revisions with calibration export the temperature layer training builds in
    from model.network.architecture import with_temperature
except ImportError:
    pass
else:
    network = with_temperature(network, 2.0)
write_export(network, ModelCard(model_id="benchmark", image_size=size, threshold=0.5), sys.argv[1])
"""


def _run(command: list[str], root: pathlib.Path) -> float:
    """Run a command with root's code first on the path; its wall time in seconds."""
    environment = {**os.environ, "PYTHONPATH": str(root)}
    start = time.perf_counter()
    subprocess.run(
        command,
        cwd=root,
        env=environment,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def _extract(revision: str, destination: pathlib.Path) -> None:
    """The revision's tracked files in destination."""
    archive = subprocess.run(
        ["git", "archive", revision], cwd=REPO_ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)


def main() -> None:
    """Export with both revisions, score alternately, print the medians and ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="a git revision")
    parser.add_argument(
        "--images",
        default=str(REPO_ROOT.parent / "shared" / "breakhis-sample"),
        help="a folder of images (scored recursively)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("scorer_flags", nargs="*", help="after --: flags for both scorers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = pathlib.Path(scratch_name)
        baseline_root = scratch / "baseline"
        baseline_root.mkdir()
        _extract(args.baseline, baseline_root)
        roots = {f"baseline {args.baseline}": baseline_root, "this checkout": REPO_ROOT}
        exports = {}
        for index, (name, root) in enumerate(roots.items()):
            exports[name] = scratch / f"export{index}"
            _run(
                [
                    sys.executable,
                    "-c",
                    _EXPORT,
                    str(exports[name]),
                    str(args.image_size),
                    str(root),
                ],
                root,
            )
        totals: dict[str, list[float]] = {name: [] for name in roots}
        scoring: dict[str, list[float]] = {name: [] for name in roots}
        images = 0
        for round_index in range(args.rounds):
            for name, root in roots.items():
                output = scratch / f"out-{round_index}-{name.split()[0]}"
                command = [
                    sys.executable,
                    "-m",
                    "pipelines.score",
                    "--input",
                    args.images,
                    "--model_dir",
                    str(exports[name]),
                    "--output_dir",
                    str(output),
                    *args.scorer_flags,
                ]
                elapsed = _run(command, root)
                summary = json.loads((output / "summary.json").read_text())
                images = summary["scored"] + summary["failed"]
                totals[name].append(images / elapsed)
                scoring[name].append(images / summary["wall_time_seconds"])
                print(
                    f"round {round_index + 1} {name}: {images} images, {elapsed:.1f} s "
                    f"(scoring {summary['wall_time_seconds']:.1f} s)",
                    flush=True,
                )
    baseline_name, current_name = roots
    print(f"\n{images} images, flags: {' '.join(args.scorer_flags) or '(defaults)'}")
    print(f"{'':28s} {'images/s (command)':>20s} {'images/s (scoring)':>20s}")
    for name in roots:
        print(
            f"{name:28s} {statistics.median(totals[name]):20.2f} "
            f"{statistics.median(scoring[name]):20.2f}"
        )
    for label, series in (("command", totals), ("scoring", scoring)):
        ratio = statistics.median(series[current_name]) / statistics.median(series[baseline_name])
        print(f"ratio this checkout / baseline ({label}): {ratio:.3f}")


if __name__ == "__main__":
    main()
