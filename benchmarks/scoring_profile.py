"""Where a scoring worker's time goes: CPU time per image of each step, network and the rest.

    PYTHONPATH=$PWD python benchmarks/scoring_profile.py [--model_dir EXPORT] \
        [--images_dir ../shared/breakhis-sample] [--images 128] [--batch_size 32] \
        [--baseline_revision 917732f] [--json scoring_profile.json]

Runs the scorer's own functions, step by step, over the same images (default: the first
--images PNGs of the BreakHis sample) with a 128-px export (default: a random-weight VGG16;
speed does not depend on the weights): read, decode, quality measures, resize + normalise, the
kept original, the network (a bare forward pass, and the Grad-CAM pass the scorer runs), then
per overlay format the map's scaling, upsampling, colouring + blending, encoding and writing,
and the predictions.csv row. Each step's cost is CPU time per image: the calling thread's for
the one-thread steps, the whole process's for the network (TensorFlow's threads). On a GPU
worker the network is cheap and the CPU work outside it sets the throughput, so the table sums
it per heatmap format, with the bytes per overlay file.

With --baseline_revision, the revision's overlay drawing and PNG encoding (`model/image/overlay.py`,
read with `git show`) are timed on the same maps in the same run, for the ratio of this
checkout's post-processing to the revision's. Prints a table and writes the same as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from model import storage
from model.image.overlay import OVERLAY_FORMATS, encode_overlay, scale_heatmap, upsample_heatmap
from model.image.preprocessing import OVERLAY_MAX_SIDE, bounded_copy, decode_rgb, model_input
from model.image.quality import measure_quality
from model.network.tensorflow_runtime import load_tensorflow, set_verbosity

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _per_image(step: Callable[[Any], Any], items: Sequence[Any]) -> tuple[list[Any], float, float]:
    """(results, thread CPU ms per item, wall ms per item) of a one-thread step."""
    cpu, wall = time.thread_time(), time.perf_counter()
    results = [step(item) for item in items]
    count = len(items)
    return (
        results,
        (time.thread_time() - cpu) * 1000 / count,
        (time.perf_counter() - wall) * 1000 / count,
    )


def _per_batch(
    step: Callable[[np.ndarray], Any], inputs: np.ndarray, batch_size: int
) -> tuple[list[Any], float, float]:
    """(results, process CPU ms per image, wall ms per image) of a batched multi-thread step."""
    step(inputs[:batch_size])  # traced and warmed up outside the timing
    cpu, wall = time.process_time(), time.perf_counter()
    results = [step(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    count = len(inputs)
    return (
        results,
        (time.process_time() - cpu) * 1000 / count,
        (time.perf_counter() - wall) * 1000 / count,
    )


def _export(model_dir: str, image_size: int) -> None:
    """A random-weight VGG16 classifier export at image_size, as training writes it."""
    from model.network.architecture import build_classifier
    from model.network.model_card import ModelCard
    from train_job.export.files import write_export

    write_export(
        build_classifier(image_size, weights="none"),
        ModelCard(model_id="benchmark", image_size=image_size, threshold=0.5),
        model_dir,
    )


def _revision_module(revision: str, path: str, scratch: pathlib.Path):
    """A module of this repository as it was at revision (read with `git show`)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    file = scratch / f"baseline_{pathlib.PurePosixPath(path).stem}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _network(
    model_dir: str, inputs: np.ndarray, batch_size: int
) -> tuple[dict, np.ndarray, float | None]:
    """The network's steps ({name: (cpu, wall)}), the Grad-CAM maps and the card's scale."""
    from model.network.gradcam import gradcam_model, predict_with_gradcam
    from model.network.model_card import load_exported_model

    model, card = load_exported_model(model_dir)
    grad_model = gradcam_model(model, card.last_conv_layer, card.logit_layer)
    _, forward_cpu, forward_wall = _per_batch(model.predict_on_batch, inputs, batch_size)
    results, cam_cpu, cam_wall = _per_batch(
        lambda batch: predict_with_gradcam(grad_model, batch), inputs, batch_size
    )
    steps = {
        "network: bare forward pass": (forward_cpu, forward_wall),
        "network: forward + Grad-CAM (the scorer's pass)": (cam_cpu, cam_wall),
    }
    return steps, np.concatenate([result.heatmaps for result in results]), card.heatmap_scale


def main() -> None:
    """Time every step, print the table and write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model_dir", help="a training export (default: a random 128-px VGG16)")
    parser.add_argument(
        "--images_dir", default=str(REPO_ROOT.parent / "shared" / "breakhis-sample")
    )
    parser.add_argument("--images", type=int, default=128, help="the first N PNGs")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=128, help="without --model_dir")
    parser.add_argument("--baseline_revision", help="also time this revision's overlay + PNG")
    parser.add_argument("--json", default="scoring_profile.json", help="where to write")
    args = parser.parse_args()
    set_verbosity(False)
    load_tensorflow()
    paths = sorted(storage.match(os.path.join(args.images_dir, "**", "*.png")))[: args.images]
    if not paths:
        raise SystemExit(f"error: no PNG under {args.images_dir}")

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = pathlib.Path(scratch_name)
        model_dir = args.model_dir or str(scratch / "export")
        if args.model_dir is None:
            _export(model_dir, args.image_size)
        from model.network.model_card import load_exported_model

        image_size = load_exported_model(model_dir)[1].image_size
        steps: dict[str, tuple[float, float]] = {}

        def timed(name: str, step: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            results, cpu, wall = _per_image(step, items)
            steps[name] = (cpu, wall)
            return results

        data = timed("read file", lambda p: storage.read_bytes(p), paths)
        decoded = timed("decode to RGB", decode_rgb, data)
        timed("quality measures", measure_quality, decoded)
        inputs = timed("resize + normalise", lambda rgb: model_input(rgb, image_size), decoded)
        originals = timed(
            "keep the original", lambda rgb: bounded_copy(rgb, OVERLAY_MAX_SIDE), decoded
        )
        network, heatmaps, heatmap_scale = _network(model_dir, np.stack(inputs), args.batch_size)
        steps.update(network)
        heats = timed("scale the map", lambda m: scale_heatmap(m, heatmap_scale), list(heatmaps))
        pairs = list(zip(originals, heats, strict=True))
        timed(
            "upsample the map",
            lambda pair: upsample_heatmap(pair[1], pair[0].shape[1], pair[0].shape[0]),
            pairs,
        )
        from model.image.overlay import overlay_heatmap

        overlays = timed("overlay: upsample + colour + blend", lambda p: overlay_heatmap(*p), pairs)
        sizes = {}
        for image_format in OVERLAY_FORMATS:
            encoded = timed(
                f"encode {image_format}", lambda o, f=image_format: encode_overlay(o, f), overlays
            )
            sizes[image_format] = float(np.mean([len(b) for b in encoded]))
            folder = scratch / image_format
            folder.mkdir()
            named = [(str(folder / f"{i:05d}"), b) for i, b in enumerate(encoded)]
            timed(f"write {image_format}", lambda nb: storage.write_bytes(*nb), named)
        baseline = {}
        if args.baseline_revision:
            old = _revision_module(args.baseline_revision, "model/image/overlay.py", scratch)
            old_overlays = timed(
                f"{args.baseline_revision}: overlay", lambda p: old.overlay_heatmap(*p), pairs
            )
            timed(
                f"{args.baseline_revision}: encode png",
                lambda o: old.encode_png(o, compress_level=1),
                old_overlays,
            )
            baseline = {
                "revision": args.baseline_revision,
                "overlays_identical": all(
                    np.array_equal(a, b) for a, b in zip(old_overlays, overlays, strict=True)
                ),
            }

    def cpu(*names: str) -> float:
        return sum(steps[name][0] for name in names)

    prepare = cpu(
        "read file", "decode to RGB", "quality measures", "resize + normalise", "keep the original"
    )
    overlay = cpu("scale the map", "overlay: upsample + colour + blend")
    outside = {
        "none": cpu("read file", "decode to RGB", "quality measures", "resize + normalise"),
        **{f: prepare + overlay + cpu(f"encode {f}", f"write {f}") for f in OVERLAY_FORMATS},
    }
    shape = "x".join(map(str, originals[0].shape[1::-1]))
    print(f"{len(paths)} images (first {shape}), {image_size}-px model, cores: {os.cpu_count()}")
    print(f"{'step':52s} {'CPU ms/image':>13s} {'wall ms/image':>14s}")
    for name, (cpu_ms, wall_ms) in steps.items():
        print(f"{name:52s} {cpu_ms:13.2f} {wall_ms:14.2f}")
    print("CPU outside the network per image, by --heatmap_format:")
    for name, cpu_ms in outside.items():
        size = f", {sizes[name] / 1024:.0f} KB per file" if name in sizes else ""
        print(f"  {name:6s} {cpu_ms:7.2f} ms{size}")
    jpeg_vs_png = {
        "encode_cpu": cpu("encode jpeg") / cpu("encode png"),
        "bytes": sizes["jpeg"] / sizes["png"],
    }
    print(
        f"JPEG / PNG: {jpeg_vs_png['encode_cpu']:.3f}x the encoding CPU time, "
        f"{jpeg_vs_png['bytes']:.3f}x the bytes per file"
    )
    if baseline:
        revision = args.baseline_revision
        old = cpu(f"{revision}: overlay", f"{revision}: encode png")
        new = {f: cpu("overlay: upsample + colour + blend", f"encode {f}") for f in OVERLAY_FORMATS}
        baseline["overlay_and_encode_cpu_ms"] = {"baseline_png": old, **new}
        print(
            f"overlay + encode vs {revision} (PNG): "
            + ", ".join(f"{f} {ms / old:.2f}x" for f, ms in new.items())
            + f"; overlay pixels identical: {baseline['overlays_identical']}"
        )
    result = {
        "images": len(paths),
        "image_size": image_size,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "steps_ms_per_image": {n: {"cpu": c, "wall": w} for n, (c, w) in steps.items()},
        "cpu_ms_outside_network_by_heatmap_format": outside,
        "bytes_per_overlay_file": sizes,
        "jpeg_vs_png": jpeg_vs_png,
        "baseline": baseline or None,
        "python": sys.version.split()[0],
    }
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
