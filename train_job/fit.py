"""Fit the classifier in two phases, each backed up every epoch so a killed job resumes."""

from __future__ import annotations

import json
import logging
import os

import keras
import tensorflow as tf

from model.architecture import conv_block_names
from train_job.callbacks import EpochProgress, InterruptAfter, SyncDirectory
from train_job.config import TrainConfig
from train_job.data import DataError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
PHASE1_WEIGHTS = "phase1_complete.weights.h5"
PHASE1_HISTORY = "phase1_history.json"


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
        raise DataError(f"--fine_tune_from must be one of {blocks} or 'none'")
    start = len(blocks) if first_block is None else blocks.index(first_block)
    for layer in model.layers:
        prefix = layer.name.split("_")[0]
        if prefix in blocks:
            layer.trainable = blocks.index(prefix) >= start


def fit_two_phases(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    datasets: dict[str, tf.data.Dataset],
    checkpoint_dir: str,
    remote_checkpoint_dir: str | None,
) -> tuple[dict, dict]:
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
            config,
            model,
            datasets,
            name,
            epochs,
            checkpoint_dir,
            remote_checkpoint_dir,
            done_before,
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


def _fit_phase(
    config: TrainConfig,
    model: keras.Model,
    datasets: dict[str, tf.data.Dataset],
    name: str,
    epochs: int,
    checkpoint_dir: str,
    remote_checkpoint_dir: str | None,
    done_before: int,
) -> dict[str, list[float]]:
    """One model.fit with backup, early stopping, TensorBoard and progress callbacks."""
    backup = os.path.join(checkpoint_dir, name)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup),
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.TensorBoard(os.path.join(os.path.dirname(checkpoint_dir), "logs", name)),
        EpochProgress(name, epochs),
    ]
    if remote_checkpoint_dir:
        callbacks.append(SyncDirectory(checkpoint_dir, remote_checkpoint_dir))
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
