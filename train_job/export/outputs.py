"""Write a finished training's export into a local folder: the model card last of all."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import platform
import uuid
from collections.abc import Collection

import keras
import numpy as np
import tensorflow as tf

from model.constants import CALIBRATED_LOGIT_LAYER
from model.evaluation.fold_predictions import (
    TEST_PREDICTIONS_FILE,
    prediction_rows,
    predictions_csv_text,
)
from model.evaluation.labels import label_name
from model.image.naming import printable_path
from model.network.calibration import TemperatureFit
from model.network.model_card import ModelCard
from model.reports.plots import TRAINING_CURVES_PLOT, training_curves_png
from model.storage import max_bytes_from_mb
from train_job.config import TrainConfig
from train_job.data import discovery as data
from train_job.data.input_quality import quality_report
from train_job.export.evaluation import plot_files, report_json
from train_job.export.files import (
    HISTORY_FILE,
    METRICS_FILE,
    SPLIT_FILE,
    files_written,
    write_card,
    write_model_files,
)
from train_job.export.report import write_training_report
from train_job.fitting.fit import from_scratch, plan_phases

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingOutcome:
    """What the export files are written from."""

    rows: list[dict]
    by_split: dict[str, list[dict]]
    discovery: data.Discovery
    report: dict
    history: dict
    epochs_run: dict[str, int]
    threshold: float
    threshold_rule: str
    replicas: int
    global_batch: int
    class_weights: dict[int, float]
    test_p: np.ndarray
    calibration: TemperatureFit
    heatmap_scale: float | None = (
        None  # model.network.gradcam.heatmap_scale on the validation split
    )


def write_outputs(
    config: TrainConfig,
    work_dir: str,
    model: keras.Model,
    outcome: TrainingOutcome,
    foreign_files: Collection[str],
) -> ModelCard:
    """Model files, split, metrics, test predictions, plots, history and report, then (only if
    all succeeded) the card, listing them, into a local folder; returns the card.

    foreign_files: the export-looking files the folder held before the run (not its own)."""
    write_model_files(model, config.image_size, work_dir)
    _write_file(work_dir, SPLIT_FILE, data.split_csv_text(outcome.rows).encode("utf-8"))
    _write_file(work_dir, METRICS_FILE, report_json(outcome.report).encode("utf-8"))
    # The test split's scores, so cross-validation can pool folds without loading a model.
    test_rows = prediction_rows(outcome.by_split["test"], outcome.test_p, outcome.threshold)
    _write_file(work_dir, TEST_PREDICTIONS_FILE, predictions_csv_text(test_rows).encode("utf-8"))
    plots = plot_files(outcome.by_split["test"], outcome.test_p, outcome.report)
    plots[TRAINING_CURVES_PLOT] = training_curves_png(outcome.history)
    for name, png in plots.items():
        _write_file(work_dir, name, png)
    history_text = json.dumps(outcome.history, indent=2) + "\n"
    _write_file(work_dir, HISTORY_FILE, history_text.encode("utf-8"))
    card = model_card(config, outcome)
    write_training_report(
        work_dir,
        model,
        config.image_size,
        outcome.threshold,
        outcome.by_split["test"],
        outcome.test_p,
        outcome.report,
        outcome.discovery,
        _report_summary(config, card, outcome),
        _report_notes(config, outcome),
        max_bytes=max_bytes_from_mb(config.max_file_mb),
        logit_layer=card.logit_layer,
        calibration=card.calibration,
        tta=config.eval_tta,
        heatmap_scale=outcome.heatmap_scale,
    )
    card = dataclasses.replace(card, export_files=files_written(work_dir, foreign_files))
    write_card(card, work_dir)
    logger.info("Wrote the export's files and, last, its card into %s", work_dir)
    return card


def _write_file(directory: str, name: str, content: bytes) -> None:
    path = os.path.join(directory, *name.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content)


def model_card(config: TrainConfig, outcome: TrainingOutcome) -> ModelCard:
    """The card: what a scorer needs, how the model was made (every flag) and how it did."""
    quality = quality_report(outcome.by_split, outcome.discovery.quality)
    return ModelCard(
        model_id=uuid.uuid4().hex,
        image_size=config.image_size,
        threshold=float(outcome.threshold),
        threshold_rule=outcome.threshold_rule,
        training_image_sizes=quality.card_sizes(),
        logit_layer=CALIBRATED_LOGIT_LAYER,
        temperature=outcome.calibration.temperature,
        calibration=outcome.calibration.card_entry(),
        eval_tta=config.eval_tta,
        heatmap_scale=outcome.heatmap_scale,
        training_config={
            **dataclasses.asdict(config),
            "replicas": outcome.replicas,
            "global_batch_size": outcome.global_batch,
            "effective_learning_rate": config.learning_rate * outcome.replicas,
            "effective_fine_tune_learning_rate": config.fine_tune_learning_rate * outcome.replicas,
            "class_weights": {label_name(k): v for k, v in outcome.class_weights.items()},
            "from_scratch": from_scratch(config),
            "phases": [phase.card_entry() for phase in plan_phases(config)],
        },
        data_summary={
            "data_dir": printable_path(config.data_dir),
            "magnifications": list(config.magnifications),
            "images_used": len(outcome.rows),
            "unparsed_files": len(outcome.discovery.unparsed),
            "unparsed_examples": outcome.discovery.unparsed[:10],
            "unreadable_files": outcome.discovery.unreadable,
            "split_unit": "specimen (slide id without section letters)",
            "splits": data.summarize_split(outcome.rows),
            "quality_control": quality.card_summary(),
        },
        test_metrics=outcome.report,
        versions=_versions(),
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def _versions() -> dict[str, str]:
    import apache_beam

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "apache_beam": apache_beam.__version__,
    }


def _report_summary(config: TrainConfig, card: ModelCard, outcome: TrainingOutcome) -> dict:
    splits = card.data_summary["splits"]
    return {
        "model_id": card.model_id,
        "data_dir": card.data_summary["data_dir"],
        "images_used": len(outcome.rows),
        "unparsed_files": len(outcome.discovery.unparsed),
        "unreadable_files": len(outcome.discovery.unreadable),
        **{
            f"{split}_images": sum(c["images"] for c in classes.values())
            for split, classes in splits.items()
        },
        **{
            f"{split}_patients": sum(c["patients"] for c in classes.values())
            for split, classes in splits.items()
        },
        **{
            f"{split}_quality_flags": _qc_line(counts)
            for split, counts in card.data_summary["quality_control"]["by_split"].items()
        },
        "weights": printable_path(config.weights),
        "replicas": outcome.replicas,
        "threshold": round(float(outcome.threshold), 4),
        "calibration": config.calibration,
        "temperature": round(outcome.calibration.temperature, 4),
        "eval_tta": config.eval_tta,
        "heatmap_scale": card.heatmap_scale,
    }


def _qc_line(counts: dict) -> dict:
    """One split's quality flag counts as a summary row: clean images, then each flag."""
    return {"clean": f"{counts['clean']} of {counts['images']}", **counts["flags"]}


def _report_notes(config: TrainConfig, outcome: TrainingOutcome) -> list[str]:
    notes = [
        "Figures are for the held-out test split; train, validation and test share no "
        "specimen (slide id without section letters), so no patient is on two sides.",
        f"Decision threshold {outcome.threshold:.4f}: {outcome.threshold_rule}",
    ]
    notes.append(_calibration_note(outcome.calibration))
    if config.eval_tta > 1:
        notes.append(
            f"Validation and test p are the sigmoid of each image's mean logit over "
            f"{config.eval_tta} test-time views (turns and mirrors; --eval_tta), as the scorer "
            "computes them by default."
        )
    if config.weights == "none":
        notes.append("Trained without ImageNet weights (random initialisation).")
    return notes


def _calibration_note(fit: TemperatureFit) -> str:
    """One sentence on the temperature and the validation split's calibration before and after."""

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    if fit.fitted:
        text = f"Probabilities are calibrated by temperature scaling: T = {fit.temperature:.4f}"
    else:
        text = f"Probabilities are not calibrated (T = 1): {fit.note}"
    text += (
        f"; on the {fit.validation_images} validation images, log-loss "
        f"{shown(fit.log_loss_before)} -> {shown(fit.log_loss_after)} and ECE "
        f"{shown(fit.ece_before)} -> {shown(fit.ece_after)} (uncalibrated -> as exported)."
    )
    if fit.fitted and fit.note:
        text += f" Caution: {fit.note}."
    return text
