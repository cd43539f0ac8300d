"""What the workers of a multi-worker run agree on: the chief decides, every worker follows.

Only the chief reads and writes the output folder. Its decisions (nothing to do, refuse,
resume from its checkpoint) and, at the end, its weights reach the other workers through
collectives, so a worker that was given another (or no) output folder still trains in step.
Every worker makes the same exchanges in the same order: a worker that fails before an
exchange sends its error through it, and every worker then stops with that error, instead of
leaving the others waiting for a step that never comes. With one worker every exchange is a
plain function call.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from typing import TypeVar

import keras
import numpy as np
import tensorflow as tf

from model import storage
from train_job.data.discovery import DataError
from train_job.fitting.callbacks import assign_values, variable_values
from train_job.fitting.distribute import is_chief, spans_workers
from train_job.launch_checks import LaunchError
from train_job.run_state.checkpoint import STATE_FILE, Checkpoints, TrainingState, parse_state

T = TypeVar("T")
_STOPPING_ERRORS = (LaunchError, DataError)  # what the job reports as one line, exit code 2


def chief_decides(strategy: tf.distribute.Strategy, decide: Callable[[], str | None]) -> str | None:
    """The text `decide` returns on the chief, on every worker (only the chief runs it).

    A LaunchError or DataError on the chief is raised on every worker.
    """
    if not spans_workers(strategy):
        return decide()
    outcome: dict = {}
    if is_chief(strategy):
        outcome = _attempt(decide)
    outcome = json.loads(broadcast_bytes(strategy, json.dumps(outcome).encode()))
    if "error" in outcome:
        raise LaunchError(outcome["error"])
    return outcome["value"]


def same_on_every_worker(
    strategy: tf.distribute.Strategy,
    work: Callable[[], T],
    fingerprint: Callable[[T], str],
    what: str,
) -> T:
    """`work()` on this worker, once every worker has run it and their fingerprints agree.

    A LaunchError or DataError on any worker is raised on every worker (naming the worker);
    differing fingerprints raise a LaunchError saying the workers see different `what`.
    """
    if not spans_workers(strategy):
        return work()
    result: list[T] = []

    def run() -> str:
        result.append(work())
        return fingerprint(result[0])

    outcomes = [
        json.loads(text) for text in gather_bytes(strategy, json.dumps(_attempt(run)).encode())
    ]
    for index, outcome in enumerate(outcomes):
        if "error" in outcome:
            raise LaunchError(f"worker {index} of {len(outcomes)}: {outcome['error']}")
    if len({outcome["value"] for outcome in outcomes}) > 1:
        raise LaunchError(
            f"the {len(outcomes)} workers see different {what}; start every worker with the "
            "same flags on the same data"
        )
    return result[0]


def text_fingerprint(text: str) -> str:
    """A short digest of a text, to compare what the workers computed."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def wait_for_every_worker(strategy: tf.distribute.Strategy) -> None:
    """Return once every worker has reached this point (a no-op with one worker).

    A worker that exits while another still runs is reported by TensorFlow's coordination
    service as crashed, so the workers finish together.
    """
    if spans_workers(strategy):
        gather_bytes(strategy, b"")


def broadcast_bytes(strategy: tf.distribute.Strategy, data: bytes) -> bytes:
    """The bytes the chief passes, on every worker (the others' `data` is ignored)."""
    mine = data if is_chief(strategy) else b""
    length = max(_gather_lengths(strategy, len(mine)))
    return _sum_of_one_per_worker(strategy, _int32_words(mine, length)).tobytes()[:length]


def gather_bytes(strategy: tf.distribute.Strategy, data: bytes) -> list[bytes]:
    """Every worker's bytes, in the order of their replicas (the chief's first)."""
    lengths = _gather_lengths(strategy, len(data))
    workers, index = _worker_position(strategy)
    rows = np.zeros([workers, _int32_words(b"", max(lengths)).size], np.int32)
    rows[index] = _int32_words(data, max(lengths))
    rows = _sum_of_one_per_worker(strategy, rows)
    return [row.tobytes()[:length] for row, length in zip(rows, lengths, strict=True)]


def _gather_lengths(strategy: tf.distribute.Strategy, length: int) -> list[int]:
    """Every worker's `length`, in the order of their replicas."""
    workers, index = _worker_position(strategy)
    lengths = np.zeros([workers], np.int64)
    lengths[index] = length
    return [int(value) for value in _sum_of_one_per_worker(strategy, lengths)]


def _sum_of_one_per_worker(strategy: tf.distribute.Strategy, array: np.ndarray) -> np.ndarray:
    """The sum over workers of each worker's `array` (from one of its replicas; the others
    add zeros). Used with arrays that are zero outside a worker's own part, it copies."""
    first_local = min(_local_replica_ids(strategy))
    zeros = np.zeros_like(array)
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(
            array if context.replica_id_in_sync_group == first_local else zeros
        )
    )
    return strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()


def _worker_position(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """(how many workers, this worker's place among them by its replicas' numbers)."""
    local = _local_replica_ids(strategy)
    return strategy.num_replicas_in_sync // len(local), min(local) // len(local)


def _int32_words(data: bytes, length: int) -> np.ndarray:
    """`data` zero-padded to `length` bytes and on to whole int32 words (at least one: an empty
    collective crashes TensorFlow), as words: collectives carry numbers, and int32 sums with
    zeros are exact copies."""
    size = max(4, length + (-length) % 4)
    return np.frombuffer(data + bytes(size - len(data)), dtype=np.int32).copy()


def _local_replica_ids(strategy: tf.distribute.Strategy) -> list[int]:
    """The numbers (replica_id_in_sync_group) of this worker's replicas."""
    ids = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(context.replica_id_in_sync_group)
    )
    return [int(value) for value in strategy.experimental_local_results(ids)]


def _attempt(work: Callable[[], str | None]) -> dict:
    """{"value": work()} or, when it stops the job, {"error": its message}."""
    try:
        return {"value": work()}
    except _STOPPING_ERRORS as error:
        return {"error": str(error)}


class SharedCheckpoints(Checkpoints):
    """The chief's checkpoint folder, as every worker must see it: `load` is an exchange that
    every worker makes at the same point, and gives each the chief's last state."""

    def __init__(self, strategy: tf.distribute.Strategy, output_dir: str):
        super().__init__(output_dir, writer=is_chief(strategy))
        self.strategy = strategy

    def load(self) -> TrainingState | None:
        """The chief's last saved state on every worker, or None when it has none."""
        path = storage.join(self.location, STATE_FILE)
        data = storage.read_bytes(path) if self.writer and storage.exists(path) else b""
        data = broadcast_bytes(self.strategy, data)
        return parse_state(data) if data else None


def checkpoints_for(strategy: tf.distribute.Strategy, output_dir: str) -> Checkpoints:
    """The output folder's checkpoints: written by the chief only, loaded by every worker
    from the chief when the strategy spans several workers."""
    if spans_workers(strategy):
        return SharedCheckpoints(strategy, output_dir)
    return Checkpoints(output_dir, writer=is_chief(strategy))


def chief_model_here(strategy: tf.distribute.Strategy, model: keras.Model) -> keras.Model:
    """The fitted model to calibrate, evaluate and export: the model itself, or, when the
    strategy spans several workers, a copy outside any strategy holding the chief's weights.

    Keras 3's `predict` cannot run under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    and each worker's copy of the BatchNorm moving statistics follows its own batches (Keras
    updates them per replica, as under MirroredStrategy, where replica 0's are the ones kept):
    every worker takes the chief's, so each evaluates the model the chief exports.
    """
    if not spans_workers(strategy):
        return model
    copy = keras.models.clone_model(model)  # called outside the strategy's scope
    assign_values(copy.variables, chief_values(strategy, variable_values(model.variables)), "model")
    return copy


def chief_values(strategy: tf.distribute.Strategy, values: list[np.ndarray]) -> list[np.ndarray]:
    """The chief's arrays on every worker (each worker passes its own, of the same number)."""
    stream = io.BytesIO()
    np.savez(stream, *values)
    with np.load(io.BytesIO(broadcast_bytes(strategy, stream.getvalue()))) as archive:
        return [archive[f"arr_{index}"] for index in range(len(archive.files))]
