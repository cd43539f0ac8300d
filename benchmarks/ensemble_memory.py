"""Peak memory and wall time of one scoring process as the ensemble grows from 1 to K members.

    PYTHONPATH=$PWD python benchmarks/ensemble_memory.py --model_dir EXPORT \
        --image_dir ../shared/breakhis-sample [--members 1 3 5] [--images 64] [--no_gradcam]

Builds, for each K, a cross-validation folder of K folds that all hold the export's model.keras
(a symbolic link: copies of one network cost what K trained folds of the same architecture cost)
under cards with distinct model ids, then runs `python -m pipelines.score` on it (in_memory
DirectRunner, one process) over the first --images images and prints the child's peak RSS
(wait4) and wall time. Like benchmarks/scoring_memory.py this process stays small (no
TensorFlow), since Linux counts the parent's address space in a forked child's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from model.constants import MODEL_CARD_FILE, MODEL_FILE, fold_dir_name

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def cv_folder_of_copies(export: str, members: int, root: str) -> str:
    """A cross-validation folder whose `members` folds are the export under other model ids."""
    card = json.loads(pathlib.Path(export, MODEL_CARD_FILE).read_text())
    folder = os.path.join(root, f"cv{members}")
    for fold in range(members):
        fold_dir = pathlib.Path(folder, fold_dir_name(fold))
        fold_dir.mkdir(parents=True)
        os.symlink(os.path.abspath(os.path.join(export, MODEL_FILE)), fold_dir / MODEL_FILE)
        config = {**card.get("training_config", {}), "folds": members, "fold": fold}
        fold_card = {**card, "model_id": f"{card['model_id']}-{fold}", "training_config": config}
        (fold_dir / MODEL_CARD_FILE).write_text(json.dumps(fold_card))
    return folder


def measure(argv: list[str]) -> tuple[float, float]:
    """Run the scorer's command line in a child; (peak RSS in MiB, wall seconds)."""
    start = time.perf_counter()
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
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    """Measure one run per member count and print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model_dir", required=True, help="a training export")
    parser.add_argument("--image_dir", required=True, help="a folder of images to score")
    parser.add_argument("--members", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--images", type=int, default=64, help="images scored per run")
    parser.add_argument("--no_gradcam", action="store_true")
    args = parser.parse_args()
    images = sorted(
        str(path) for path in pathlib.Path(args.image_dir).rglob("*.png") if path.is_file()
    )[: args.images]
    with tempfile.TemporaryDirectory() as scratch:
        manifest = os.path.join(scratch, "images.csv")
        pathlib.Path(manifest).write_text("image_path\n" + "\n".join(images) + "\n")
        results = {}
        for members in args.members:
            folder = cv_folder_of_copies(args.model_dir, members, scratch)
            argv = ["--input", manifest, "--model_dir", folder]
            argv += ["--output_dir", os.path.join(scratch, f"out{members}")]
            argv += ["--no_gradcam"] if args.no_gradcam else []
            results[members] = measure(argv)
    first_members, (first_peak, _) = next(iter(results.items()))
    print(f"{len(images)} images, Grad-CAM {'off' if args.no_gradcam else 'on'}")
    print(f"{'members':>7s} {'peak RSS':>10s} {'per extra member':>17s} {'wall':>8s}")
    for members, (peak, seconds) in results.items():
        extra = members - first_members
        per_member = f"{(peak - first_peak) / extra:12.0f} MB" if extra else f"{'-':>15s}"
        print(f"{members:7d} {peak:7.0f} MB {per_member:>17s} {seconds:7.1f}s")


if __name__ == "__main__":
    main()
