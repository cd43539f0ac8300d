"""Training-input throughput with and without HED stain jitter, measured in the same run.

    python benchmarks/stain_jitter_throughput.py [--image_dir ../shared/breakhis-sample]
        [--image_size 128] [--batch_size 32] [--epochs 3] [--rounds 3]

Builds the training stream (`train_job.data.dataset.training_stream`, cache filled, geometric
augmentation on) over every PNG under --image_dir, once with --stain_jitter 0 and once with the
default strength, and times full passes over --epochs epochs of each, alternating the two
--rounds times so both see the same machine load. Prints images/s of each (the median round) and
their ratio. The model is not involved: this is the input's cost alone, which overlaps with the
model's steps in training (tf.data prefetches).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

from model.constants import DEFAULT_STAIN_JITTER
from model.image.naming import parse_breakhis_name
from train_job.data.dataset import training_stream


def images_per_second(stream, epochs: int) -> float:
    """Images per second of one full pass over `epochs` epochs of the stream."""
    dataset = stream.epochs(0, epochs)
    start = time.perf_counter()
    images = sum(int(batch[0].shape[0]) for batch in dataset)
    return images / (time.perf_counter() - start)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--image_dir", default="../shared/breakhis-sample")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stain_jitter", type=float, default=DEFAULT_STAIN_JITTER)
    args = parser.parse_args()
    paths = [str(path) for path in sorted(pathlib.Path(args.image_dir).rglob("*.png"))]
    if not paths:
        raise SystemExit(f"no PNG under {args.image_dir}")
    labels = [(info.label_index if (info := parse_breakhis_name(p)) else 0) for p in paths]
    streams = {
        strength: training_stream(
            paths, labels, args.image_size, args.batch_size, stain_jitter=strength
        )
        for strength in (0.0, args.stain_jitter)
    }
    for stream in streams.values():
        images_per_second(stream, 1)  # warm up: trace the map functions
    rates: dict[float, list[float]] = {strength: [] for strength in streams}
    for _ in range(args.rounds):
        for strength, stream in streams.items():
            rates[strength].append(images_per_second(stream, args.epochs))
    plain, jittered = (statistics.median(rates[strength]) for strength in streams)
    print(
        f"{len(paths)} images at {args.image_size} px, batch {args.batch_size}, "
        f"{args.epochs} epochs x {args.rounds} rounds (median round)"
    )
    for name, rate, strength in (
        ("without stain jitter", plain, 0.0),
        (f"with stain jitter S={args.stain_jitter:g}", jittered, args.stain_jitter),
    ):
        rounds = ", ".join(f"{value:.0f}" for value in rates[strength])
        print(f"  {name:28s} {rate:8.1f} images/s (rounds: {rounds})")
    print(f"  cost ratio (without / with): {plain / jittered:.2f}")


if __name__ == "__main__":
    main()
