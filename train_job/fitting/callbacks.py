"""Keras callbacks of the training job: early stopping with explicit state, checkpoints, progress.

Keras' own EarlyStopping and BackupAndRestore keep their state in attributes that a resumed
job cannot set (and BackupAndRestore leaves the model's initial epoch set for the next fit), so
a resume here goes through state that is saved and restored explicitly.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import keras
import numpy as np

from train_job.run_state.checkpoint import Checkpoints, TrainingState

logger = logging.getLogger(__name__)

MONITOR = "val_auc"  # early stopping and the best epoch follow validation ROC AUC


def variable_values(variables) -> list[np.ndarray]:
    """NumPy copies of variables' current values."""
    return [np.array(variable.numpy()) for variable in variables]


def assign_values(variables, values: list[np.ndarray], what: str) -> None:
    """Set variables to saved values, refusing a list that does not match them."""
    variables = list(variables)
    if len(variables) != len(values):
        raise ValueError(
            f"the checkpoint holds {len(values)} {what} values, the model has {len(variables)}"
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


class EarlyStopping(keras.callbacks.Callback):
    """Stop a phase after `patience` epochs without a higher validation AUC; keep the best.

    The best value, its epoch, the epochs waited and the best epoch's variables are plain state
    (`state()`, `best_variables`), saved with each checkpoint and given back on resume.
    """

    def __init__(
        self,
        patience: int,
        state: dict[str, Any] | None = None,
        best_variables: list[np.ndarray] | None = None,
    ):
        super().__init__()
        self.patience = patience
        state = state or {}
        self.best: float | None = state.get("best")
        self.best_epoch: int | None = state.get("best_epoch")
        self.wait: int = state.get("wait", 0)
        self.stopped: bool = state.get("stopped", False)
        self.best_variables = best_variables

    def state(self) -> dict[str, Any]:
        """The JSON-friendly state a resumed phase starts from."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped": self.stopped,
        }

    def on_epoch_end(self, epoch, logs=None):
        value = float(logs[MONITOR])
        if self.best is None or value > self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_variables = variable_values(self.model.variables)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped = True
            self.model.stop_training = True
            logger.info(
                "Early stopping: no higher %s for %d epochs (best %.4f at epoch %d)",
                MONITOR,
                self.wait,
                self.best,
                self.best_epoch + 1,
            )

    def restore_best(self, model: keras.Model) -> None:
        """Give the model the best epoch's variables (a no-op when no epoch was seen)."""
        if self.best_variables is not None:
            assign_values(model.variables, self.best_variables, "model")
            logger.info(
                "Restored the variables of epoch %d (%s %.4f)",
                self.best_epoch + 1,
                MONITOR,
                self.best,
            )


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch, add its metrics to the history and save the whole training state."""

    def __init__(
        self,
        checkpoints: Checkpoints,
        phase: str,
        history: dict[str, dict[str, list[float]]],
        early_stopping: EarlyStopping,
    ):
        super().__init__()
        self.checkpoints = checkpoints
        self.phase = phase
        self.history = history
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch, logs=None):
        phase_history = self.history.setdefault(self.phase, {})
        for key, value in (logs or {}).items():
            phase_history.setdefault(key, []).append(float(value))
        if not self.checkpoints.writer:
            return
        best_is_current = self.early_stopping.best_epoch == epoch
        current = (
            self.early_stopping.best_variables
            if best_is_current
            else variable_values(self.model.variables)
        )
        self.checkpoints.save(
            TrainingState(
                phase=self.phase,
                epochs_done=epoch + 1,
                history=self.history,
                early_stopping=self.early_stopping.state(),
                model_variables=current,
                optimizer_variables=variable_values(self.model.optimizer.variables),
                best_variables=None if best_is_current else self.early_stopping.best_variables,
            )
        )


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
