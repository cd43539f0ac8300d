"""Pick the tf.distribute strategy (all local GPUs or the CPU, or workers named by TF_CONFIG),
say how many workers it spans and which one is the chief."""

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
        # The strategy waits, without a word and without a time limit, until every worker
        # named in TF_CONFIG has started and answered; Ctrl-C does not interrupt that wait.
        logger.info(
            "Waiting for all %d workers named by TF_CONFIG (no time limit; only SIGKILL stops "
            "the wait)",
            workers,
        )
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


def worker_tasks(strategy: tf.distribute.Strategy) -> int:
    """How many worker processes (chief included) the strategy spans; 1 without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return max(1, sum(len(jobs.get(job, [])) for job in ("chief", "worker")))


def spans_workers(strategy: tf.distribute.Strategy) -> bool:
    """Whether the strategy's replicas live in several processes (MultiWorkerMirroredStrategy)."""
    return worker_tasks(strategy) > 1


def fit_input(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """The dataset as Keras' fit should take it under the strategy.

    With one replica (the CPU, or one GPU) the dataset is handed over as a per-replica input
    that is read in place. The default distribution goes through a multi-device prefetching
    iterator whose own per-device datasets run tf.data's autotuning thread; on TensorFlow 2.21
    that thread can sleep through the iterator's cancellation, and deleting the iterator at the
    end of every fit then stalled for up to 50 s. Several replicas keep the default
    distribution, which splits each global batch between them.
    """
    if strategy.num_replicas_in_sync != 1:
        return dataset
    options = tf.distribute.InputOptions(
        experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
        experimental_fetch_to_device=False,
    )
    return strategy.distribute_datasets_from_function(lambda _: dataset, options=options)
