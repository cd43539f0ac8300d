"""Choosing the distribution strategy from TF_CONFIG."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from train_job.distribute import choose_strategy, fit_input, is_chief, worker_count


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
