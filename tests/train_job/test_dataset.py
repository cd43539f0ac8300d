"""The tf.data input pipeline: parity with scoring preprocessing, augmentation, class weights."""

from __future__ import annotations

import numpy as np
import pytest

from model.preprocessing import preprocess_image
from train_job.dataset import class_weights_for, make_dataset


@pytest.fixture(scope="module")
def image_paths(synthetic_data_dir) -> list[str]:
    return sorted(str(path) for path in synthetic_data_dir.rglob("*.png"))[:6]


def _first_batch(paths, training, **kwargs):
    dataset = make_dataset(paths, [0, 1] * (len(paths) // 2), 32, len(paths), training, **kwargs)
    return next(iter(dataset))


def test_training_path_equals_scoring_preprocessing_bit_for_bit(image_paths):
    images, labels = _first_batch(image_paths, training=False)
    for path, tensor in zip(image_paths, images.numpy(), strict=True):
        with open(path, "rb") as handle:
            expected = preprocess_image(handle.read(), 32)
        assert tensor.dtype == expected.dtype == np.float32
        assert np.array_equal(tensor, expected), path
    assert labels.numpy().ravel().tolist() == [0, 1, 0, 1, 0, 1]


def test_augmentation_changes_training_images_only(image_paths):
    plain = _first_batch(image_paths, training=True, augment=False)[0].numpy()
    augmented = _first_batch(image_paths, training=True, augment=True)[0].numpy()
    # Shuffling reorders, so compare as sets of images via their sorted means.
    assert not np.allclose(
        np.sort(plain.mean(axis=(1, 2, 3))), np.sort(augmented.mean(axis=(1, 2, 3)))
    )
    evaluation = _first_batch(image_paths, training=False, augment=True)[0].numpy()
    expected = np.stack([preprocess_image(open(p, "rb").read(), 32) for p in image_paths])
    assert np.array_equal(evaluation, expected)


def test_class_weights_balance_the_classes():
    weights = class_weights_for([0] * 10 + [1] * 30)
    assert weights == {0: pytest.approx(2.0), 1: pytest.approx(2 / 3)}
    assert 10 * weights[0] == pytest.approx(30 * weights[1])


def test_training_batches_carry_per_image_class_weights(image_paths):
    labels = [0, 1, 1, 1, 1, 1]
    weights = class_weights_for(labels)
    dataset = make_dataset(image_paths, labels, 32, 6, True, class_weights=weights)
    _, batch_labels, sample_weights = next(iter(dataset))
    expected = [weights[int(label)] for label in batch_labels.numpy().ravel()]
    np.testing.assert_allclose(sample_weights.numpy(), expected)
