"""The tf.data input pipeline: parallel decode via `model.preprocessing`, cache, augment, batch.

Decoding and resizing call `model.preprocessing.load_image`, and normalisation calls
`model.preprocessing.normalize` — the very functions the scoring pipeline uses — so training
and scoring inputs are identical for the same file (tests/train_job/test_dataset.py proves it).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from model import storage
from model.preprocessing import load_image, normalize

AUTOTUNE = tf.data.AUTOTUNE


def _load_resized(path: bytes, image_size: int) -> np.ndarray:
    return load_image(storage.read_bytes(path.decode("utf-8")), int(image_size))


def decoded_images(paths: Sequence[str], image_size: int) -> tf.data.Dataset:
    """uint8 image_size x image_size x 3 images, decoded in parallel, in path order."""

    def load(path):
        image = tf.numpy_function(_load_resized, [path, image_size], tf.uint8, stateful=False)
        image.set_shape([image_size, image_size, 3])
        return image

    return tf.data.Dataset.from_tensor_slices(list(paths)).map(
        load, num_parallel_calls=AUTOTUNE, deterministic=True
    )


def augmenter(seed: int) -> keras.Sequential:
    """Random 90-degree turns plus small rotation, flips, zoom and shift (training only).

    Tissue has no up or down, so any right-angle turn and flip is a valid view; reflection
    fill avoids the black borders a constant fill would teach the model to look for.
    """
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
        ],
        name="augmentation",
    )


def _random_right_angle(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    turns = tf.random.stateless_uniform([], seed=seed, maxval=4, dtype=tf.int32)
    return tf.image.rot90(image, k=turns)


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int],
    image_size: int,
    global_batch_size: int,
    training: bool,
    seed: int = 42,
    cache: bool = True,
    augment: bool = True,
    class_weights: dict[int, float] | None = None,
) -> tf.data.Dataset:
    """Batches of (normalised image, label[, sample weight]); shuffled and augmented if training.

    With class_weights (training), each element carries its class weight as a sample weight:
    the explicit handling of BreakHis' 2.2:1 malignant/benign imbalance.
    """
    images = decoded_images(paths, image_size)
    label_data = tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.float32).reshape(-1, 1))
    dataset = tf.data.Dataset.zip((images, label_data))
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda image, label: (tf.cast(image, tf.float32), label))
    if training and augment:
        layers = augmenter(seed)
        counter = tf.data.Dataset.random(seed=seed).batch(2)
        dataset = tf.data.Dataset.zip((dataset, counter)).map(
            lambda pair, rng_seed: (
                layers(_random_right_angle(pair[0], rng_seed), training=True),
                pair[1],
            ),
            num_parallel_calls=AUTOTUNE,
        )
    dataset = dataset.map(lambda image, label: (normalize(image), label))
    if training and class_weights:
        weights = tf.constant([class_weights[0], class_weights[1]], tf.float32)
        dataset = dataset.map(
            lambda image, label: (image, label, tf.gather(weights, tf.cast(label[0], tf.int32)))
        )
    return dataset.batch(global_batch_size).prefetch(AUTOTUNE)


def class_weights_for(labels: Sequence[int]) -> dict[int, float]:
    """Balanced class weights n / (2 * n_class): each class carries half the total weight."""
    counts = np.bincount(np.asarray(labels, int), minlength=2)
    total = counts.sum()
    return {
        index: float(total / (2 * count)) if count else 0.0 for index, count in enumerate(counts)
    }
