"""What input quality control costs the scorer per image, as ratios measured in the same run.

    python benchmarks/qc_overhead.py [--image_dir ../shared/breakhis-sample] [--images 64]
        [--rounds 5] [--image_size 128] [--batch_size 32]

On real images (the first --images PNGs under --image_dir, read into memory first), times per
image:
- prepare:  the scorer's preprocessing without QC (`prepare_image`: decode, model input, the
            original kept for the overlay),
- measured: the same with the quality measures (`prepare_measured_image`, what the scorer runs),
- measures: `measure_quality` alone on an already decoded image,
- forward:  a VGG16 forward pass with Grad-CAM (random weights, --image_size px, batches of
            --batch_size), the model work the scorer does for every image.
Prepare and measured alternate over --rounds rounds (medians reported), so drift in machine load
hits both alike. The ratios printed compare per-image scoring work with and without QC; writing
the overlay PNG, which the scorer also does per image, is left out, so the true share is lower.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import numpy as np

from model.image.preprocessing import decode_rgb, prepare_image, prepare_measured_image
from model.image.quality import measure_quality
from model.network.tensorflow_runtime import load_tensorflow, set_verbosity


def _ms_per_image(function, items) -> float:
    started = time.perf_counter()
    for item in items:
        function(item)
    return (time.perf_counter() - started) * 1000 / len(items)


def _forward_ms(image_size: int, batch_size: int, rounds: int) -> float:
    """Per-image time of a batched VGG16 forward pass with Grad-CAM (median over rounds)."""
    set_verbosity(False)
    load_tensorflow()
    from model.network.architecture import build_classifier
    from model.network.gradcam import gradcam_model, predict_with_gradcam

    model = build_classifier(image_size, weights="none")
    grad_model = gradcam_model(model)
    rng = np.random.default_rng(0)
    batch = rng.uniform(-120, 130, (batch_size, image_size, image_size, 3)).astype(np.float32)
    predict_with_gradcam(grad_model, batch, 0.5)  # trace once
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        predict_with_gradcam(grad_model, batch, 0.5)
        times.append((time.perf_counter() - started) * 1000 / batch_size)
    return statistics.median(times)


def main() -> None:
    """Time each part and print the ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--image_dir", default="../shared/breakhis-sample")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    paths = sorted(pathlib.Path(args.image_dir).rglob("*.png"))[: args.images]
    if not paths:
        parser.error(f"no PNG images under {args.image_dir}")
    files = [path.read_bytes() for path in paths]
    decoded = [decode_rgb(data) for data in files]
    size = args.image_size

    prepare_ms, measured_ms, measures_ms = [], [], []
    for _ in range(args.rounds):
        prepare_ms.append(_ms_per_image(lambda data: prepare_image(data, size), files))
        measured_ms.append(_ms_per_image(lambda data: prepare_measured_image(data, size), files))
        measures_ms.append(_ms_per_image(measure_quality, decoded))
    prepare, measured = statistics.median(prepare_ms), statistics.median(measured_ms)
    measures = statistics.median(measures_ms)
    forward = _forward_ms(size, args.batch_size, args.rounds)

    print(f"{len(files)} real images from {args.image_dir}, {args.rounds} rounds (medians)")
    print(f"  prepare (decode + model input), no QC   {prepare:8.2f} ms/image")
    print(f"  prepare with the QC measures            {measured:8.2f} ms/image")
    print(f"  QC measures alone (decoded image)       {measures:8.2f} ms/image")
    print(
        f"  VGG16 {size} px forward + Grad-CAM, batch {args.batch_size}   {forward:8.2f} ms/image"
    )
    print(f"  preprocessing with QC / without          {measured / prepare:8.3f}")
    print(f"  QC measures / forward + Grad-CAM         {measures / forward:8.3f}")
    without, with_qc = prepare + forward, prepare + measures + forward
    print(f"  scoring work with QC / without           {with_qc / without:8.3f}")
    print(f"  throughput with QC / without             {without / with_qc:8.3f}")


if __name__ == "__main__":
    main()
