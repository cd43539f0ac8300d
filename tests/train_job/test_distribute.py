"""Choosing the distribution strategy from TF_CONFIG."""

from __future__ import annotations

import json

import tensorflow as tf

from train_job.distribute import choose_strategy, is_chief, worker_count


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
