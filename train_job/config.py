"""The training flags, declared once: the frozen `TrainConfig` and the command-line parser.

Each field is one flag: its default, its help, and whether it changes what training produces
(`result=False` for flags such as `--no_cache` that only change how fast or how safely the same
result is reached). The parser, the resume check and the model card all read these fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from typing import Any

from model import storage
from model.constants import DEFAULT_IMAGE_SIZE, DEFAULT_STAIN_JITTER, MAGNIFICATIONS
from model.network.calibration import TEMPERATURE
from model.storage import DEFAULT_MAX_FILE_MB

PRETRAINED_LEARNING_RATE = 1e-3
# Every layer of VGG16 (no BatchNorm in its base) from random weights: at 1e-3 Adam drove the
# real sample's validation logits to saturation in the first epoch (validation loss 1657, AUC
# exactly 0.5); at 1e-4 it stayed below 5 (README, "From scratch").
FROM_SCRATCH_LEARNING_RATE = 1e-4


def flag(
    default: Any = dataclasses.MISSING, help: str = "", *, result: bool = True, **parser_options
):
    """A TrainConfig field that is also a command-line flag (argparse options ride along)."""
    metadata = {"help": help, "result": result, "parser_options": parser_options}
    if isinstance(default, tuple | list):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `train()` needs; defaults are the documented production settings."""

    data_dir: str = flag(help="BreakHis root or flat folder of BreakHis-named images (local/gs://)")
    output_dir: str = flag(
        help="Export folder (local or gs://); rerun with the same flags and folder to resume an "
        "interrupted job",
        result=False,
    )
    magnifications: tuple[str, ...] = flag(
        MAGNIFICATIONS, "Magnifications to use", choices=MAGNIFICATIONS
    )
    image_size: int = flag(DEFAULT_IMAGE_SIZE, "Model input side in pixels")
    batch_size: int = flag(32, "Batch size per replica (global batch = this x replicas)")
    epochs: int = flag(
        10,
        "Phase 1 epochs: the head only on a frozen VGG16 base; with --weights none, every layer",
    )
    fine_tune_epochs: int = flag(10, "Phase 2 epochs (fine-tuning); 0 skips phase 2")
    fine_tune_from: str = flag(
        "block4",
        "First VGG16 block unfrozen in phase 2 (block1..block5), or 'none' (no phase 2); with "
        "--weights none phase 2 trains every layer, at --fine_tune_learning_rate",
    )
    learning_rate: float | None = flag(
        None,
        f"Phase 1 learning rate per replica (x replicas); default {PRETRAINED_LEARNING_RATE:g} "
        f"(the head on a pretrained base), {FROM_SCRATCH_LEARNING_RATE:g} with --weights none",
    )
    fine_tune_learning_rate: float = flag(1e-5, "Phase 2 learning rate per replica (x replicas)")
    dense_units: int = flag(256, "Units of the head's Dense layer")
    dropout: float = flag(0.5, "Dropout rate of the head, in [0, 1)")
    weights: str = flag(
        "imagenet",
        "VGG16 base weights: 'imagenet' (Keras download/cache), 'none', or a no-top weights "
        "file (local or gs://)",
    )
    val_fraction: float = flag(
        0.15, "Share of each class's images (by whole specimens) for validation"
    )
    test_fraction: float = flag(
        0.2, "Share of each class's images (by whole specimens) for test; ignored with --folds"
    )
    folds: int = flag(0, "K for K-fold cross-validation by specimen; 0 = a single split")
    fold: int = flag(
        0,
        "Which fold is the test set (0..K-1), trained into --output_dir; without --fold, "
        "--folds K trains every fold into <output_dir>/fold-<i>/, then aggregates them in "
        "<output_dir>/cv/",
    )
    seed: int = flag(42, "Seed of the split, initialisation, shuffling and augmentation")
    patience: int = flag(
        5, "Early-stopping patience in epochs (on validation AUC; best weights restored)"
    )
    calibration: str = flag(
        TEMPERATURE,
        "Calibration of P(malignant) after the fit, before the threshold is chosen: "
        "'temperature' (one temperature T fitted on the validation split, built into the "
        "exported model) or 'none' (T = 1)",
    )
    mixed_precision: bool = flag(False, "Train in mixed float16 (GPUs)")
    cache: bool = flag(True, "Cache decoded images in memory across epochs", result=False)
    augment: bool = flag(True, "Augment training images (turns, flips, rotation, zoom, shift)")
    stain_jitter: float = flag(
        DEFAULT_STAIN_JITTER,
        "HED stain jitter of training images (model/image/stain.py): each image's haematoxylin, "
        "eosin and DAB concentrations scaled by U[1-S, 1+S] and shifted by U[-S, S]; 0 turns it "
        "off (independent of --no_augment)",
    )
    eval_tta: int = flag(
        1,
        "Test-time views (1, 2, 4 or 8 turns and mirrors, model/network/tta.py) whose mean logit "
        "gives the validation p the threshold is chosen on and the test p; recorded in the card as "
        "the scorer's default --tta",
    )
    steps_per_epoch: int | None = flag(
        None, "Cap on training steps per epoch (smoke runs); default: the whole training split"
    )
    max_file_mb: float = flag(
        float(DEFAULT_MAX_FILE_MB),
        "Image files larger than this (MiB) are listed as unreadable and not used",
        result=False,
    )


def _flag_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


RESULT_FLAGS: tuple[str, ...] = tuple(f.name for f in _flag_fields() if f.metadata["result"])
"""The flags that change what training produces: a resume or a rerun must not change them."""


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per TrainConfig field to the parser."""
    hints = typing.get_type_hints(TrainConfig)
    for field in _flag_fields():
        options = dict(field.metadata["parser_options"])
        kind = hints[field.name]
        default = _default(field)
        names = [f"--{field.name}"]
        if default is dataclasses.MISSING:
            options["required"] = True
        elif kind is bool:
            # A setting that is on by default is turned off by --no_<name>, and the reverse.
            options["action"] = "store_false" if default else "store_true"
            names = [f"--no_{field.name}"] if default else names
            options["dest"] = field.name
            if default:
                text = field.metadata["help"]
                options["help"] = f"Turn off: {text[0].lower()}{text[1:]} (on by default)"
        elif typing.get_origin(kind) is tuple:
            options.update(nargs="+", default=list(default))
        else:
            options.update(type=_scalar_type(kind), default=default)
        options.setdefault("help", field.metadata["help"])
        parser.add_argument(*names, **options)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where it would mislead (required, --no_ flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.option_strings[0].startswith("--no_"):
            return action.help or ""
        return super()._get_help_string(action)


def _default(field: dataclasses.Field) -> Any:
    """The field's default value, or dataclasses.MISSING for a required flag."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _scalar_type(kind) -> type:
    """int, float or str, also for an optional (`int | None`) field."""
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    return args[0] if args else kind


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed flags (flags that are not fields are ignored)."""
    values = {field.name: getattr(args, field.name) for field in _flag_fields()}
    return TrainConfig(
        **{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}
    )


def normalized(config: TrainConfig) -> TrainConfig:
    """The same settings written one way, so a rerun compares equal to its first run.

    Local paths become absolute, magnifications are deduplicated in their canonical order, the
    keywords of --weights, --fine_tune_from and --calibration are lower-cased, and an unset
    --learning_rate becomes the default for the weights (`default_learning_rate`).
    """
    weights = config.weights.strip()
    if weights.lower() in ("imagenet", "none"):
        weights = weights.lower()
    elif not storage.is_remote(weights):
        weights = os.path.abspath(weights)
    fine_tune_from = config.fine_tune_from.strip().lower()
    return dataclasses.replace(
        config,
        data_dir=_absolute(config.data_dir),
        output_dir=_absolute(config.output_dir),
        magnifications=tuple(m for m in MAGNIFICATIONS if m in config.magnifications)
        + tuple(sorted(set(config.magnifications) - set(MAGNIFICATIONS))),
        weights=weights,
        fine_tune_from=fine_tune_from,
        calibration=config.calibration.strip().lower(),
        learning_rate=default_learning_rate(weights)
        if config.learning_rate is None
        else config.learning_rate,
    )


def default_learning_rate(weights: str) -> float:
    """Phase 1's learning rate when --learning_rate is not given: lower from scratch."""
    scratch = weights.strip().lower() == "none"
    return FROM_SCRATCH_LEARNING_RATE if scratch else PRETRAINED_LEARNING_RATE


def _absolute(path: str) -> str:
    return path if storage.is_remote(path) else os.path.abspath(path)


def result_settings(config: TrainConfig) -> dict[str, Any]:
    """The result-changing flags and their values, as JSON-friendly values."""
    values = dataclasses.asdict(config)
    return {name: _jsonable(values[name]) for name in RESULT_FLAGS}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def differing_settings(recorded: dict[str, Any], config: TrainConfig) -> list[str]:
    """`--flag old -> new` for every result-changing flag whose recorded value differs."""
    current = result_settings(config)
    missing = object()
    differences = []
    for name, value in current.items():
        before = recorded.get(name, missing)
        if before is missing:
            differences.append(f"--{name} (not recorded) -> {_shown(value)}")
        elif before != value:
            differences.append(f"--{name} {_shown(before)} -> {_shown(value)}")
    return differences


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return str(value)
