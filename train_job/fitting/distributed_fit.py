"""The epochs of Keras' `fit`, run by the job itself for a strategy that spans several workers.

Keras 3's `fit` (and `evaluate`, `predict`) stops at its first step under
MultiWorkerMirroredStrategy (keras-team/keras#20585): before training it averages a
distributed batch, which that strategy cannot do. This loop runs what `fit` would run: the
model's own `train_step` and `test_step` (its compiled loss, the batches' sample weights, its
metrics and optimizer) under `strategy.run` inside a `tf.function`, and calls the callbacks at
the moments `fit` calls them, so early stopping, checkpoints, progress lines and TensorBoard
behave as under `fit`, and the model's `history` holds the same keys.

Each global batch is split between the replicas by the job, not by tf.data's auto-sharding:
every worker reads the same global batches (they are a function of seed and epoch) and keeps
its replicas' slices, so every replica runs the same number of steps and no step waits on a
worker whose data ran out.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from train_job.fitting.callbacks import assign_values, variable_values
from train_job.fitting.distribute import spans_workers
from train_job.fitting.worker_sync import chief_values

logger = logging.getLogger(__name__)


def fit_method(strategy: tf.distribute.Strategy, model: keras.Model) -> Callable[..., object]:
    """`model.fit`, or this module's loop with the same arguments when the strategy spans
    several workers."""
    if not spans_workers(strategy):
        return model.fit
    return functools.partial(fit_across_workers, strategy, model)


def fit_across_workers(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    x: tf.data.Dataset,
    *,
    validation_data: tf.data.Dataset,
    epochs: int,
    steps_per_epoch: int,
    initial_epoch: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    shuffle: bool = False,
    verbose: int = 0,
) -> keras.callbacks.History:
    """Train epochs initial_epoch .. epochs - 1 of global batches `x` as `model.fit` would.

    `x` yields (image, label[, sample weight]) global batches, steps_per_epoch of them per
    epoch; `validation_data` yields (image, label) global batches and must have a known
    length. The model must be compiled, with its optimizer built, under the strategy's scope.
    `shuffle` and `verbose` are accepted for `fit`'s signature: the loop keeps the stream's
    order and prints nothing (the callbacks log).
    """
    if shuffle:
        raise ValueError("fit_across_workers keeps the stream's order; pass shuffle=False")
    validation_steps = int(validation_data.cardinality())
    if validation_steps < 0:
        raise ValueError("the validation dataset must have a known number of batches")
    replicas = strategy.num_replicas_in_sync
    training = strategy.distribute_datasets_from_function(
        lambda context: replica_batches(with_sample_weights(x), context, replicas)
    )
    validation = strategy.distribute_datasets_from_function(
        lambda context: replica_batches(validation_data, context, replicas)
    )
    with strategy.scope():
        _build_compiled_state(model, x)
    # As under MirroredStrategy, where restoring a best epoch sets every replica to replica 0's
    # values: each phase starts from the chief's (the BatchNorm moving statistics are updated
    # per replica, so each worker's drift apart during a phase).
    assign_values(
        model.variables, chief_values(strategy, variable_values(model.variables)), "model"
    )
    train_step = _run_steps(strategy, model.train_step)
    test_step = _run_steps(strategy, model.test_step)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, model=model, epochs=epochs, steps=steps_per_epoch
    )
    model.stop_training = False
    callback_list.on_train_begin()
    batches = iter(training)
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            train_step(batches)
            callback_list.on_train_batch_end(step, {})  # epoch metrics only, read below
            if model.stop_training:
                break
        logs = _metric_results(model)
        model.reset_metrics()
        callback_list.on_test_begin()
        validation_batches = iter(validation)
        for step in range(validation_steps):
            callback_list.on_test_batch_begin(step)
            test_step(validation_batches)
            callback_list.on_test_batch_end(step, {})
        validation_logs = _metric_results(model)
        callback_list.on_test_end(validation_logs)
        logs.update({f"val_{name}": value for name, value in validation_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history


def with_sample_weights(batches: tf.data.Dataset) -> tf.data.Dataset:
    """(image, label, weight) batches: a weight of 1 is added to (image, label) batches, so a
    replica's share can be padded with weight-0 images (`replica_batches`)."""
    if len(batches.element_spec) == 3:
        return batches
    return batches.map(lambda image, label: (image, label, tf.ones(tf.shape(label)[:1])))


def replica_batches(
    global_batches: tf.data.Dataset, context: tf.distribute.InputContext, replicas: int
) -> tf.data.Dataset:
    """This worker's share of every global batch: one slice per local replica, in order.

    Replica r of R gets images [r * n // R, (r + 1) * n // R) of a batch of n. A training batch
    (with sample weights) with fewer images than replicas gives the replicas left without an
    image its first image at weight 0, so no replica trains on an empty batch (BatchNorm's
    batch statistics of nothing are NaN); an evaluation batch leaves them empty.
    """
    local = replicas // context.num_input_pipelines
    first = context.input_pipeline_id * local

    def share(*batch):
        size = tf.shape(batch[0], out_type=tf.int64)[0]

        def replica_slice(replica):
            start, end = replica * size // replicas, (replica + 1) * size // replicas
            if len(batch) < 3:
                return tuple(tensor[start:end] for tensor in batch)
            empty = tf.equal(start, end)
            indices = tf.cond(empty, lambda: tf.zeros([1], tf.int64), lambda: tf.range(start, end))
            image, label, weight = (tf.gather(tensor, indices) for tensor in batch)
            return image, label, weight * tf.cast(tf.logical_not(empty), weight.dtype)

        return tf.data.Dataset.range(first, first + local).map(replica_slice)

    return global_batches.flat_map(share)


def _build_compiled_state(model: keras.Model, batches: tf.data.Dataset) -> None:
    """Create the compiled metrics' and loss' variables before the traced step runs.

    `fit` does this in `_maybe_symbolic_build`, the step that fails under
    MultiWorkerMirroredStrategy; its inner `_symbolic_build` takes an ordinary batch spec.
    """
    spec = batches.element_spec
    model._symbolic_build(data_batch=tuple(tf.zeros([1, *s.shape[1:]], s.dtype) for s in spec))


def _run_steps(strategy: tf.distribute.Strategy, step: Callable) -> Callable:
    """A traced function that runs `step` on every replica's next batch of an iterator."""

    @tf.function
    def run(iterator):
        strategy.run(step, args=(next(iterator),))

    return run


def _metric_results(model: keras.Model) -> dict[str, float]:
    """The model's metrics summed over every replica of every worker (a collective read)."""
    return {name: float(value) for name, value in model.get_metrics_result().items()}
