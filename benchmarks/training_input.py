"""Training throughput with the real input pipeline against training on tensors in memory.

    PYTHONPATH=$PWD python benchmarks/training_input.py [--images_dir ../shared/breakhis-sample] \
        [--image_size 128] [--batch_size 32] [--rounds 3] [--first_block block4]

The same VGG16 classifier (random weights, trainable from --first_block, compiled as the
training job compiles it) trains one epoch at a time on the images of --images_dir fed four
ways, alternating for --rounds rounds, and each reports the median images/s of its epochs:

- in memory: the decoded, resized and normalised images as tensors in memory, batched (no
  augmentation, no shuffle): the ceiling for this model on this machine;
- the job's input, no augmentation: `train_job.data.dataset.training_stream` with augment=False
  (cached decoded images, shuffle, normalise, batch, class weights);
- the job's input: the same with the training augmentations on, without and with the
  default HED stain jitter (`--stain_jitter 0.05`): the training job's default input.

The cache is filled when the stream is made (one decode of every image), outside the timing;
its time is printed too. Ratios are to the in-memory epochs of the same run.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import numpy as np

from model import storage
from model.constants import DEFAULT_STAIN_JITTER
from model.evaluation.labels import label_index
from model.image.naming import parse_breakhis_name
from model.network.tensorflow_runtime import load_tensorflow, set_verbosity

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _labelled_images(folder: str) -> tuple[list[str], list[int]]:
    """Every BreakHis-named PNG under folder, with its label index."""
    paths, labels = [], []
    for path in sorted(storage.match(f"{folder.rstrip('/')}/**/*.png")):
        info = parse_breakhis_name(path)
        if info is not None:
            paths.append(path)
            labels.append(label_index(info.label))
    if not paths:
        raise SystemExit(f"error: no BreakHis-named PNG under {folder}")
    return paths, labels


def main() -> None:
    """Time the three inputs epoch by epoch and print images/s and ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--images_dir", default=str(REPO_ROOT.parent / "shared" / "breakhis-sample")
    )
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--first_block", default="block4", help="first trainable VGG16 block")
    args = parser.parse_args()
    set_verbosity(False)
    load_tensorflow()
    import keras
    import tensorflow as tf

    from model.image.preprocessing import load_image, normalize
    from model.network.architecture import build_classifier, conv_block_names
    from train_job.data.dataset import class_weights_for, training_stream

    paths, labels = _labelled_images(args.images_dir)
    weights = class_weights_for(labels)
    keras.utils.set_random_seed(0)
    model = build_classifier(args.image_size, weights="none")
    blocks = conv_block_names(model)
    for layer in model.layers:
        prefix = layer.name.split("_")[0]
        if prefix in blocks:
            layer.trainable = blocks.index(prefix) >= blocks.index(args.first_block)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )

    started = time.perf_counter()
    # Each way fed by the job's input: its (augmentations, stain jitter).
    job_inputs = {
        "job's input, no augmentation": (False, 0.0),
        "job's input, augmented, no stain jitter": (True, 0.0),
        f"job's input, augmented, stain jitter {DEFAULT_STAIN_JITTER} (the default)": (
            True,
            DEFAULT_STAIN_JITTER,
        ),
    }
    streams = {
        name: training_stream(
            paths,
            labels,
            args.image_size,
            args.batch_size,
            augment=augment,
            class_weights=weights,
            stain_jitter=jitter,
        )
        for name, (augment, jitter) in job_inputs.items()
    }
    cache_seconds = (time.perf_counter() - started) / len(streams)
    images = np.stack(
        [
            normalize(load_image(storage.read_bytes(path), args.image_size).astype(np.float32))
            for path in paths
        ]
    )
    targets = np.asarray(labels, np.float32)[:, None]
    sample_weights = np.array([weights[label] for label in labels], np.float32)
    steps = next(iter(streams.values())).steps_per_epoch

    batches = tf.data.Dataset.from_tensor_slices((images, targets, sample_weights))
    batches = batches.batch(args.batch_size).prefetch(2)

    def in_memory(epoch: int) -> None:
        model.fit(batches, steps_per_epoch=steps, shuffle=False, verbose=0)

    def job_input(name: str):
        def run(epoch: int) -> None:
            model.fit(
                streams[name].epochs(epoch, epoch + 1),
                steps_per_epoch=steps,
                shuffle=False,
                verbose=0,
            )

        return run

    arms = {"tensors in memory (ceiling)": in_memory, **{name: job_input(name) for name in streams}}
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for arm in arms.values():  # traced and warmed up outside the timing
        arm(0)
    for round_index in range(args.rounds):
        for name, arm in arms.items():
            begin = time.perf_counter()
            arm(round_index + 1)
            rates[name].append(len(paths) / (time.perf_counter() - begin))
            print(f"round {round_index + 1} {name}: {rates[name][-1]:.1f} images/s", flush=True)
    ceiling = statistics.median(rates["tensors in memory (ceiling)"])
    print(
        f"\n{len(paths)} images, {args.image_size} px, batch {args.batch_size}, trainable from "
        f"{args.first_block}; filling the decoded-image cache took {cache_seconds:.1f} s"
    )
    width = max(len(name) for name in rates)
    print(f"{'input':{width}s} {'images/s':>9s} {'x in memory':>12s}")
    for name, series in rates.items():
        rate = statistics.median(series)
        print(f"{name:{width}s} {rate:9.1f} {rate / ceiling:12.2f}")


if __name__ == "__main__":
    main()
