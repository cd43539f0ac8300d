"""The tf.data input: parallel decode via `model.image.preprocessing`, cache, augment, batch.

Decoding and resizing call `model.image.preprocessing.load_image`, and normalisation calls
`model.image.preprocessing.normalize` — the very functions the scoring pipeline uses — so training
and scoring inputs are identical for the same file (tests/train_job/data/test_dataset.py proves it).

Training batches are a pure function of (seed, epoch): each epoch's order comes from a shuffle
seeded with both, and each image's augmentation (the geometric views and the HED stain jitter
of `model.image.stain`) from stateless random ops seeded with (seed, epoch, the image's index). A
job resumed at epoch k therefore sees exactly the batches an uninterrupted job sees at epoch k.
Validation and test images are never augmented.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from model import storage
from model.image.preprocessing import load_image, normalize
from model.image.stain import stain_jitter

AUTOTUNE = tf.data.AUTOTUNE
ROTATION = 0.05  # largest rotation either way, as a fraction of a full turn (18 degrees)
ZOOM = 0.1  # largest zoom in or out, as a fraction of the image side
SHIFT = 0.1  # largest shift along each axis, as a fraction of the image side
_EPOCH_STRIDE = 1_000_003  # keeps the shuffle seeds of (seed, epoch) pairs apart
# Folded into an image's seed for its stain jitter, so the geometric views keep the draws they
# had before stain jitter existed (and --stain_jitter 0 gives the same batches as then).
_STAIN_STREAM = 1


def _load_resized(path: bytes, image_size: int, max_bytes: int) -> np.ndarray:
    data = storage.read_bytes(path.decode("utf-8"), max_bytes=int(max_bytes))
    return load_image(data, int(image_size))


def decoded_images(
    paths: Sequence[str], image_size: int, max_bytes: int = storage.DEFAULT_MAX_BYTES
) -> tf.data.Dataset:
    """uint8 image_size x image_size x 3 images, decoded in parallel, in path order.

    Each read refuses FIFOs, devices and files over max_bytes (`storage.read_bytes`).
    """

    def load(path):
        image = tf.numpy_function(
            _load_resized, [path, image_size, max_bytes], tf.uint8, stateful=False
        )
        image.set_shape([image_size, image_size, 3])
        return image

    return tf.data.Dataset.from_tensor_slices(list(paths)).map(
        load, num_parallel_calls=AUTOTUNE, deterministic=True
    )


def _labels(labels: Sequence[int]) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.float32).reshape(-1, 1))


def evaluation_dataset(
    paths: Sequence[str],
    labels: Sequence[int],
    image_size: int,
    global_batch_size: int,
    cache: bool = True,
    max_bytes: int = storage.DEFAULT_MAX_BYTES,
) -> tf.data.Dataset:
    """Batches of (normalised image, label) in path order, for validation, test and prediction.

    With cache, every image is decoded here, in one whole pass that fills the cache, so no
    later pass that stops part-way can be the one writing it.
    """
    dataset = tf.data.Dataset.zip((decoded_images(paths, image_size, max_bytes), _labels(labels)))
    if cache:
        dataset = dataset.cache()
        # Keras stops passes early (it peeks at a first batch); the validation predictions made
        # after fit were sometimes short of images ("12 labels but 9 scores") under load.
        dataset.reduce(np.int64(0), lambda count, _: count + 1)
    dataset = dataset.map(lambda image, label: (normalize(tf.cast(image, tf.float32)), label))
    return _without_autotuning(dataset.batch(global_batch_size).prefetch(AUTOTUNE))


def augment_image(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A random view of a float image, fully determined by `seed` (shape [2] integers).

    Any right-angle turn with or without a flip (tissue has no up or down), then a small
    rotation, zoom and shift in one resampling; reflection fill avoids the black borders a
    constant fill would teach the model to look for.
    """
    flip_seed, turn_seed, affine_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    turns = tf.random.stateless_uniform([], turn_seed, maxval=4, dtype=tf.int32)
    image = tf.image.rot90(image, k=turns)
    rotation, zoom, shift_x, shift_y = tf.unstack(
        tf.random.stateless_uniform([4], affine_seed, minval=-1.0, maxval=1.0)
    )
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    angle = rotation * ROTATION * 2.0 * math.pi
    scale = 1.0 + zoom * ZOOM  # input pixels per output pixel: below 1 zooms in
    cos, sin = scale * tf.cos(angle), scale * tf.sin(angle)
    center_x, center_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # Maps each output pixel to the input point it samples: about the centre, then shifted.
    transform = tf.stack(
        [
            cos,
            -sin,
            center_x - cos * center_x + sin * center_y + shift_x * SHIFT * width,
            sin,
            cos,
            center_y - sin * center_x - cos * center_y + shift_y * SHIFT * height,
            0.0,
            0.0,
        ]
    )
    transformed = keras.ops.image.affine_transform(
        image[tf.newaxis], transform[tf.newaxis], interpolation="bilinear", fill_mode="reflect"
    )
    return transformed[0]


def element_seed(seed: int, epoch: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """The augmentation seed of one image in one epoch."""
    pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_fold_in(pair, tf.cast(index, tf.int64))


def stain_seed(element: tf.Tensor) -> tf.Tensor:
    """The stain jitter's seed, derived from an image's augmentation seed (`element_seed`)."""
    return tf.random.experimental.stateless_fold_in(element, _STAIN_STREAM)


@dataclasses.dataclass(frozen=True)
class TrainingStream:
    """The training split decoded once, served as the batches of any range of epochs."""

    examples: tf.data.Dataset  # (uint8 image, label, index in the split), in split order
    size: int
    global_batch_size: int
    steps_per_epoch: int
    seed: int
    augment: bool
    class_weights: dict[int, float] | None
    stain_jitter: float = 0.0  # HED jitter strength (model.image.stain); 0: none

    def epochs(self, first: int, end: int) -> tf.data.Dataset:
        """The batches of epochs first .. end - 1, steps_per_epoch of them each.

        Epochs are numbered across phases, so phase 2 does not replay phase 1's augmentations.
        Each epoch is its own dataset with plain integer seeds (a tensor seed breaks
        `shuffle` when the global seed is 0), joined as a balanced tree of concatenations.
        """
        if end <= first:
            raise ValueError(f"no epochs in [{first}, {end})")
        stream = _concatenated([self._epoch(epoch) for epoch in range(first, end)])
        return _without_autotuning(stream.prefetch(AUTOTUNE))

    def _epoch(self, epoch: int) -> tf.data.Dataset:
        # The order also depends on TensorFlow's global seed, which train() sets to --seed. Not
        # reshuffled per iteration: Keras iterates the dataset once to build the model before
        # the real pass, and how many epochs that first iterator touched would vary.
        order_seed = self.seed * _EPOCH_STRIDE + epoch
        elements = self.examples.shuffle(self.size, seed=order_seed, reshuffle_each_iteration=False)
        elements = elements.map(
            lambda image, label, index: self._prepare(image, label, index, epoch),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        batches = elements.batch(self.global_batch_size)
        full_epoch = math.ceil(self.size / self.global_batch_size)
        if self.steps_per_epoch != full_epoch:  # a --steps_per_epoch cap: cycle through the split
            batches = batches.repeat()
        return batches.take(self.steps_per_epoch)

    def _prepare(self, image, label, index, epoch):
        image = tf.cast(image, tf.float32)
        seed = element_seed(self.seed, epoch, index)
        if self.stain_jitter:  # on the decoded pixels, before resampling blends neighbours
            image = stain_jitter(image, self.stain_jitter, stain_seed(seed))
        if self.augment:
            image = augment_image(image, seed)
        image = normalize(image)
        if not self.class_weights:
            return image, label
        weights = tf.constant([self.class_weights[0], self.class_weights[1]], tf.float32)
        return image, label, tf.gather(weights, tf.cast(label[0], tf.int32))


def _without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset with tf.data's autotuning thread off (AUTOTUNE takes fixed defaults).

    On TensorFlow 2.21 an iterator's autotuning thread can sleep through the iterator's
    cancellation, and deleting the iterator (Keras does at the end of every fit) then waits for
    it: stalls of up to 50 s were seen at phase ends. See also `distribute.fit_input`.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _concatenated(datasets: list[tf.data.Dataset]) -> tf.data.Dataset:
    """The datasets one after another, nested only log2(n) deep."""
    if len(datasets) == 1:
        return datasets[0]
    middle = len(datasets) // 2
    return _concatenated(datasets[:middle]).concatenate(_concatenated(datasets[middle:]))


def training_stream(
    paths: Sequence[str],
    labels: Sequence[int],
    image_size: int,
    global_batch_size: int,
    seed: int = 42,
    cache: bool = True,
    augment: bool = True,
    class_weights: dict[int, float] | None = None,
    steps_per_epoch: int | None = None,
    max_bytes: int = storage.DEFAULT_MAX_BYTES,
    stain_jitter: float = 0.0,
) -> TrainingStream:
    """The training split as a TrainingStream; with class_weights, batches carry sample weights.

    The class weights are the explicit handling of BreakHis' 2.2:1 malignant/benign imbalance.
    stain_jitter > 0 adds HED colour jitter of that strength (`model.image.stain`), with or without
    the geometric augmentation.
    """
    examples = tf.data.Dataset.zip(
        (
            decoded_images(paths, image_size, max_bytes),
            _labels(labels),
            tf.data.Dataset.range(len(paths)),
        )
    )
    if cache:
        examples = examples.cache()
        # Filled whole here, as the evaluation datasets are: a pass stopped part-way must never be
        # the one writing the cache, or epochs could silently see fewer images.
        examples.reduce(np.int64(0), lambda count, _: count + 1)
    return TrainingStream(
        examples=examples,
        size=len(paths),
        global_batch_size=global_batch_size,
        steps_per_epoch=steps_per_epoch or math.ceil(len(paths) / global_batch_size),
        seed=seed,
        augment=augment,
        class_weights=class_weights,
        stain_jitter=float(stain_jitter),
    )


def class_weights_for(labels: Sequence[int]) -> dict[int, float]:
    """Balanced class weights n / (2 * n_class): each class carries half the total weight."""
    counts = np.bincount(np.asarray(labels, int), minlength=2)
    total = counts.sum()
    return {
        index: float(total / (2 * count)) if count else 0.0 for index, count in enumerate(counts)
    }
