"""Scoring throughput at --tta 1, 2, 4 and 8, with and without Grad-CAM, as ratios to --tta 1.

    PYTHONPATH=$PWD python benchmarks/tta_throughput.py [--model_dir EXPORT] [--images 64] \
        [--batch_size 32] [--image_size 128] [--repeats 3]

Times the scoring handler's `run_inference` (what RunInference calls per batch: every forward
pass of the batch, under the gradient tape with Grad-CAM) on synthetic 700x460 tiles read and
prepared beforehand by the handler's own preprocessing, so decoding and overlay writing (the same
work at every --tta) are left out. Without --model_dir a VGG16 at --image_size with random
weights is exported to a temporary folder (speed does not depend on the weights). The settings
are measured in turn, --repeats rounds, and each reports its median, so load from other processes
spreads over all of them; every figure is printed as a ratio to --tta 1 (with the same Grad-CAM
setting) measured in the same run.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from model import storage
from model.constants import TTA_CHOICES
from model.network.tensorflow_runtime import load_tensorflow, set_verbosity
from model.synthetic_data import draw_tile
from pipelines.scoring.model_handler import GradCamModelHandler, LoadedScorer, read_and_prepare


def _export(model_dir: str, image_size: int) -> None:
    """A random-weight VGG16 classifier export at image_size."""
    from model.network.architecture import build_classifier
    from model.network.model_card import ModelCard
    from train_job.export.files import write_export

    model = build_classifier(image_size, weights="none")
    write_export(
        model, ModelCard(model_id="benchmark", image_size=image_size, threshold=0.5), model_dir
    )


def _prepared(folder: pathlib.Path, count: int, image_size: int) -> list:
    """count synthetic tiles written as PNGs and prepared as the scorer prepares them."""
    rng = np.random.default_rng(0)
    batch = []
    for index in range(count):
        path = folder / f"tile_{index:04d}.png"
        Image.fromarray(draw_tile(rng, bool(index % 2), 700, 460, "100X")).save(path)
        batch.append(
            read_and_prepare(
                str(path), image_size, keep_original=True, max_bytes=storage.DEFAULT_MAX_BYTES
            )[1]
        )
    return batch


def _seconds(
    handler: GradCamModelHandler, scorer: LoadedScorer, batch: list, batch_size: int
) -> float:
    """Wall time of scoring every image, one RunInference batch of batch_size at a time."""
    started = time.perf_counter()
    for start in range(0, len(batch), batch_size):
        handler.run_inference(batch[start : start + batch_size], scorer)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """Measure every (--tta, Grad-CAM) setting and print images/s and ratios to --tta 1."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model_dir", help="a training export (default: a random 128-px VGG16)")
    parser.add_argument("--images", type=int, default=64, help="images per measurement")
    parser.add_argument("--batch_size", type=int, default=32, help="the scorer's --batch_size")
    parser.add_argument("--image_size", type=int, default=128, help="without --model_dir")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all settings")
    args = parser.parse_args(argv)
    set_verbosity(False)
    load_tensorflow()
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or str(pathlib.Path(scratch) / "export")
        if args.model_dir is None:
            _export(model_dir, args.image_size)
        explaining = GradCamModelHandler(model_dir, gradcam=True).load_model()
        scoring = GradCamModelHandler(model_dir, gradcam=False, tta=max(TTA_CHOICES)).load_model()
        image_size = explaining.model.inputs[0].shape[1]
        folder = pathlib.Path(scratch) / "tiles"
        folder.mkdir()
        batch = _prepared(folder, args.images, image_size)
        settings = [(tta, gradcam) for tta in TTA_CHOICES for gradcam in (True, False)]
        handlers = {
            (tta, gradcam): GradCamModelHandler(
                "unused", gradcam=gradcam, batch_size=args.batch_size, tta=tta
            )
            for tta, gradcam in settings
        }
        for setting, handler in handlers.items():  # trace every function before timing
            handler.run_inference(batch[: args.batch_size], explaining if setting[1] else scoring)
        times: dict[tuple[int, bool], list[float]] = {setting: [] for setting in settings}
        for _ in range(args.repeats):
            for setting, handler in handlers.items():
                scorer = explaining if setting[1] else scoring
                times[setting].append(_seconds(handler, scorer, batch, args.batch_size))
    rate = {setting: args.images / statistics.median(values) for setting, values in times.items()}
    print(
        f"{args.images} images of 700x460, model input {image_size}x{image_size}, --batch_size "
        f"{args.batch_size}, median of {args.repeats} rounds (images/s through run_inference)"
    )
    header = ("--tta", "Grad-CAM img/s", "x tta 1", "no Grad-CAM img/s", "x tta 1")
    print(f"{header[0]:>5} {header[1]:>15} {header[2]:>8} {header[3]:>18} {header[4]:>8}")
    for tta in TTA_CHOICES:
        on, off = rate[(tta, True)], rate[(tta, False)]
        print(
            f"{tta:>5} {on:>15.2f} {on / rate[(1, True)]:>8.2f} {off:>18.2f} "
            f"{off / rate[(1, False)]:>8.2f}"
        )
    print(f"Grad-CAM costs x{rate[(1, False)] / rate[(1, True)]:.2f} the time at --tta 1")


if __name__ == "__main__":
    main(sys.argv[1:])
