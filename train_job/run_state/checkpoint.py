"""The checkpoint folder of a run: the settings and split it trains on, and its state per epoch.

`<output_dir>/checkpoints/` (local or gs://) holds `run.json` (the result-changing flags, the
replica count, when the run started and the export-looking files already in the folder then,
which are not its own: `train_job.run_state.earlier_export`), `split.csv` (the split, to
notice data that changed under the same flags) and `state.npz`: which phase, how many of its
epochs are done, the history so far, the early-stopping state, every model variable (BatchNorm
statistics and Dropout seed states included, which `save_weights` skips), the optimizer's
variables, and the best epoch's variables when they are not the current ones. Every file is
replaced whole (`atomic`).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import logging
import os
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from model import storage
from model.atomic import replace_file, temporary_prefix

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
RUN_FILE = "run.json"
SPLIT_FILE = "split.csv"
STATE_FILE = "state.npz"
OWN_FILES = (STATE_FILE, RUN_FILE, SPLIT_FILE)
DONE = "done"  # the phase of a state saved after the last phase
FORMAT_VERSION = 1


@dataclasses.dataclass
class TrainingState:
    """Where training is, and every value needed to continue exactly from there."""

    phase: str  # the phase to continue, or DONE
    epochs_done: int  # epochs of that phase already trained
    history: dict[str, dict[str, list[float]]]  # phase -> metric -> one value per epoch
    early_stopping: dict[str, Any]  # the phase's EarlyStopping.state()
    model_variables: list[np.ndarray]
    optimizer_variables: list[np.ndarray]  # empty at the start of a phase
    best_variables: list[np.ndarray] | None = None  # None: the best epoch is the last one


class Checkpoints:
    """Reads and writes the checkpoint folder of one output folder; only a writer writes."""

    def __init__(self, output_dir: str, writer: bool = True):
        self.location = storage.join(output_dir, CHECKPOINT_DIR)
        self.writer = writer

    def _path(self, name: str) -> str:
        return storage.join(self.location, name)

    def recorded_run(self) -> dict[str, Any] | None:
        """run.json's content, or None when no run has been recorded."""
        if not storage.exists(self._path(RUN_FILE)):
            return None
        return json.loads(storage.read_text(self._path(RUN_FILE)))

    def recorded_split(self) -> str | None:
        """The split.csv text the checkpoints were trained on, or None."""
        path = self._path(SPLIT_FILE)
        return storage.read_text(path) if storage.exists(path) else None

    def record_run(
        self,
        settings: dict[str, Any],
        replicas: int,
        split_text: str,
        foreign_files: list[str],
    ) -> None:
        """Record what the checkpoints will belong to (before the first epoch), and the
        export-looking files ('/'-separated, relative) the folder held before this run."""
        if not self.writer:
            return
        record = {
            "format_version": FORMAT_VERSION,
            "settings": settings,
            "replicas": replicas,
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "foreign_files": sorted(foreign_files),
        }
        self._write(SPLIT_FILE, lambda stream: stream.write(split_text.encode("utf-8")))
        run_text = json.dumps(record, indent=2) + "\n"
        self._write(RUN_FILE, lambda stream: stream.write(run_text.encode("utf-8")))

    def save(self, state: TrainingState) -> None:
        """Replace state.npz with this state."""
        if not self.writer:
            return
        meta = {
            "phase": state.phase,
            "epochs_done": state.epochs_done,
            "history": state.history,
            "early_stopping": state.early_stopping,
            "has_best": state.best_variables is not None,
        }
        arrays = {"meta": np.array(json.dumps(meta))}
        for prefix, values in (
            ("model", state.model_variables),
            ("optimizer", state.optimizer_variables),
            ("best", state.best_variables or []),
        ):
            arrays.update({f"{prefix}_{index:05d}": value for index, value in enumerate(values)})
        self._write(STATE_FILE, lambda stream: np.savez(stream, **arrays))
        logger.debug("Checkpoint: %s, %d epochs done", state.phase, state.epochs_done)

    def load(self) -> TrainingState | None:
        """The last saved state, or None when no epoch has been saved yet."""
        path = self._path(STATE_FILE)
        if not storage.exists(path):
            return None
        return parse_state(storage.read_bytes(path))

    def delete(self) -> None:
        """Remove the checkpoint folder (after the export is complete, or on --restart)."""
        if not self.writer:
            return
        if storage.is_remote(self.location):
            prefix = storage.join(self.location, "")
            files = storage.list_files(self.location)
            storage.delete([path for path in files if is_checkpoint_file(path[len(prefix) :])])
            return
        if not os.path.isdir(self.location):
            return
        for entry in os.listdir(self.location):
            if is_checkpoint_file(entry):
                os.remove(self._path(entry))
        if not os.listdir(self.location):
            os.rmdir(self.location)

    def _write(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        replace_file(self._path(name), write)


def is_checkpoint_file(name: str) -> bool:
    """Whether a file name in the checkpoint folder is one Checkpoints writes, or the temporary
    file of such a write that a kill interrupted."""
    return name in OWN_FILES or any(name.startswith(temporary_prefix(own)) for own in OWN_FILES)


def parse_state(data: bytes) -> TrainingState:
    """The TrainingState of a state.npz file's bytes."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))

        def arrays(prefix: str) -> list[np.ndarray]:
            names = sorted(name for name in archive.files if name.startswith(prefix + "_"))
            return [archive[name] for name in names]

        return TrainingState(
            phase=meta["phase"],
            epochs_done=meta["epochs_done"],
            history=meta["history"],
            early_stopping=meta["early_stopping"],
            model_variables=arrays("model"),
            optimizer_variables=arrays("optimizer"),
            best_variables=arrays("best") if meta["has_best"] else None,
        )
