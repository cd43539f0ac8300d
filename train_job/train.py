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
from model.architecture import build_classifier, conv_block_names
from model.constants import CLASS_NAMES
from model.metrics import choose_threshold
from model.model_card import ModelCard
from model.plots import training_curves_png
from train_job import data
from train_job.callbacks import EpochProgress, InterruptAfter, SyncDirectory
from train_job.config import TrainConfig
from train_job.dataset import class_weights_for, make_dataset
from train_job.distribute import choose_strategy, is_chief
from train_job.evaluation import evaluation_report, plot_files, predict, report_json
from train_job.export import write_export
from train_job.report import write_training_report

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
PHASE1_WEIGHTS = "phase1_complete.weights.h5"
PHASE1_HISTORY = "phase1_history.json"


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
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
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
    history, epochs_run = _fit_two_phases(config, strategy, model, datasets, checkpoint_dir, remote)

    validation_p = predict(model, datasets["validation_eval"])
    threshold, threshold_rule = choose_threshold(_labels(by_split["validation"]), validation_p)
    logger.info("Decision threshold %.4f: %s", threshold, threshold_rule)
    test_p = predict(model, datasets["test"])
    report = evaluation_report(by_split["test"], test_p, threshold)
    _log_headline(report)

    if is_chief(strategy):
        _write_outputs(
            config,
            work_dir,
            model,
            rows,
            discovery,
            report,
            history,
            threshold,
            threshold_rule,
            replicas,
            global_batch,
            class_weights,
            by_split,
            test_p,
        )
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


def _labels(rows: list[dict]) -> list[int]:
    return [CLASS_NAMES.index(row["label"]) for row in rows]


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
        "validation_eval": validation,
        "test": build("test", training=False),
    }


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )


def _set_trainable_from(model: keras.Model, first_block: str | None) -> None:
    """Freeze the VGG16 base up to first_block (all of it when None); the head always trains."""
    blocks = conv_block_names(model)
    if first_block is not None and first_block not in blocks:
        raise data.DataError(f"--fine_tune_from must be one of {blocks} or 'none'")
    start = len(blocks) if first_block is None else blocks.index(first_block)
    for layer in model.layers:
        prefix = layer.name.split("_")[0]
        if prefix in blocks:
            layer.trainable = blocks.index(prefix) >= start


def _fit_two_phases(config, strategy, model, datasets, checkpoint_dir, remote):
    """Phase 1 trains the head on a frozen base; phase 2 fine-tunes from a conv block.

    Each phase backs up to its own folder (BackupAndRestore), so a killed job rerun with the
    same --output_dir resumes at its last finished epoch; a finished phase 1 is kept as weights.
    """
    replicas = strategy.num_replicas_in_sync
    fine_tune = config.fine_tune_epochs > 0 and config.fine_tune_from.lower() != "none"
    phases = [("phase1", config.epochs, None, config.learning_rate)]
    if fine_tune:
        phases.append(
            (
                "phase2",
                config.fine_tune_epochs,
                config.fine_tune_from,
                config.fine_tune_learning_rate,
            )
        )
    history: dict = {}
    epochs_run: dict = {}
    done_before = 0
    phase1_weights = os.path.join(checkpoint_dir, PHASE1_WEIGHTS)
    for name, epochs, first_block, base_rate in phases:
        if name == "phase1" and os.path.exists(phase1_weights):
            logger.info("Phase 1 already finished in an earlier run; loading its weights")
            model.load_weights(phase1_weights)
            with open(os.path.join(checkpoint_dir, PHASE1_HISTORY), encoding="utf-8") as handle:
                history = json.load(handle)
            done_before += config.epochs
            epochs_run[name] = 0
            continue
        with strategy.scope():
            _set_trainable_from(model, first_block)
            _compile(model, base_rate * replicas)
        logger.info(
            "%s: %d epochs, learning rate %.2g (%.2g x %d replicas), base trainable from %s",
            name,
            epochs,
            base_rate * replicas,
            base_rate,
            replicas,
            first_block or "nowhere",
        )
        phase_history = _fit_phase(
            config, model, datasets, name, epochs, checkpoint_dir, remote, done_before
        )
        epochs_run[name] = len(phase_history.get("loss", []))
        if name == "phase1":
            history = phase_history
            if fine_tune:  # where the training-curves plot marks the start of fine-tuning
                history["phase_boundary"] = len(phase_history.get("loss", []))
            model.save_weights(phase1_weights)
            with open(os.path.join(checkpoint_dir, PHASE1_HISTORY), "w", encoding="utf-8") as f:
                json.dump(history, f)
        else:
            for key, values in phase_history.items():
                history.setdefault(key, []).extend(values)
        done_before += epochs
    return history, epochs_run


def _fit_phase(config, model, datasets, name, epochs, checkpoint_dir, remote, done_before):
    backup = os.path.join(checkpoint_dir, name)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup),
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.TensorBoard(os.path.join(os.path.dirname(checkpoint_dir), "logs", name)),
        EpochProgress(name, epochs),
    ]
    if remote:
        callbacks.append(
            SyncDirectory(checkpoint_dir, storage.join(config.output_dir, CHECKPOINT_DIR))
        )
    if config.stop_after_epochs is not None:
        callbacks.append(InterruptAfter(done_before, config.stop_after_epochs))
    result = model.fit(
        datasets["train"],
        validation_data=datasets["validation"],
        epochs=epochs,
        steps_per_epoch=config.steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles; Keras cannot shuffle a dataset
        verbose=0,
    )
    return {key: [float(v) for v in values] for key, values in result.history.items()}


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


def _write_outputs(
    config,
    work_dir,
    model,
    rows,
    discovery,
    report,
    history,
    threshold,
    threshold_rule,
    replicas,
    global_batch,
    class_weights,
    by_split,
    test_p,
):
    """metrics.json, plots, the model card and the model files into work_dir."""
    _write_text(work_dir, "metrics.json", report_json(report))
    for name, png in plot_files(by_split["test"], test_p, report).items():
        os.makedirs(os.path.join(work_dir, "plots"), exist_ok=True)
        with open(os.path.join(work_dir, name), "wb") as handle:
            handle.write(png)
    with open(os.path.join(work_dir, "plots", "training_curves.png"), "wb") as handle:
        handle.write(training_curves_png(history))
    _write_text(work_dir, "history.json", json.dumps(history, indent=2) + "\n")
    card = ModelCard(
        model_id=uuid.uuid4().hex,
        image_size=config.image_size,
        threshold=float(threshold),
        threshold_rule=threshold_rule,
        training_config={
            **dataclasses.asdict(config),
            "replicas": replicas,
            "global_batch_size": global_batch,
            "effective_learning_rate": config.learning_rate * replicas,
            "effective_fine_tune_learning_rate": config.fine_tune_learning_rate * replicas,
            "class_weights": {CLASS_NAMES[k]: v for k, v in class_weights.items()},
        },
        data_summary={
            "data_dir": config.data_dir,
            "magnifications": list(config.magnifications),
            "images_used": len(rows),
            "unparsed_files": len(discovery.unparsed),
            "unparsed_examples": discovery.unparsed[:10],
            "split_unit": "specimen (slide id without section letters)",
            "splits": data.summarize_split(rows),
        },
        test_metrics=report,
        versions=_versions(),
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    write_export(model, card, work_dir)
    splits = card.data_summary["splits"]
    summary = {
        "model_id": card.model_id,
        "data_dir": config.data_dir,
        "images_used": len(rows),
        "unparsed_files": len(discovery.unparsed),
        **{
            f"{split}_images": sum(c["images"] for c in classes.values())
            for split, classes in splits.items()
        },
        **{
            f"{split}_patients": sum(c["patients"] for c in classes.values())
            for split, classes in splits.items()
        },
        "weights": config.weights,
        "replicas": replicas,
        "threshold": round(float(threshold), 4),
    }
    notes = [
        "Figures are for the held-out test split; train, validation and test share no "
        "specimen (slide id without section letters), so no patient is on two sides.",
        f"Decision threshold {threshold:.4f}: {threshold_rule}",
    ]
    if config.weights.lower() == "none":
        notes.append("Trained without ImageNet weights (random initialisation).")
    write_training_report(
        work_dir,
        model,
        config.image_size,
        threshold,
        by_split["test"],
        test_p,
        report,
        discovery.unparsed,
        summary,
        notes,
    )
