"""Test-time augmentation: the dihedral views of a square model input, and their inverses.

A view is a flip (left-right, or none) followed by a number of 90-degree counter-clockwise
turns. `--tta K` scores the first K views of `VIEWS`, chosen so that each prefix is a group:

- K=1: the image as it is;
- K=2: plus its left-right mirror;
- K=4: plus its 180-degree turn and its top-bottom mirror: every view keeps the image's axes,
  so these are also exact symmetries of a non-square original (the model input squashes a
  700x460 tile to a square the same way in all four);
- K=8: plus the four views that turn by 90 degrees (the square's full symmetry group).

Since the views of a group are closed under composition, an image turned or mirrored by one of
them has the same set of views as the image itself: its mean logit is the same, and its averaged
Grad-CAM map (each view's map turned back by `invert_view`) is the same map, turned.
Training augments with every one of these views (random 90-degree turns and flips), so each is
an image of the kind the model was trained on.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from model.constants import LOGIT_LAYER, TTA_CHOICES

# Traced functions per logit model and view count, dropped with the model.
_TTA_FUNCTIONS: weakref.WeakKeyDictionary[keras.Model, dict[int, Callable]] = (
    weakref.WeakKeyDictionary()
)


class View(NamedTuple):
    """One dihedral view: mirror left-right first (when `flip`), then turn `turns` x 90 degrees."""

    turns: int
    flip: bool


VIEWS: tuple[View, ...] = (
    View(0, False),  # identity
    View(0, True),  # left-right mirror
    View(2, False),  # 180-degree turn
    View(2, True),  # top-bottom mirror
    View(1, False),  # 90 degrees counter-clockwise
    View(1, True),  # transpose-like
    View(3, False),  # 90 degrees clockwise
    View(3, True),  # the other diagonal
)


def tta_views(tta: int) -> tuple[View, ...]:
    """The views `--tta tta` scores (see the module docstring for which and why)."""
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {tta!r}")
    return VIEWS[:tta]


def turns_fit(views: tuple[View, ...], image_shape: tuple) -> bool:
    """Whether the views keep an input of image_shape [H, W, ...]: a quarter turn needs H == W."""
    return image_shape[0] == image_shape[1] or all(view.turns % 2 == 0 for view in views)


def apply_view(images: tf.Tensor, view: View) -> tf.Tensor:
    """The view of a [N, H, W, C] batch (H == W for a quarter turn)."""
    if view.flip:
        images = tf.image.flip_left_right(images)
    return tf.image.rot90(images, k=view.turns) if view.turns else images


def invert_view(images: tf.Tensor, view: View) -> tf.Tensor:
    """Undo `apply_view` on a [N, H, W, C] batch: a view's map back in the input's orientation."""
    if view.turns:
        images = tf.image.rot90(images, k=4 - view.turns)
    return tf.image.flip_left_right(images) if view.flip else images


def images_per_pass(batch_size: int, tta: int) -> int:
    """Images whose views one forward pass takes: at most max(batch_size, tta) views a pass.

    The pass's memory (activations of every view) is then what --batch_size images cost at
    --tta 1, whatever the number of views; each image's views stay in one pass.
    """
    return max(1, batch_size // tta)


def pass_chunks(batches: Iterable[np.ndarray | tf.Tensor], tta: int) -> Iterator[tf.Tensor]:
    """Each batch of images split so one forward pass holds at most as many views as the batch
    held images (`images_per_pass`)."""
    for batch in batches:
        batch = tf.convert_to_tensor(batch, dtype=tf.float32)
        step = images_per_pass(int(batch.shape[0]), tta)
        for start in range(0, int(batch.shape[0]), step):
            yield batch[start : start + step]


def view_statistics(logits: tf.Tensor, view_count: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(P(malignant), p_std) of N images from their view-major logits [view_count * N].

    P is the sigmoid of the mean logit (averaging log-odds, not probabilities, keeps one
    confident view from being diluted into a middling p); p_std is the population standard
    deviation of the views' probabilities, exactly 0 with one view.
    """
    per_view = tf.reshape(logits, [view_count, -1])
    probability = tf.sigmoid(mean_view_logit(logits, view_count))
    return probability, tf.math.reduce_std(tf.sigmoid(per_view), axis=0)


def mean_view_logit(logits: tf.Tensor, view_count: int) -> tf.Tensor:
    """The mean logit [N] of N images over their view-major logits [view_count * N]: the
    log-odds whose sigmoid `view_statistics` gives as P(malignant)."""
    return tf.reduce_mean(tf.reshape(logits, [view_count, -1]), axis=0)


def logit_model(model: keras.Model, logit_layer: str = LOGIT_LAYER) -> keras.Model:
    """The classifier up to its pre-sigmoid logit (the card's `logit_layer`)."""
    try:
        layer = model.get_layer(logit_layer)
    except ValueError as error:
        raise ValueError(
            f"model {model.name!r} has no logit layer named {logit_layer!r}"
        ) from error
    return keras.Model(model.input, layer.output, name=f"{model.name}_logit")


def predict_with_tta(
    logits_of: keras.Model, images: np.ndarray | tf.Tensor, tta: int
) -> tuple[np.ndarray, np.ndarray]:
    """(P(malignant) [N], p_std [N]) over the tta views of each image, in one batched pass.

    logits_of is a `logit_model`; images are normalised model input [N, S, S, 3].
    """
    probability, spread, _, _ = _tta_function(logits_of, tta)(
        tf.convert_to_tensor(images, dtype=tf.float32)
    )
    return probability.numpy(), spread.numpy()


def predict_mean_logit(
    logits_of: keras.Model, images: np.ndarray | tf.Tensor, tta: int
) -> np.ndarray:
    """The mean logit [N] over the tta views of each image (`mean_view_logit`), in one pass."""
    _, _, mean_logit, _ = _tta_function(logits_of, tta)(
        tf.convert_to_tensor(images, dtype=tf.float32)
    )
    return mean_logit.numpy()


def predict_view_logits(
    logits_of: keras.Model, images: np.ndarray | tf.Tensor, tta: int
) -> np.ndarray:
    """Each view's logit [N, tta] (views in `VIEWS` order) of N images, in one pass."""
    _, _, _, view_logits = _tta_function(logits_of, tta)(
        tf.convert_to_tensor(images, dtype=tf.float32)
    )
    return view_logits.numpy()


def _tta_function(logits_of: keras.Model, tta: int) -> Callable:
    """The traced (p, p_std, mean logit, view logits [N, views]) function of a logit model and
    view count, cached."""
    functions = _TTA_FUNCTIONS.setdefault(logits_of, {})
    if tta not in functions:
        functions[tta] = _trace_tta(logits_of, tta_views(tta))
    return functions[tta]


def _trace_tta(logits_of: keras.Model, views: tuple[View, ...]) -> Callable:
    """A tf.function giving (p, p_std, mean logit, view logits [N, views]) for every view of a
    batch, traced once."""
    model_ref = weakref.ref(logits_of)  # the cache must not keep its own key alive
    image_shape = tuple(logits_of.inputs[0].shape[1:])
    if not turns_fit(views, image_shape):
        raise ValueError(f"90-degree views need a square model input, got {image_shape}")

    @tf.function(input_signature=[tf.TensorSpec((None, *image_shape), tf.float32)])
    def scores(images: tf.Tensor):
        batch = tf.concat([apply_view(images, view) for view in views], axis=0)
        logits = tf.reshape(tf.cast(model_ref()(batch, training=False), tf.float32), [-1])
        return (
            *view_statistics(logits, len(views)),
            mean_view_logit(logits, len(views)),
            tf.transpose(tf.reshape(logits, [len(views), -1])),
        )

    return scores
