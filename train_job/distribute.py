"""Pick the tf.distribute strategy: all local GPUs (or the CPU), or workers named by TF_CONFIG."""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

logger = logging.getLogger(__name__)


def worker_count(tf_config: str) -> int:
    """How many workers (chief included) a TF_CONFIG value names; 1 when unset or empty."""
    cluster = json.loads(tf_config or "{}").get("cluster", {})
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def choose_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several workers, else MirroredStrategy.

    MirroredStrategy with no GPU runs one replica on the CPU, so the same job runs anywhere.
    """
    workers = worker_count(os.environ.get("TF_CONFIG", ""))
    if workers > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        logger.info("MultiWorkerMirroredStrategy over %d workers", workers)
    else:
        strategy = tf.distribute.MirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    logger.info(
        "%s: %d replica(s) in sync; %d GPU(s) visible",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        len(gpus),
    )
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the export (the chief, or the only worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs
    )
