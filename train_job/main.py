"""Train the BreakHis VGG16 classifier and export it: `python train_job/main.py --help`.

With --folds K and no --fold, trains every fold in turn into <output_dir>/fold-<i>/ and then
aggregates them into <output_dir>/cv/ (train_job/cross_validation/run.py); with --fold I, one fold
into --output_dir itself.

Exit codes: 0 when the export is written (or was already complete with these flags), 2 when a
flag, a location, the data or an earlier run in --output_dir stops the job before training
(one `error:` line on stderr), 1 for anything unexpected.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model.network.tensorflow_runtime import load_tensorflow, set_verbosity  # noqa: E402
from train_job.config import (  # noqa: E402
    HelpFormatter,
    TrainConfig,
    add_flags,
    config_from_args,
    normalized,
)
from train_job.launch_checks import LaunchError, check_launch  # noqa: E402

EXIT_LAUNCH_ERROR = 2
logger = logging.getLogger("train_job")


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Flags -> (TrainConfig, the parsed flags); every flag's help shows its default."""
    parser = argparse.ArgumentParser(
        description="Train a VGG16 benign/malignant classifier on BreakHis with specimen-disjoint "
        "splits, under MirroredStrategy (all local GPUs, or the CPU), and export it.",
        formatter_class=HelpFormatter,
    )
    add_flags(parser)
    parser.add_argument(
        "--restart",
        action="store_true",
        help="Delete --output_dir's checkpoints and training export files (nothing else), then "
        "train from scratch",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="Debug logging and TensorFlow's own messages"
    )
    # An omitted --fold means every fold (with --folds), so the command line tells it apart
    # from --fold 0; TrainConfig keeps 0 for a single split and for train() callers.
    parser.set_defaults(fold=None)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    return dataclasses.replace(config, fold=0 if args.fold is None else args.fold), args


def cross_validation_requested(config: TrainConfig, args: argparse.Namespace) -> bool:
    """--folds K without --fold: train every fold, then aggregate them."""
    return bool(config.folds) and args.fold is None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    config, args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    all_folds = cross_validation_requested(config, args)
    try:
        check_launch(normalized(config))  # before TensorFlow's seconds-long import
    except LaunchError as error:
        return _launch_error(error)
    set_verbosity(args.verbose)
    for name in ("tensorflow", "absl"):  # their Python loggers repeat the native lines
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    load_tensorflow()
    from model.network.architecture import WeightsUnavailableError
    from train_job.cross_validation.run import cross_validate
    from train_job.data.discovery import DataError
    from train_job.train import train

    try:
        if all_folds:
            outcome = cross_validate(config, restart=args.restart)
            logger.info("Cross-validation aggregate in %s", outcome.cv_dir)
            return 0
        result = train(config, restart=args.restart)
    except (LaunchError, DataError, WeightsUnavailableError) as error:
        return _launch_error(error)
    if not result.writer:
        logger.info("Done; the chief worker writes the export, this worker writes nothing")
    elif not result.already_complete:
        logger.info("Export written to %s", result.output_dir)
    return 0


def _launch_error(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return EXIT_LAUNCH_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
