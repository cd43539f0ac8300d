"""The export contract: `model_card.json` and loading an exported classifier, local or `gs://`.

A training export is a folder holding `model.keras`, `saved_model/` and `model_card.json`. The
card carries everything a scorer needs besides the weights: class names, image size,
preprocessing, decision threshold, the layer names Grad-CAM uses and the training images' sizes
(the input quality control's `unexpected_size` check; cards made before it have none, and a
scorer then skips that check). The calibration temperature is built into the network; the card
records it (`temperature`, 1 in exports made before calibration, whose Grad-CAM layer is the
uncalibrated `logit`) and how it was fitted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any

from model import storage
from model.constants import (
    CALIBRATED_LOGIT_LAYER,
    CLASS_NAMES,
    LAST_CONV_LAYER,
    MODEL_CARD_FILE,
    MODEL_FILE,
    SAVED_MODEL_DIR,
)
from model.image.preprocessing import NORMALIZATION, RESIZE_METHOD, VGG16_BGR_MEAN

FORMAT_VERSION = 1


@dataclasses.dataclass
class ModelCard:
    """What a scorer needs to use an exported classifier, plus how it was made and how it did."""

    model_id: str
    image_size: int
    threshold: float
    threshold_rule: str = "fixed at 0.5"
    class_names: list[str] = dataclasses.field(default_factory=lambda: list(CLASS_NAMES))
    last_conv_layer: str = LAST_CONV_LAYER
    logit_layer: str = CALIBRATED_LOGIT_LAYER
    # Test-time views the threshold and test metrics were computed with (`model.network.tta`); the
    # scorer's default --tta. Cards written before it existed mean 1.
    eval_tta: int = 1
    # Raw Grad-CAM value shown at full colour (`model.network.gradcam.heatmap_scale_from_peaks` on
    # the validation split); None: each map shown on its own peak.
    heatmap_scale: float | None = None
    preprocessing: dict[str, Any] = dataclasses.field(
        default_factory=lambda: default_preprocessing()
    )
    # model.image.quality.SizeRange.to_card() of the training split; {} in older cards: no size
    # check
    training_image_sizes: dict[str, Any] = dataclasses.field(default_factory=dict)
    training_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    data_summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    test_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    temperature: float = 1.0  # the network divides its logit by this before the sigmoid
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    created_at: str = ""
    # Every file the training run wrote into its folder besides this card ('/'-separated,
    # relative): what its --restart removes. [] in cards made before it (found by name then).
    export_files: list[str] = dataclasses.field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The card as indented JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse a card, ignoring keys this version does not know."""
        values = json.loads(text)
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def default_preprocessing() -> dict[str, Any]:
    """How `model.image.preprocessing.preprocess_image` prepares an image, for the card."""
    return {
        # The function's name when the card format was fixed (it now lives in
        # model.image.preprocessing); members of an ensemble compare this dict, so it stays.
        "function": "model.preprocessing.preprocess_image",
        "decode": "any PNG/JPEG/TIFF mode to 8-bit RGB; alpha composited on white",
        "resize": RESIZE_METHOD,
        "normalization": NORMALIZATION,
        "channel_order": "BGR after normalisation",
        "mean_bgr": [float(value) for value in VGG16_BGR_MEAN],
    }


def missing_export_files(model_dir: str) -> list[str]:
    """The required export files absent from model_dir (empty when the export is complete)."""
    required = [MODEL_FILE, MODEL_CARD_FILE]
    return [name for name in required if not storage.exists(storage.join(model_dir, name))]


def enclosing_export(folder: str) -> str | None:
    """The training export (a folder holding model_card.json) that folder is or lies inside,
    nearest first; None when there is none."""
    for candidate in storage.enclosing_folders(folder):
        if storage.exists(storage.join(candidate, MODEL_CARD_FILE)):
            return candidate
    return None


def read_model_card(model_dir: str) -> ModelCard:
    """The card of an export, local or remote."""
    return ModelCard.from_json(storage.read_text(storage.join(model_dir, MODEL_CARD_FILE)))


def load_exported_model(model_dir: str):
    """(keras.Model, ModelCard) from an export folder, local or remote, in Keras safe mode."""
    import keras  # deferred: importing TensorFlow costs seconds that card readers need not pay

    missing = missing_export_files(model_dir)
    if missing:
        raise FileNotFoundError(f"{model_dir} is not a complete model export: missing {missing}")
    card = read_model_card(model_dir)
    with tempfile.TemporaryDirectory() as scratch:
        local_model = os.path.join(scratch, MODEL_FILE)
        with open(local_model, "wb") as handle:
            handle.write(storage.read_bytes(storage.join(model_dir, MODEL_FILE)))
        model = keras.models.load_model(local_model, compile=False, safe_mode=True)
    return model, card


__all__ = [
    "ModelCard",
    "SAVED_MODEL_DIR",
    "load_exported_model",
    "missing_export_files",
    "read_model_card",
]
