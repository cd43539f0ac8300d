"""Fit the classifier in two phases, checkpointed every epoch so a killed job resumes exactly.

With pretrained weights (ImageNet or a weights file), phase 1 trains the head on a frozen VGG16
base and phase 2 fine-tunes from a conv block (--fine_tune_from) at a lower learning rate. From
scratch (--weights none) a frozen random base would stay random, so every layer trains from the
first epoch, and phase 2 continues the whole network at the lower learning rate (a step down of
the rate; --fine_tune_from none or --fine_tune_epochs 0 still skip it). A resumed job restores
the model, optimizer and early-stopping state of the last finished epoch and runs every
remaining epoch of both phases, on the same batches.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from model.network.architecture import conv_block_names
from train_job.config import TrainConfig
from train_job.data.dataset import TrainingStream
from train_job.fitting.callbacks import (
    EarlyStopping,
    EpochCheckpoint,
    EpochProgress,
    assign_values,
    variable_values,
)
from train_job.fitting.distribute import fit_input
from train_job.fitting.distributed_fit import fit_method
from train_job.launch_checks import VGG16_BLOCKS
from train_job.run_state.checkpoint import DONE, Checkpoints, TrainingState

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One model.fit: its epochs, the first trainable VGG16 block, its learning rate."""

    name: str
    epochs: int
    first_block: str | None  # None: the whole base stays frozen
    learning_rate: float  # per replica
    first_epoch: int  # its first epoch's number across phases (seeds the data stream)

    def trains(self) -> str:
        """What the phase trains, in words (logs and the model card)."""
        if self.first_block is None:
            return "the head only (VGG16 base frozen)"
        if self.first_block == VGG16_BLOCKS[0]:
            return "every layer"
        return f"the head and the VGG16 base from {self.first_block}"

    def card_entry(self) -> dict:
        """The phase as the model card's training_config records it."""
        return {
            "name": self.name,
            "epochs": self.epochs,
            "base_trainable_from": self.first_block,
            "trains": self.trains(),
            "learning_rate": self.learning_rate,
        }


def from_scratch(config: TrainConfig) -> bool:
    """Whether the VGG16 base starts from random weights (--weights none)."""
    return config.weights.strip().lower() == "none"


def plan_phases(config: TrainConfig) -> list[Phase]:
    """Phase 1, and phase 2 unless --fine_tune_epochs is 0 or --fine_tune_from none.

    From scratch both phases train every layer; otherwise phase 1 trains only the head.
    """
    whole_base = VGG16_BLOCKS[0]
    scratch = from_scratch(config)
    phases = [
        Phase("phase1", config.epochs, whole_base if scratch else None, config.learning_rate, 0)
    ]
    if config.fine_tune_epochs > 0 and config.fine_tune_from.lower() != "none":
        phases.append(
            Phase(
                "phase2",
                config.fine_tune_epochs,
                whole_base if scratch else config.fine_tune_from.lower(),
                config.fine_tune_learning_rate,
                config.epochs,
            )
        )
    return phases


@dataclasses.dataclass
class FitResult:
    """The history of every epoch (earlier runs' included) and the epochs run by this process."""

    history: dict
    epochs_run: dict[str, int]


def fit_phases(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    stream: TrainingStream,
    validation: tf.data.Dataset,
    checkpoints: Checkpoints,
    log_dir: str,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> FitResult:
    """Run the phases that are not finished, from the last checkpoint if there is one."""
    phases = plan_phases(config)
    if from_scratch(config):
        logger.info(
            "--weights none: training from scratch, so every layer (the whole VGG16 base and the "
            "head) trains from the first epoch; %s",
            "phase 2 continues every layer at --fine_tune_learning_rate (--fine_tune_from "
            "names no block here)"
            if len(phases) > 1
            else "no phase 2",
        )
    state = checkpoints.load()
    names = [phase.name for phase in phases] + [DONE]
    start = names.index(state.phase) if state else 0
    if state:
        assign_values(model.variables, state.model_variables, "model")
        logger.info("Resuming at %s after %d of its epochs", state.phase, state.epochs_done)
    trainer = _PhaseTrainer(
        config, strategy, model, stream, validation, checkpoints, log_dir, list(callbacks)
    )
    trainer.history = state.history if state else {}
    epochs_run = {phase.name: 0 for phase in phases}
    for index in range(start, len(phases)):
        phase = phases[index]
        resumed = state if state and state.phase == phase.name else None
        epochs_run[phase.name] = trainer.run(phase, resumed)
        checkpoints.save(
            TrainingState(
                phase=names[index + 1],
                epochs_done=0,
                history=trainer.history,
                early_stopping={},
                model_variables=variable_values(model.variables),
                optimizer_variables=[],
            )
        )
    return FitResult(combined_history(trainer.history, phases), epochs_run)


@dataclasses.dataclass
class _PhaseTrainer:
    """What every phase's fit shares; `history` gathers each phase's epochs."""

    config: TrainConfig
    strategy: tf.distribute.Strategy
    model: keras.Model
    stream: TrainingStream
    validation: tf.data.Dataset
    checkpoints: Checkpoints
    log_dir: str
    callbacks: list[keras.callbacks.Callback]
    history: dict = dataclasses.field(default_factory=dict)

    def run(self, phase: Phase, resumed: TrainingState | None) -> int:
        """Train the phase's remaining epochs and restore its best epoch; returns epochs run."""
        model = self.model
        replicas = self.strategy.num_replicas_in_sync
        with self.strategy.scope():
            _set_trainable_from(model, phase.first_block)
            _compile(model, phase.learning_rate * replicas)
            model.optimizer.build(model.trainable_variables)
        done = resumed.epochs_done if resumed else 0
        if resumed and resumed.optimizer_variables:
            assign_values(model.optimizer.variables, resumed.optimizer_variables, "optimizer")
        early_stopping = _early_stopping(self.config.patience, resumed)
        logger.info(
            "%s: epochs %d-%d of %d, learning rate %.2g (%.2g x %d replicas), training %s",
            phase.name,
            done + 1,
            phase.epochs,
            phase.epochs,
            phase.learning_rate * replicas,
            phase.learning_rate,
            replicas,
            phase.trains(),
        )
        if not early_stopping.stopped and done < phase.epochs:
            fit_method(self.strategy, model)(
                fit_input(
                    self.strategy,
                    self.stream.epochs(phase.first_epoch + done, phase.first_epoch + phase.epochs),
                ),
                validation_data=fit_input(self.strategy, self.validation),
                initial_epoch=done,
                epochs=phase.epochs,
                steps_per_epoch=self.stream.steps_per_epoch,
                callbacks=[
                    early_stopping,
                    EpochCheckpoint(self.checkpoints, phase.name, self.history, early_stopping),
                    EpochProgress(phase.name, phase.epochs),
                    keras.callbacks.TensorBoard(os.path.join(self.log_dir, phase.name)),
                    *self.callbacks,
                ],
                shuffle=False,  # the TrainingStream orders each epoch
                verbose=0,
            )
        early_stopping.restore_best(model)
        return len(self.history.get(phase.name, {}).get("loss", [])) - done


def _early_stopping(patience: int, resumed: TrainingState | None) -> EarlyStopping:
    """A phase's early stopping, continuing a resumed phase's count and best epoch."""
    if not resumed or not resumed.early_stopping:
        return EarlyStopping(patience)
    best = resumed.best_variables
    if best is None and resumed.early_stopping.get("best_epoch") is not None:
        best = resumed.model_variables  # the best epoch was the last one saved
    return EarlyStopping(patience, resumed.early_stopping, best)


def combined_history(history: dict[str, dict[str, list[float]]], phases: list[Phase]) -> dict:
    """One list per metric across phases, and where phase 2 starts (for the curves plot)."""
    combined: dict = {}
    for phase in phases:
        phase_history = history.get(phase.name, {})
        if phase.name != phases[0].name:
            combined["phase_boundary"] = len(combined.get("loss", []))
        for key, values in phase_history.items():
            combined.setdefault(key, []).extend(values)
    return combined


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )


def _set_trainable_from(model: keras.Model, first_block: str | None) -> None:
    """Freeze the VGG16 base up to first_block (all of it when None); the head always trains."""
    blocks = conv_block_names(model)
    start = len(blocks) if first_block is None else blocks.index(first_block)
    for layer in model.layers:
        prefix = layer.name.split("_")[0]
        if prefix in blocks:
            layer.trainable = blocks.index(prefix) >= start
