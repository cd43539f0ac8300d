"""Test-time views: which ones each --tta scores, their inverses, and p / p_std from logits."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.constants import TTA_CHOICES
from model.network import tta
from model.network.architecture import build_classifier

SIDE = 6


def _numpy_view(image: np.ndarray, view: tta.View) -> np.ndarray:
    """The view of one HxWxC array, written independently of model.network.tta with NumPy."""
    if view.flip:
        image = image[:, ::-1]
    return np.rot90(image, view.turns, axes=(0, 1))


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (SIDE, SIDE, 2)).astype(np.float32)


def test_views_are_the_eight_distinct_dihedral_transforms():
    image = _image()
    seen = {_numpy_view(image, view).tobytes() for view in tta.VIEWS}
    assert len(tta.VIEWS) == len(seen) == 8
    assert tta.tta_views(1) == (tta.View(0, False),)
    assert tta.tta_views(2) == (tta.View(0, False), tta.View(0, True))  # + left-right mirror
    # tta 4 keeps the image's axes: identity, mirror, 180-degree turn, top-bottom mirror.
    assert {view.turns for view in tta.tta_views(4)} == {0, 2}
    np.testing.assert_array_equal(_numpy_view(image, tta.VIEWS[3]), image[::-1])


@pytest.mark.parametrize("count", TTA_CHOICES)
def test_each_choice_is_a_group_so_a_transformed_image_has_the_same_views(count):
    image = _image(1)
    views = {_numpy_view(image, view).tobytes() for view in tta.tta_views(count)}
    for g in tta.tta_views(count):
        moved = _numpy_view(image, g)
        assert {_numpy_view(moved, view).tobytes() for view in tta.tta_views(count)} == views


@pytest.mark.parametrize("view", tta.VIEWS)
def test_tensorflow_views_match_numpy_and_invert(view):
    batch = np.stack([_image(2), _image(3)])
    applied = tta.apply_view(tf.constant(batch), view).numpy()
    np.testing.assert_array_equal(applied[1], _numpy_view(batch[1], view))
    np.testing.assert_array_equal(tta.invert_view(tf.constant(applied), view).numpy(), batch)


def test_other_view_counts_are_refused():
    for bad in (0, 3, 16):
        with pytest.raises(ValueError, match="tta must be one of 1, 2, 4, 8"):
            tta.tta_views(bad)


def test_a_pass_holds_at_most_batch_size_views_and_whole_images():
    assert tta.images_per_pass(32, 1) == 32
    assert tta.images_per_pass(32, 8) == 4
    assert tta.images_per_pass(6, 4) == 1 and tta.images_per_pass(1, 8) == 1
    chunks = list(tta.pass_chunks([np.zeros((10, 2, 2, 3)), np.zeros((3, 2, 2, 3))], 4))
    assert [len(chunk) for chunk in chunks] == [2, 2, 2, 2, 2, 1, 1, 1]


def test_p_is_the_sigmoid_of_the_mean_logit_and_p_std_the_spread_of_the_view_ps():
    logits = np.array([[2.0, -1.0], [0.0, -1.0], [4.0, -1.0]], np.float32)  # 3 views x 2 images
    p, spread = tta.view_statistics(tf.constant(logits.reshape(-1)), 3)
    sigmoid = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-logits.mean(axis=0))), rtol=1e-6)
    np.testing.assert_allclose(spread, sigmoid.std(axis=0), atol=1e-7)
    assert spread[1] == 0.0  # all views agree


@pytest.fixture(scope="module")
def classifier() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_classifier(32, weights="none", dense_units=8)


def test_predict_with_tta_scores_every_view_through_the_logit(classifier):
    images = np.random.default_rng(4).uniform(-120, 130, (3, 32, 32, 3)).astype(np.float32)
    logits_of = tta.logit_model(classifier)
    one, zero = tta.predict_with_tta(logits_of, images, 1)
    np.testing.assert_array_equal(one, classifier(images, training=False).numpy().reshape(-1))
    np.testing.assert_array_equal(zero, np.zeros(3, np.float32))

    p, spread = tta.predict_with_tta(logits_of, images, 8)
    view_logits = np.stack(
        [
            logits_of(np.stack([_numpy_view(image, view) for image in images])).numpy()[:, 0]
            for view in tta.VIEWS
        ]
    )
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-view_logits.mean(axis=0))), atol=1e-6)
    np.testing.assert_allclose(spread, (1 / (1 + np.exp(-view_logits))).std(axis=0), atol=1e-6)
    assert np.all(spread > 0), "a random network is not invariant to turns and mirrors"


def test_missing_logit_layer_is_named(classifier):
    with pytest.raises(ValueError, match="'calibrated'"):
        tta.logit_model(classifier, "calibrated")
