"""Keras callbacks of the training job: per-epoch progress, checkpoint sync, a stop hook."""

from __future__ import annotations

import logging
import time

import keras

from model import storage

logger = logging.getLogger(__name__)


class EpochProgress(keras.callbacks.Callback):
    """One log line per epoch: loss, AUC and accuracy for train and validation, and duration."""

    def __init__(self, phase: str, epochs: int):
        super().__init__()
        self.phase = phase
        self.epochs = epochs
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}

        def value(key: str) -> str:
            return f"{logs[key]:.4f}" if key in logs else "-"

        logger.info(
            "%s epoch %d/%d: loss %s auc %s accuracy %s | val_loss %s val_auc %s "
            "val_accuracy %s | %.1fs",
            self.phase,
            epoch + 1,
            self.epochs,
            value("loss"),
            value("auc"),
            value("accuracy"),
            value("val_loss"),
            value("val_auc"),
            value("val_accuracy"),
            time.monotonic() - self._started,
        )


class SyncDirectory(keras.callbacks.Callback):
    """Copy a local folder (checkpoints) to a remote one after every epoch, for resuming."""

    def __init__(self, local_dir: str, remote_dir: str):
        super().__init__()
        self.local_dir = local_dir
        self.remote_dir = remote_dir

    def on_epoch_end(self, epoch, logs=None):
        storage.upload_dir(self.local_dir, self.remote_dir)


class InterruptAfter(keras.callbacks.Callback):
    """Raise after a given number of epochs in total: simulates a killed job in tests."""

    def __init__(self, epochs_done_before: int, stop_after: int):
        super().__init__()
        self.epochs_done_before = epochs_done_before
        self.stop_after = stop_after

    def on_epoch_end(self, epoch, logs=None):
        if self.epochs_done_before + epoch + 1 >= self.stop_after:
            raise TrainingInterrupted(f"interrupted after {self.stop_after} epochs (test hook)")


class TrainingInterrupted(RuntimeError):
    """Raised by InterruptAfter."""
