"""Checks made before training reads any image, each failing with one specific line.

`check_flags` needs no file system and runs first; `check_locations` looks at the data folder
(names only, nothing is decoded), the weights file and the output folder.
"""

from __future__ import annotations

import os

from model import storage
from model.constants import (
    MAGNIFICATIONS,
    MAX_IMAGE_SIZE,
    MAX_STAIN_JITTER,
    MIN_IMAGE_SIZE,
    TTA_CHOICES,
)
from model.image.naming import parse_breakhis_name
from model.network.calibration import CALIBRATION_METHODS
from train_job.config import TrainConfig

VGG16_BLOCKS: tuple[str, ...] = ("block1", "block2", "block3", "block4", "block5")
"""The convolutional blocks --fine_tune_from may name (tests pin them to the built model)."""
WEIGHT_KEYWORDS = ("imagenet", "none")
# Enough names to find one image in a bucket of mixed files without listing all of it at launch.
LAUNCH_MATCH_LIMIT = 1000


class LaunchError(ValueError):
    """A flag or location that cannot work, found before training starts; says what to do."""


def check_launch(config: TrainConfig) -> None:
    """Every check, cheapest first."""
    check_flags(config)
    check_locations(config)


def check_flags(config: TrainConfig) -> None:
    """Reject flag values outside their ranges, naming every offending flag in one line."""
    problems = [problem for problem in _flag_problems(config) if problem]
    if problems:
        raise LaunchError("; ".join(problems))


def _flag_problems(c: TrainConfig):
    if not MIN_IMAGE_SIZE <= c.image_size <= MAX_IMAGE_SIZE:
        yield f"--image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {c.image_size}"
    yield _at_least("batch_size", c.batch_size, 1)
    yield _at_least("epochs", c.epochs, 1)
    yield _at_least("fine_tune_epochs", c.fine_tune_epochs, 0)
    yield _at_least("patience", c.patience, 1)
    yield _at_least("dense_units", c.dense_units, 1)
    for name in ("learning_rate", "fine_tune_learning_rate"):
        if getattr(c, name) is not None and not getattr(c, name) > 0:  # None: the default
            yield f"--{name} must be above 0, got {getattr(c, name)}"
    if not 0 <= c.dropout < 1:
        yield f"--dropout must be in [0, 1), got {c.dropout}"
    if not 0 <= c.stain_jitter < MAX_STAIN_JITTER:  # also refuses NaN
        yield f"--stain_jitter must be in [0, {MAX_STAIN_JITTER:g}), got {c.stain_jitter}"
    if c.eval_tta not in TTA_CHOICES:
        yield f"--eval_tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {c.eval_tta}"
    if c.steps_per_epoch is not None:
        yield _at_least("steps_per_epoch", c.steps_per_epoch, 1)
    if not c.max_file_mb > 0:
        yield f"--max_file_mb must be above 0, got {c.max_file_mb}"
    unknown = [m for m in c.magnifications if m not in MAGNIFICATIONS]
    if unknown or not c.magnifications:
        yield f"--magnifications must be some of {' '.join(MAGNIFICATIONS)}, got {unknown or []}"
    if c.fine_tune_from.lower() not in (*VGG16_BLOCKS, "none"):
        yield f"--fine_tune_from must be one of {', '.join(VGG16_BLOCKS)} or none, got " + repr(
            c.fine_tune_from
        )
    if c.calibration.strip().lower() not in CALIBRATION_METHODS:
        yield f"--calibration must be one of {', '.join(CALIBRATION_METHODS)}, got " + repr(
            c.calibration
        )
    yield from _split_problems(c)
    yield _weights_problem(c.weights)


def _at_least(name: str, value: int, minimum: int) -> str | None:
    if value < minimum:
        return f"--{name} must be at least {minimum}, got {value}"
    return None


def _split_problems(c: TrainConfig):
    fractions = ["val_fraction"] if c.folds else ["val_fraction", "test_fraction"]
    for name in fractions:
        if not 0 < getattr(c, name) < 1:
            yield f"--{name} must be in (0, 1), got {getattr(c, name)}"
    if not c.folds and c.val_fraction + c.test_fraction >= 1:
        yield (
            f"--val_fraction + --test_fraction must be below 1 (no training images left), got "
            f"{c.val_fraction} + {c.test_fraction}"
        )
    if c.folds == 1 or c.folds < 0:
        yield f"--folds must be 0 (one split) or at least 2, got {c.folds}"
    elif c.folds and not 0 <= c.fold < c.folds:
        yield f"--fold must be in [0, {c.folds - 1}] for --folds {c.folds}, got {c.fold}"
    elif not c.folds and c.fold != 0:
        yield f"--fold {c.fold} needs --folds (K-fold cross-validation)"


def _weights_problem(weights: str) -> str | None:
    """Only the form of --weights; whether a named file exists is a location check."""
    spec = weights.strip()
    if spec.lower() in WEIGHT_KEYWORDS:
        return None
    if not spec.endswith(".h5"):
        return (
            f"--weights must be imagenet, none or a Keras VGG16 no-top weights file (.h5), "
            f"got {weights!r}"
        )
    return None


def check_locations(config: TrainConfig) -> None:
    """Output apart from the data, the data folder holds a BreakHis-named image, the weights
    file exists, the output folder is writable."""
    _check_folders_apart(config)
    _check_data_dir(config)
    if config.weights.strip().lower() not in WEIGHT_KEYWORDS and not storage.exists(config.weights):
        raise LaunchError(f"--weights file {config.weights} does not exist")
    _check_output_dir(config)


def _check_data_dir(config: TrainConfig) -> None:
    """Exists and has at least one parsable image name of a requested magnification."""
    data_dir = config.data_dir
    if not storage.is_remote(data_dir) and not os.path.isdir(data_dir):
        raise LaunchError(f"--data_dir {data_dir} does not exist or is not a folder")
    names = _some_file_names(data_dir, config.output_dir)
    if not names and storage.is_remote(data_dir):
        raise LaunchError(f"--data_dir {data_dir} holds no file")
    if any(
        info is not None and info.magnification in config.magnifications
        for info in map(parse_breakhis_name, names)
    ):
        return
    if storage.is_remote(data_dir) and len(names) >= LAUNCH_MATCH_LIMIT:
        return  # only a sample was listed; discovery lists everything and says if none is usable
    raise LaunchError(
        f"--data_dir {data_dir} holds no BreakHis-named image (SOB_<B|M>_<CODE>-<YEAR>-<SLIDE>-"
        f"<MAG>-<SEQ>.png) for magnifications {' '.join(config.magnifications)} "
        f"({len(names)} files found)"
    )


def _some_file_names(data_dir: str, output_dir: str) -> list[str]:
    """File names below data_dir (locally all of them, outside output_dir; remotely a sample)."""
    if storage.is_remote(data_dir):
        try:
            return storage.match(storage.join(data_dir, "**"), limit=LAUNCH_MATCH_LIMIT)
        except Exception as error:  # BeamIOError wraps whatever the filesystem raised
            raise LaunchError(f"--data_dir {data_dir} cannot be listed: {error}") from error
    names = []
    excluded = os.path.abspath(output_dir)
    for folder, subfolders, files in os.walk(data_dir):
        subfolders[:] = [s for s in subfolders if os.path.join(folder, s) != excluded]
        names.extend(files)
    return names


def _check_folders_apart(config: TrainConfig) -> None:
    """The export never mixes with the data: --output_dir is not --data_dir, inside it or
    holding it (a --restart there would delete from the data; data there would be trained on)."""
    if storage.folders_overlap(config.output_dir, config.data_dir):
        raise LaunchError(
            f"--output_dir {config.output_dir} overlaps --data_dir {config.data_dir} (the same "
            "folder, or one inside the other); write the export to a folder outside the data"
        )


def _check_output_dir(config: TrainConfig) -> None:
    """A file can be created and deleted in the output folder."""
    output_dir = config.output_dir
    try:
        storage.check_writable_folder(output_dir)
    except storage.UnwritableFolderError as error:
        raise LaunchError(f"--output_dir {output_dir} {error}") from error
