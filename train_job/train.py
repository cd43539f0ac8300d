"""train(config): split by specimen, fit in two phases under a tf.distribute strategy, export."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import platform
import shutil
import tempfile
import uuid

import keras
import numpy as np
import tensorflow as tf

from model import storage
from model.architecture import build_classifier
from model.constants import CLASS_NAMES
from model.labels import label_index, label_name
from model.metrics import choose_threshold
from model.model_card import ModelCard
from model.plots import TRAINING_CURVES_PLOT, training_curves_png
from train_job import data
from train_job.config import TrainConfig
from train_job.dataset import class_weights_for, make_dataset
from train_job.distribute import choose_strategy, is_chief
from train_job.evaluation import evaluation_report, plot_files, predict, report_json
from train_job.export import write_export
from train_job.fit import CHECKPOINT_DIR, fit_two_phases
from train_job.report import write_training_report

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Outcome:
    """What the export files are written from."""

    rows: list[dict]
    by_split: dict[str, list[dict]]
    discovery: data.Discovery
    report: dict
    history: dict
    threshold: float
    threshold_rule: str
    replicas: int
    global_batch: int
    class_weights: dict[int, float]
    test_p: np.ndarray


@dataclasses.dataclass
class TrainResult:
    """What train() produced: where, the threshold, test metrics and the per-phase histories."""

    output_dir: str
    threshold: float
    test_metrics: dict
    history: dict
    replicas: int
    epochs_run: dict


def train(config: TrainConfig, strategy: tf.distribute.Strategy | None = None) -> TrainResult:
    """Run the whole training job and write its export to config.output_dir."""
    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _train(config, strategy)
    finally:  # the policy is process-global; leave it as we found it
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config: TrainConfig, strategy: tf.distribute.Strategy | None) -> TrainResult:
    keras.utils.set_random_seed(config.seed)
    strategy = strategy or choose_strategy()
    replicas = strategy.num_replicas_in_sync
    remote = storage.is_remote(config.output_dir)
    work_dir = tempfile.mkdtemp(prefix="breakhis-train-") if remote else config.output_dir
    os.makedirs(work_dir, exist_ok=True)
    checkpoint_dir = os.path.join(work_dir, CHECKPOINT_DIR)
    if remote:
        _restore_remote_checkpoints(config.output_dir, checkpoint_dir)

    rows, discovery = _split(config)
    _write_text(work_dir, "split.csv", data.split_csv_text(rows))
    by_split = {name: [row for row in rows if row["split"] == name] for name in data.SPLITS}
    train_labels = _labels(by_split["train"])
    class_weights = class_weights_for(train_labels)
    logger.info(
        "Class weights from the training split (benign %d, malignant %d images): "
        "benign %.3f, malignant %.3f",
        train_labels.count(0),
        train_labels.count(1),
        class_weights[0],
        class_weights[1],
    )

    global_batch = config.batch_size * replicas
    logger.info("Global batch %d (%d per replica x %d)", global_batch, config.batch_size, replicas)
    datasets = _datasets(config, by_split, global_batch, class_weights)

    with strategy.scope():
        model = build_classifier(
            config.image_size, config.weights, config.dense_units, config.dropout
        )
    remote_checkpoints = storage.join(config.output_dir, CHECKPOINT_DIR) if remote else None
    history, epochs_run = fit_two_phases(
        config, strategy, model, datasets, checkpoint_dir, remote_checkpoints
    )

    validation_p = predict(model, datasets["validation"])
    threshold, threshold_rule = choose_threshold(_labels(by_split["validation"]), validation_p)
    threshold_rule += _few_validation_patients(by_split["validation"])
    logger.info("Decision threshold %.4f: %s", threshold, threshold_rule)
    test_p = predict(model, datasets["test"])
    report = evaluation_report(by_split["test"], test_p, threshold)
    _log_headline(report)

    if is_chief(strategy):
        outcome = _Outcome(
            rows,
            by_split,
            discovery,
            report,
            history,
            threshold,
            threshold_rule,
            replicas,
            global_batch,
            class_weights,
            test_p,
        )
        _write_outputs(config, work_dir, model, outcome)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        if remote:
            storage.upload_dir(work_dir, config.output_dir)
            storage.delete(storage.list_files(storage.join(config.output_dir, CHECKPOINT_DIR)))
            shutil.rmtree(work_dir, ignore_errors=True)
    return TrainResult(config.output_dir, threshold, report, history, replicas, epochs_run)


def _split(config: TrainConfig) -> tuple[list[dict], data.Discovery]:
    discovery = data.discover_images(config.data_dir, config.magnifications)
    if config.folds:
        assignment = data.fold_by_specimen(
            discovery.images, config.folds, config.fold, config.val_fraction, config.seed
        )
    else:
        assignment = data.split_by_specimen(
            discovery.images, config.val_fraction, config.test_fraction, config.seed
        )
    rows = data.split_rows(discovery.images, assignment)
    for split, classes in data.summarize_split(rows).items():
        logger.info(
            "%s: %s",
            split,
            ", ".join(
                f"{name} {counts['images']} images / {counts['patients']} patients"
                for name, counts in classes.items()
            ),
        )
    return rows, discovery


MIN_VALIDATION_PATIENTS = 3


def _few_validation_patients(rows: list[dict]) -> str:
    """A caution for the threshold rule when a class has few validation patients, else ''."""
    patients = {
        name: {row["slide_id"] for row in rows if row["label"] == name} for name in CLASS_NAMES
    }
    few = {name: len(ids) for name, ids in patients.items() if len(ids) < MIN_VALIDATION_PATIENTS}
    if not few:
        return ""
    counts = " and ".join(f"{count} {name}" for name, count in few.items())
    logger.warning(
        "The validation split has only %s patient(s): the threshold is unreliable", counts
    )
    return f" Caution: the validation split has only {counts} patient(s), so this is unreliable."


def _labels(rows: list[dict]) -> list[int]:
    return [label_index(row["label"]) for row in rows]


def _datasets(config, by_split, global_batch, class_weights) -> dict[str, tf.data.Dataset]:
    def build(split: str, training: bool) -> tf.data.Dataset:
        rows = by_split[split]
        return make_dataset(
            [row["image_path"] for row in rows],
            _labels(rows),
            config.image_size,
            global_batch,
            training=training,
            seed=config.seed,
            cache=config.cache,
            augment=config.augment,
            class_weights=class_weights if training else None,
        )

    train_data = build("train", training=True)
    if config.steps_per_epoch:
        train_data = train_data.repeat()
    validation = build("validation", training=False)
    return {
        "train": train_data,
        "validation": validation,
        "test": build("test", training=False),
    }


def _restore_remote_checkpoints(output_dir: str, checkpoint_dir: str) -> None:
    remote_checkpoints = storage.join(output_dir, CHECKPOINT_DIR)
    copied = storage.download_dir(remote_checkpoints, checkpoint_dir)
    if copied:
        logger.info("Resuming from %d checkpoint files in %s", len(copied), remote_checkpoints)


def _log_headline(report: dict) -> None:
    pooled = report["image_level"]["pooled"]
    patients = report["patient_level"]["pooled"]
    baseline = report["baseline"]["image_level"]["pooled"]

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    logger.info(
        "Test split: image accuracy %s (majority baseline %s), balanced accuracy %s, ROC AUC %s, "
        "patient recognition rate %s, patient-level accuracy %s",
        fmt(pooled["accuracy"]),
        fmt(baseline["accuracy"]),
        fmt(pooled["balanced_accuracy"]),
        fmt(pooled["roc_auc"]),
        fmt(pooled.get("patient_recognition_rate")),
        fmt(patients["accuracy"]),
    )


def _write_text(directory: str, name: str, text: str) -> None:
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _versions() -> dict[str, str]:
    import apache_beam

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "apache_beam": apache_beam.__version__,
    }


def _write_outputs(config: TrainConfig, work_dir: str, model: keras.Model, outcome: _Outcome):
    """metrics.json, plots, the model card and the model files into work_dir."""
    _write_text(work_dir, "metrics.json", report_json(outcome.report))
    for name, png in plot_files(outcome.by_split["test"], outcome.test_p, outcome.report).items():
        os.makedirs(os.path.join(work_dir, "plots"), exist_ok=True)
        with open(os.path.join(work_dir, name), "wb") as handle:
            handle.write(png)
    with open(os.path.join(work_dir, *TRAINING_CURVES_PLOT.split("/")), "wb") as handle:
        handle.write(training_curves_png(outcome.history))
    _write_text(work_dir, "history.json", json.dumps(outcome.history, indent=2) + "\n")
    card = ModelCard(
        model_id=uuid.uuid4().hex,
        image_size=config.image_size,
        threshold=float(outcome.threshold),
        threshold_rule=outcome.threshold_rule,
        training_config={
            **dataclasses.asdict(config),
            "replicas": outcome.replicas,
            "global_batch_size": outcome.global_batch,
            "effective_learning_rate": config.learning_rate * outcome.replicas,
            "effective_fine_tune_learning_rate": config.fine_tune_learning_rate * outcome.replicas,
            "class_weights": {label_name(k): v for k, v in outcome.class_weights.items()},
        },
        data_summary={
            "data_dir": config.data_dir,
            "magnifications": list(config.magnifications),
            "images_used": len(outcome.rows),
            "unparsed_files": len(outcome.discovery.unparsed),
            "unparsed_examples": outcome.discovery.unparsed[:10],
            "unreadable_files": outcome.discovery.unreadable,
            "split_unit": "specimen (slide id without section letters)",
            "splits": data.summarize_split(outcome.rows),
        },
        test_metrics=outcome.report,
        versions=_versions(),
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    write_export(model, card, work_dir)
    splits = card.data_summary["splits"]
    summary = {
        "model_id": card.model_id,
        "data_dir": config.data_dir,
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
        "weights": config.weights,
        "replicas": outcome.replicas,
        "threshold": round(float(outcome.threshold), 4),
    }
    notes = [
        "Figures are for the held-out test split; train, validation and test share no "
        "specimen (slide id without section letters), so no patient is on two sides.",
        f"Decision threshold {outcome.threshold:.4f}: {outcome.threshold_rule}",
    ]
    if config.weights.lower() == "none":
        notes.append("Trained without ImageNet weights (random initialisation).")
    write_training_report(
        work_dir,
        model,
        config.image_size,
        outcome.threshold,
        outcome.by_split["test"],
        outcome.test_p,
        outcome.report,
        outcome.discovery,
        summary,
        notes,
    )
