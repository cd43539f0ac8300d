"""Choosing the distribution strategy from TF_CONFIG, and the job's own loop for a strategy
that spans several workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from train_job.fitting.distribute import (
    choose_strategy,
    fit_input,
    is_chief,
    spans_workers,
    worker_count,
    worker_tasks,
)
from train_job.fitting.distributed_fit import (
    fit_across_workers,
    replica_batches,
    with_sample_weights,
)


def test_worker_count_reads_tf_config():
    assert worker_count("") == 1
    assert worker_count(json.dumps({"cluster": {"worker": ["a:1"]}})) == 1
    two = {"cluster": {"chief": ["c:1"], "worker": ["w:1"]}, "task": {"type": "chief", "index": 0}}
    assert worker_count(json.dumps(two)) == 2


def test_without_tf_config_all_local_devices_are_mirrored(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = choose_strategy()
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == max(1, len(tf.config.list_logical_devices("GPU")))
    assert is_chief(strategy)


def test_one_replica_reads_the_dataset_in_place_with_the_same_batches():
    strategy = tf.distribute.MirroredStrategy()
    if strategy.num_replicas_in_sync != 1:
        pytest.skip("needs a single replica")
    dataset = tf.data.Dataset.range(10).batch(4)
    distributed = fit_input(strategy, dataset)
    # Per replica, read in place: no multi-device prefetching iterator to delete after a fit.
    assert not isinstance(distributed, tf.data.Dataset)
    batches = [
        strategy.experimental_local_results(batch)[0].numpy().tolist() for batch in distributed
    ]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    worker_iterator = iter(distributed)._iterators[0]._iterator  # TensorFlow internals
    assert "MultiDevice" not in type(worker_iterator).__name__


def test_several_replicas_keep_the_default_distribution():
    class TwoReplicas:
        num_replicas_in_sync = 2

    dataset = tf.data.Dataset.range(4)
    assert fit_input(TwoReplicas(), dataset) is dataset


def shares(global_batches: tf.data.Dataset, workers: int, replicas: int) -> list[list]:
    """Each replica's batches, as lists of element tuples, in replica order."""
    per_replica = []
    for pipeline in range(workers):
        context = tf.distribute.InputContext(workers, pipeline, replicas)
        batches = list(replica_batches(global_batches, context, replicas))
        local = replicas // workers
        for replica in range(local):
            per_replica.append(
                [[t.numpy().tolist() for t in batch] for batch in batches[replica::local]]
            )
    return per_replica


def test_each_replica_gets_its_slice_of_every_global_batch():
    images = tf.data.Dataset.range(11)
    batches = tf.data.Dataset.zip((images, images.map(lambda i: i * 10))).batch(8)  # 8, then 3
    per_replica = shares(batches, workers=2, replicas=4)
    assert per_replica == [
        [[[0, 1], [0, 10]], [[], []]],  # 3 images for 4 replicas: replica 0 gets none
        [[[2, 3], [20, 30]], [[8], [80]]],
        [[[4, 5], [40, 50]], [[9], [90]]],
        [[[6, 7], [60, 70]], [[10], [100]]],
    ]


def test_a_replica_left_without_a_training_image_trains_on_one_at_weight_zero():
    images = tf.data.Dataset.range(3)
    weights = tf.data.Dataset.from_tensors(0.5).repeat(3)
    batches = with_sample_weights(tf.data.Dataset.zip((images, images)).batch(3))
    assert len(batches.element_spec) == 3  # a weight of 1 was added
    weighted = tf.data.Dataset.zip((images, images, weights)).batch(3)
    assert shares(weighted, workers=1, replicas=4) == [
        [[[0], [0], [0.0]]],  # padded: no replica may train on an empty batch (BatchNorm)
        [[[0], [0], [0.5]]],
        [[[1], [1], [0.5]]],
        [[[2], [2], [0.5]]],
    ]


def test_spans_workers_only_with_several_tasks_in_the_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert not spans_workers(tf.distribute.MirroredStrategy())
    assert worker_tasks(tf.distribute.MirroredStrategy()) == 1


def test_the_loop_trains_what_keras_fit_trains():
    """fit_across_workers under a one-replica strategy equals model.fit: same history (loss,
    metrics, val_ metrics), same weights, callbacks called with the same logs."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.normal(size=(20, 4)).astype("float32")
    labels = (images[:, :1] > 0).astype("float32")
    weights = np.where(labels[:, 0] > 0, 2.0, 0.5).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((images, labels, weights)).batch(6).repeat(3)
    validation = tf.data.Dataset.from_tensor_slices((images[:7], labels[:7])).batch(4)
    strategy = tf.distribute.MirroredStrategy()

    class Logs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((epoch, dict(logs)))

    def fitted(fit_with_loop: bool):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            inputs = keras.Input((4,))
            hidden = keras.layers.BatchNormalization()(keras.layers.Dense(5)(inputs))
            model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
            model.compile(
                optimizer=keras.optimizers.Adam(0.01),
                loss=keras.losses.BinaryCrossentropy(),
                metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy()],
            )
            model.optimizer.build(model.trainable_variables)
        logs = Logs()
        options = dict(
            validation_data=validation,
            initial_epoch=1,
            epochs=3,
            steps_per_epoch=4,
            callbacks=[logs],
            shuffle=False,
            verbose=0,
        )
        if fit_with_loop:
            history = fit_across_workers(strategy, model, train, **options)
        else:
            history = model.fit(fit_input(strategy, train), **options)
        return history.history, model.get_weights(), logs.epochs

    loop_history, loop_weights, loop_logs = fitted(True)
    fit_history, fit_weights, fit_logs = fitted(False)
    assert sorted(loop_history) == sorted(fit_history)
    assert {"loss", "auc", "val_loss", "val_auc", "val_binary_accuracy"} <= set(loop_history)
    for key, values in fit_history.items():
        np.testing.assert_allclose(loop_history[key], values, rtol=1e-5, err_msg=key)
    for loop_value, fit_value in zip(loop_weights, fit_weights, strict=True):
        np.testing.assert_allclose(loop_value, fit_value, rtol=1e-5, atol=1e-6)
    assert [epoch for epoch, _ in loop_logs] == [epoch for epoch, _ in fit_logs] == [1, 2]


def test_importing_the_jobs_modules_creates_no_tensor():
    # MultiWorkerMirroredStrategy configures collective ops, which TensorFlow allows only before
    # its eager context starts; a tensor made at import time (e.g. a module-level tf.constant)
    # starts it, and every multi-worker run then fails at "Collective ops must be configured at
    # program startup". Checked in a fresh interpreter: this one has long started TensorFlow.
    code = (
        "import train_job.main, train_job.train\n"
        "import train_job.cross_validation.run, train_job.cross_validation.aggregate\n"
        "import model.image.stain, model.network.gradcam, model.network.tta\n"
        "import model.network.calibration\n"
        "from tensorflow.python.eager import context\n"
        "print(context.context()._initialized)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.strip().splitlines()[-1] == "False"
