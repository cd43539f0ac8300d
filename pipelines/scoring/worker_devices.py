"""A scoring worker's TensorFlow devices, set up once per process before its model loads.

On a GPU worker every SDK process of the VM sees the same GPU (Dataflow starts one process per
vCPU). TensorFlow's default is to reserve nearly all of a GPU's memory for the first process
that touches it, so the others fail to allocate; with memory growth each process takes only
what its model and batches need, so several can share the GPU (and NVIDIA MPS can run their
kernels side by side). Memory growth can only be chosen before TensorFlow initialises its
devices, which is why the model handler calls `enable_gpu_memory_growth` before loading.
"""

from __future__ import annotations

import logging

from model.network.tensorflow_runtime import load_tensorflow

logger = logging.getLogger(__name__)


def enable_gpu_memory_growth() -> list[str]:
    """Turn on memory growth for every visible GPU; returns the names of the GPUs it is on for.

    No GPU: nothing to do. A GPU that TensorFlow has already initialised in this process (a
    model loaded before, with other settings) keeps its setting, with a warning, instead of
    failing the worker: the process still scores, it only holds more GPU memory.
    """
    load_tensorflow()
    import tensorflow as tf

    growing = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError) as error:  # initialised, or virtual devices set
            logger.warning("GPU %s keeps its memory settings: %s", gpu.name, error)
        else:
            growing.append(gpu.name)
    if growing:
        logger.info("GPU memory growth on for %s", ", ".join(growing))
    return growing
