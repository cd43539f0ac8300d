"""Launch checks of --model_dir: a complete export whose card and model this scorer can use.

Every card field the scorer reads is checked for type and range, and the card is checked against
the model itself (input size, Grad-CAM layer names) from the `.keras` file's config, without
TensorFlow and without loading the weights, so a bad export stops the job at launch with one
line instead of failing every image on the workers.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from model import storage
from model.constants import (
    CLASS_NAMES,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    TTA_CHOICES,
)
from model.image.preprocessing import NORMALIZATION
from model.image.quality import size_range_from_card
from model.network.keras_archive import KerasArchiveError, ModelOutline, read_outline
from model.network.model_card import ModelCard, missing_export_files
from pipelines.launch.checks import LaunchError

_REQUIRED = ("model_id", "image_size", "threshold")


def _is_number(value: Any) -> bool:
    """An int or float, not a bool (JSON true is not a threshold)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def card_problems(values: dict[str, Any]) -> list[str]:
    """What is wrong with the card fields the scorer uses (empty when nothing is)."""
    problems = [f"no {name!r}" for name in _REQUIRED if name not in values]
    if "model_id" in values and not isinstance(values["model_id"], str):
        problems.append(f"model_id {values['model_id']!r} (need a string)")
    size = values.get("image_size")
    if "image_size" in values and not (
        isinstance(size, int)
        and not isinstance(size, bool)
        and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE
    ):
        problems.append(
            f"image_size {size!r} (need an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE})"
        )
    threshold = values.get("threshold")
    if "threshold" in values and not (
        _is_number(threshold) and math.isfinite(threshold) and 0.0 <= threshold <= 1.0
    ):
        problems.append(f"threshold {threshold!r} (need a number in [0, 1])")
    class_names = values.get("class_names", list(CLASS_NAMES))
    if class_names != list(CLASS_NAMES):
        problems.append(f"class_names {class_names!r}, expected {list(CLASS_NAMES)!r}")
    # An older card without the field means the card's default, this scorer's normalisation.
    preprocessing = values.get("preprocessing", {"normalization": NORMALIZATION})
    if not isinstance(preprocessing, dict):
        problems.append(f"preprocessing {preprocessing!r} (need an object)")
    elif preprocessing.get("normalization") != NORMALIZATION:
        problems.append(
            f"normalisation {preprocessing.get('normalization')!r}, this scorer applies "
            f"{NORMALIZATION!r}"
        )
    for name in ("last_conv_layer", "logit_layer"):
        if name in values and not (isinstance(values[name], str) and values[name]):
            problems.append(f"{name} {values[name]!r} (need a layer name)")
    try:  # the input quality size check's range; older cards have none
        size_range_from_card(values.get("training_image_sizes"))
    except ValueError as error:
        problems.append(str(error))
    eval_tta = values.get("eval_tta", 1)
    if not (isinstance(eval_tta, int) and not isinstance(eval_tta, bool)) or (
        eval_tta not in TTA_CHOICES
    ):
        problems.append(f"eval_tta {eval_tta!r} (need one of {', '.join(map(str, TTA_CHOICES))})")
    scale = values.get("heatmap_scale")
    if scale is not None and not (_is_number(scale) and math.isfinite(scale) and scale > 0):
        problems.append(f"heatmap_scale {scale!r} (need a number above 0, or null)")
    return problems


def model_problems(card: ModelCard, model: ModelOutline, gradcam: bool) -> list[str]:
    """Where the card and the model it describes disagree."""
    problems = []
    expected = (card.image_size, card.image_size, 3)
    fits = len(model.input_shape) == len(expected) and all(
        have in (None, want) for have, want in zip(model.input_shape, expected, strict=True)
    )  # a side of None takes any size
    if not fits:
        shape = " x ".join("?" if side is None else str(side) for side in model.input_shape)
        problems.append(f"image_size {card.image_size} but {MODEL_FILE} takes {shape} inputs")
    if gradcam:
        for role, name in (
            ("last_conv_layer", card.last_conv_layer),
            ("logit_layer", card.logit_layer),
        ):
            if name not in model.layer_names:
                problems.append(f"{role} {name!r} names no layer of {MODEL_FILE}")
    return problems


def check_model_export(model_dir: str, gradcam: bool = True) -> ModelCard:
    """The export's card, after checking the export is complete and this scorer can use it.

    Grad-CAM's layer names are checked against the model only when Grad-CAM is on.
    """
    if not storage.is_remote(model_dir) and not os.path.isdir(model_dir):
        raise LaunchError(f"--model_dir {model_dir} does not exist")
    try:
        missing = missing_export_files(model_dir)
    except Exception as error:
        raise LaunchError(f"--model_dir {model_dir} cannot be read: {error}") from error
    if missing:
        raise LaunchError(
            f"--model_dir {model_dir} is not a complete training export: missing "
            f"{', '.join(missing)}"
        )
    try:
        values = json.loads(storage.read_text(storage.join(model_dir, MODEL_CARD_FILE)))
    except Exception as error:  # bad JSON, not UTF-8, unreadable file
        raise LaunchError(
            f"--model_dir {model_dir}: unreadable {MODEL_CARD_FILE} ({_one_line(error)})"
        ) from error
    if not isinstance(values, dict):
        raise LaunchError(f"--model_dir {model_dir}: {MODEL_CARD_FILE} is not a JSON object")
    problems = card_problems(values)
    if problems:
        raise LaunchError(f"--model_dir {model_dir}: model card has {'; '.join(problems)}")
    card = ModelCard.from_json(json.dumps(values))
    try:
        outline = read_outline(storage.join(model_dir, MODEL_FILE))
    except (KerasArchiveError, OSError) as error:
        raise LaunchError(
            f"--model_dir {model_dir}: {MODEL_FILE} cannot be read ({_one_line(error)})"
        ) from error
    problems = model_problems(card, outline, gradcam)
    if problems:
        raise LaunchError(f"--model_dir {model_dir}: model card has {'; '.join(problems)}")
    return card


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
