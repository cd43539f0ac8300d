"""Train the BreakHis VGG16 classifier and export it: `python train_job/main.py --help`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model.constants import MAGNIFICATIONS  # noqa: E402
from train_job.config import TrainConfig  # noqa: E402

DEFAULTS = TrainConfig(data_dir="", output_dir="")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Flags -> TrainConfig; every flag's help shows its default."""
    parser = argparse.ArgumentParser(
        description="Train a VGG16 benign/malignant classifier on BreakHis with specimen-disjoint "
        "splits, under MirroredStrategy (all local GPUs, or the CPU), and export it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--data_dir",
        required=True,
        help="BreakHis root or flat folder of BreakHis-named images (local or gs://)",
    )
    add(
        "--output_dir",
        required=True,
        help="Export folder (local or gs://); rerun with the same "
        "folder to resume an interrupted job",
    )
    add(
        "--magnifications",
        nargs="+",
        default=list(DEFAULTS.magnifications),
        choices=MAGNIFICATIONS,
        help="Magnifications to use",
    )
    add("--image_size", type=int, default=DEFAULTS.image_size, help="Model input side in pixels")
    add(
        "--batch_size",
        type=int,
        default=DEFAULTS.batch_size,
        help="Batch size per replica (global batch = this x replicas)",
    )
    add("--epochs", type=int, default=DEFAULTS.epochs, help="Phase 1 epochs (head, base frozen)")
    add(
        "--fine_tune_epochs",
        type=int,
        default=DEFAULTS.fine_tune_epochs,
        help="Phase 2 epochs (fine-tuning); 0 skips phase 2",
    )
    add(
        "--fine_tune_from",
        default=DEFAULTS.fine_tune_from,
        help="First VGG16 block unfrozen in phase 2 (block1..block5), or 'none'",
    )
    add(
        "--learning_rate",
        type=float,
        default=DEFAULTS.learning_rate,
        help="Phase 1 learning rate per replica (scaled by the replica count)",
    )
    add(
        "--fine_tune_learning_rate",
        type=float,
        default=DEFAULTS.fine_tune_learning_rate,
        help="Phase 2 learning rate per replica (scaled by the replica count)",
    )
    add("--dense_units", type=int, default=DEFAULTS.dense_units, help="Units of the head's Dense")
    add("--dropout", type=float, default=DEFAULTS.dropout, help="Dropout rate of the head")
    add(
        "--weights",
        default=DEFAULTS.weights,
        help="VGG16 base weights: 'imagenet' (Keras download/cache), 'none', or a no-top weights "
        "file (local or gs://)",
    )
    add(
        "--val_fraction",
        type=float,
        default=DEFAULTS.val_fraction,
        help="Share of each class's images (by whole specimens) for validation",
    )
    add(
        "--test_fraction",
        type=float,
        default=DEFAULTS.test_fraction,
        help="Share of each class's images (by whole specimens) for test; ignored with --folds",
    )
    add(
        "--folds",
        type=int,
        default=DEFAULTS.folds,
        help="K for K-fold cross-validation by specimen; 0 = a single split",
    )
    add("--fold", type=int, default=DEFAULTS.fold, help="Which fold is the test set (0..K-1)")
    add("--seed", type=int, default=DEFAULTS.seed, help="Seed of the split, init and shuffling")
    add(
        "--patience",
        type=int,
        default=DEFAULTS.patience,
        help="Early-stopping patience in epochs (on validation AUC; best weights restored)",
    )
    add("--mixed_precision", action="store_true", help="Train in mixed float16 (GPUs)")
    add(
        "--no_cache",
        dest="cache",
        action="store_false",
        help="Do not cache decoded images in memory",
    )
    add("--no_augment", dest="augment", action="store_false", help="Disable augmentation")
    add(
        "--steps_per_epoch",
        type=int,
        default=None,
        help="Cap on training steps per epoch (smoke runs); default: the whole training split",
    )
    add("-v", "--verbose", action="store_true", help="Debug logging")
    args = vars(parser.parse_args(argv))
    args.pop("verbose")
    args["magnifications"] = tuple(args["magnifications"])
    return TrainConfig(**args)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    verbose = argv is not None and ("-v" in argv or "--verbose" in argv)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from model.architecture import WeightsUnavailableError
    from train_job.data import DataError
    from train_job.train import train

    try:
        result = train(config)
    except (DataError, WeightsUnavailableError) as error:
        logging.getLogger("train_job").error("%s", error)
        return 2
    logging.getLogger("train_job").info("Export written to %s", result.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
