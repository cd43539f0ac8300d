"""Scoring throughput against the ceiling: the bare batched forward pass of the same model.

    PYTHONPATH=$PWD python benchmarks/scoring_throughput.py [--model_dir EXPORT] \
        [--images_dir ../shared/breakhis-sample] [--images 1000] [--naive_images 100] \
        [--baseline_revision 917732f] [--json scoring_throughput.json]

On N real images (default: the BreakHis sample, linked under new names until there are at least
--images distinct files) with a 128-px export (default: a random-weight VGG16; speed does not
depend on the weights), measured in this one run:

- ceiling: the model's batched forward pass (`predict_on_batch`, batches of 32) on tensors
  decoded and resized beforehand: what the network alone costs;
- the notebook way: a per-image loop of decode + `model.predict`, and the same loop with a
  per-image Grad-CAM and a PNG overlay written at PIL's default compression (on --naive_images
  of the images: their rate, not their count, is what is compared);
- the pipeline (`python -m pipelines.score`, in-memory DirectRunner in one process, and
  multi_processing on every core), with and without Grad-CAM, over the whole command (start-up
  included) and over the scoring alone (summary.json's wall time); on every core also with
  each --heatmap_format and with --model_copies 1 (one model shared by the worker processes),
  and in one process with a thread per core (multi_threading: one model, no data plane between
  processes, Python's work under one GIL);
- with --baseline_revision, that revision's pipeline (its files extracted with `git archive`)
  with Grad-CAM on every core, for the ratio of this checkout to it in the same run.

Each pipeline's CPU time per image is measured too (user + system time of the command and all
its worker processes): unlike images/s it does not depend on what else the machine is running,
and it is what a GPU worker's CPUs must keep up with. The ceiling's is the forward pass's
process CPU time, and the ceiling's CPU time over a way's is the share of the machine's work that
is the network: the ratio to the ceiling that way reaches when it keeps every core busy, whatever
else runs on the machine (images/s ratios need an otherwise idle machine). Prints a table of
images/s, ratios to the ceiling and CPU ms per image, and writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from model import storage
from model.image.preprocessing import load_image, normalize, preprocess_image
from model.network.tensorflow_runtime import load_tensorflow, set_verbosity

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH_SIZE = 32


def _images(source: str, count: int, folder: pathlib.Path) -> list[str]:
    """At least `count` distinct image files: the source's PNGs, linked again under new names."""
    originals = sorted(storage.match(os.path.join(source, "**", "*.png")))
    if not originals:
        raise SystemExit(f"error: no PNG under {source}")
    paths = []
    while len(paths) < count:
        for original in originals:
            link = folder / f"copy{len(paths) // len(originals):02d}_{os.path.basename(original)}"
            os.symlink(os.path.abspath(original), link)
            paths.append(str(link))
    return paths


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


def _ceiling(model, paths: list[str], image_size: int) -> tuple[float, float]:
    """(images/s, process CPU ms per image) of the batched forward pass alone, on inputs
    prepared beforehand."""
    inputs = np.stack([preprocess_image(pathlib.Path(p).read_bytes(), image_size) for p in paths])
    model.predict_on_batch(inputs[:BATCH_SIZE])  # traced and warmed up outside the timing
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(inputs), BATCH_SIZE):
        model.predict_on_batch(inputs[start : start + BATCH_SIZE])
    cpu_ms = (time.process_time() - cpu) * 1000 / len(inputs)
    return len(inputs) / (time.perf_counter() - started), cpu_ms


def _naive(model, paths: list[str], image_size: int, gradcam_to: pathlib.Path | None) -> float:
    """Images/s of a per-image notebook loop: decode, predict; optionally Grad-CAM and a PNG."""
    from PIL import Image

    from model.image.overlay import overlay_heatmap, scale_heatmap
    from model.network.gradcam import gradcam_model, predict_with_gradcam

    grad_model = gradcam_model(model) if gradcam_to is not None else None
    started = time.perf_counter()
    for index, path in enumerate(paths):
        data = pathlib.Path(path).read_bytes()
        batch = normalize(load_image(data, image_size).astype(np.float32))[None]
        model.predict(batch, verbose=0)
        if grad_model is not None:
            heatmap = predict_with_gradcam(grad_model, batch).heatmaps[0]
            original = np.asarray(Image.open(path).convert("RGB"))
            overlay = overlay_heatmap(original, scale_heatmap(heatmap, None))
            Image.fromarray(overlay).save(gradcam_to / f"{index:05d}.png")
    return len(paths) / (time.perf_counter() - started)


def _children_cpu_seconds() -> float:
    """User + system CPU time of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pipeline(
    paths: list[str],
    model_dir: str,
    output_dir: pathlib.Path,
    extra: list[str],
    root: pathlib.Path = REPO_ROOT,
) -> tuple[float, float, float]:
    """(images/s over the whole command, images/s over summary.json's scoring wall time, CPU ms
    per image of the command and its workers) of root's scorer."""
    manifest = output_dir.with_suffix(".csv")
    manifest.write_text("image_path\n" + "".join(f"{path}\n" for path in paths))
    command = [sys.executable, "-m", "pipelines.score", "--input", str(manifest)]
    command += ["--model_dir", model_dir, "--output_dir", str(output_dir), *extra]
    started, cpu = time.perf_counter(), _children_cpu_seconds()
    log = output_dir.with_suffix(".log")
    with log.open("w") as stderr:
        finished = subprocess.run(
            command,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    if finished.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"exit code {finished.returncode}: {' '.join(command)}\n{tail}")
    elapsed = time.perf_counter() - started
    cpu_ms = (_children_cpu_seconds() - cpu) * 1000 / len(paths)
    summary = json.loads((output_dir / "summary.json").read_text())
    return len(paths) / elapsed, len(paths) / summary["wall_time_seconds"], cpu_ms


def _extract(revision: str, destination: pathlib.Path) -> None:
    """The revision's tracked files in destination (`git archive`; this checkout is untouched)."""
    destination.mkdir()
    archive = subprocess.run(
        ["git", "archive", revision], cwd=REPO_ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)


def main() -> None:
    """Measure every way of scoring, print the table and write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model_dir", help="a training export (default: a random 128-px VGG16)")
    parser.add_argument(
        "--images_dir", default=str(REPO_ROOT.parent / "shared" / "breakhis-sample")
    )
    parser.add_argument("--images", type=int, default=1000, help="at least this many files")
    parser.add_argument("--naive_images", type=int, default=100, help="for the per-image loops")
    parser.add_argument("--image_size", type=int, default=128, help="without --model_dir")
    parser.add_argument(
        "--baseline_revision", help="also run this revision's pipeline (Grad-CAM, all cores)"
    )
    parser.add_argument("--json", default="scoring_throughput.json", help="where to write")
    args = parser.parse_args()
    set_verbosity(False)
    load_tensorflow()
    from model.network.model_card import load_exported_model

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = pathlib.Path(scratch_name)
        model_dir = args.model_dir or str(scratch / "export")
        if args.model_dir is None:
            _export(model_dir, args.image_size)
        model, card = load_exported_model(model_dir)
        images = scratch / "images"
        images.mkdir()
        paths = _images(args.images_dir, args.images, images)
        naive = paths[: args.naive_images]
        overlays = scratch / "overlays"
        overlays.mkdir()
        ceiling_rate, ceiling_cpu = _ceiling(model, paths, card.image_size)
        rates = {"bare batched forward pass (ceiling)": ceiling_rate}
        cpu_ms = {"bare batched forward pass (ceiling)": ceiling_cpu}
        rates["per-image loop: decode + model.predict"] = _naive(
            model, naive, card.image_size, None
        )
        rates["per-image loop + Grad-CAM + PNG overlay"] = _naive(
            model, naive, card.image_size, overlays
        )
        all_cores = ["--direct_num_workers", "0", "--direct_running_mode", "multi_processing"]
        settings = {
            "pipeline, Grad-CAM, 1 process": ([], REPO_ROOT),
            "pipeline, no Grad-CAM, 1 process": (["--no_gradcam"], REPO_ROOT),
            "pipeline, Grad-CAM, all processes": (all_cores, REPO_ROOT),
            "pipeline, no Grad-CAM, all processes": (["--no_gradcam", *all_cores], REPO_ROOT),
            "pipeline, Grad-CAM, PNG heatmaps, all processes": (
                ["--heatmap_format", "png", *all_cores],
                REPO_ROOT,
            ),
            "pipeline, Grad-CAM, no heatmap files, all processes": (
                ["--heatmap_format", "none", *all_cores],
                REPO_ROOT,
            ),
            "pipeline, Grad-CAM, --model_copies 1, all processes": (
                ["--model_copies", "1", *all_cores],
                REPO_ROOT,
            ),
            "pipeline, Grad-CAM, one process, a thread per core": (
                ["--direct_num_workers", str(os.cpu_count()), "--direct_running_mode"]
                + ["multi_threading"],
                REPO_ROOT,
            ),
        }
        if args.baseline_revision:
            baseline_root = scratch / "baseline"
            _extract(args.baseline_revision, baseline_root)
            settings[f"{args.baseline_revision}: pipeline, Grad-CAM, all processes"] = (
                all_cores,
                baseline_root,
            )
        scoring_only, failed = {}, {}
        for index, (name, (extra, root)) in enumerate(settings.items()):
            try:
                rates[name], scoring_only[name], cpu_ms[name] = _pipeline(
                    paths, model_dir, scratch / f"run{index}", extra, root
                )
            except RuntimeError as error:  # one failed way must not lose the others' figures
                failed[name] = str(error)
                print(f"{name}: FAILED, {error}", flush=True)
                continue
            print(f"{name}: {rates[name]:.2f} images/s", flush=True)
    ceiling_name = "bare batched forward pass (ceiling)"
    ceiling = rates[ceiling_name]
    print(f"{len(paths)} images ({len(naive)} for the per-image loops), cores: {os.cpu_count()}")
    header = (
        f"{'':58s} {'images/s':>9s} {'x ceiling':>10s} {'scoring only':>13s} {'x ceiling':>10s}"
    )
    print(f"{header} {'CPU ms/image':>13s} {'x ceiling (CPU)':>16s}")
    for name, rate in rates.items():
        line = f"{name:58s} {rate:9.2f} {rate / ceiling:10.2f}"
        if name in scoring_only:
            line += f" {scoring_only[name]:13.2f} {scoring_only[name] / ceiling:10.2f}"
        else:
            line += f" {'':13s} {'':10s}"
        if name in cpu_ms:
            line += f" {cpu_ms[name]:13.1f} {cpu_ms[ceiling_name] / cpu_ms[name]:16.2f}"
        print(line)
    for name in failed:
        print(f"{name:58s} failed (its stderr's end is in the JSON)")
    result = {
        "images": len(paths),
        "naive_images": len(naive),
        "cpu_count": os.cpu_count(),
        "images_per_second": rates,
        "images_per_second_scoring_only": scoring_only,
        "ratio_to_ceiling": {name: rate / ceiling for name, rate in rates.items()},
        "cpu_ms_per_image": cpu_ms,
        "cpu_ratio_to_ceiling": {name: cpu_ms[ceiling_name] / ms for name, ms in cpu_ms.items()},
        "baseline_revision": args.baseline_revision,
        "failed": failed,
    }
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
