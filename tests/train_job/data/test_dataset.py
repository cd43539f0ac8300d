"""The tf.data input pipeline: parity with scoring preprocessing, augmentation, class weights."""

from __future__ import annotations

import numpy as np
import pytest

from model.image.preprocessing import preprocess_image
from train_job.data.dataset import (
    class_weights_for,
    evaluation_dataset,
    training_stream,
)


@pytest.fixture(scope="module")
def image_paths(synthetic_data_dir) -> list[str]:
    return sorted(str(path) for path in synthetic_data_dir.rglob("*.png"))[:6]


def _stream(paths, **kwargs):
    return training_stream(paths, [0, 1] * (len(paths) // 2), 32, len(paths), **kwargs)


def _batches(dataset) -> list[np.ndarray]:
    return [batch[0].numpy() for batch in dataset]


def test_training_path_equals_scoring_preprocessing_bit_for_bit(image_paths):
    images, labels = next(iter(evaluation_dataset(image_paths, [0, 1] * 3, 32, 6)))
    for path, tensor in zip(image_paths, images.numpy(), strict=True):
        with open(path, "rb") as handle:
            expected = preprocess_image(handle.read(), 32)
        assert tensor.dtype == expected.dtype == np.float32
        assert np.array_equal(tensor, expected), path
    assert labels.numpy().ravel().tolist() == [0, 1, 0, 1, 0, 1]


def test_augmentation_changes_training_images_only(image_paths):
    plain = _batches(_stream(image_paths, augment=False).epochs(0, 1))[0]
    augmented = _batches(_stream(image_paths, augment=True).epochs(0, 1))[0]
    # The same seed gives the same order, so the images compare one to one.
    expected = np.stack([preprocess_image(open(p, "rb").read(), 32) for p in image_paths])
    assert sorted(plain.sum(axis=(1, 2, 3))) == pytest.approx(sorted(expected.sum(axis=(1, 2, 3))))
    assert all(not np.allclose(a, p) for a, p in zip(augmented, plain, strict=True))
    evaluation = next(iter(evaluation_dataset(image_paths, [0, 1] * 3, 32, 6)))[0].numpy()
    assert np.array_equal(evaluation, expected)


def test_each_epochs_batches_depend_only_on_seed_and_epoch(image_paths):
    # What makes a resumed job bit-exact: epoch 2 started fresh equals epoch 2 of a long run.
    stream = _stream(image_paths, seed=5)
    straight = _batches(stream.epochs(0, 3))
    assert len(straight) == 3 * stream.steps_per_epoch == 3
    resumed = _batches(_stream(image_paths, seed=5, cache=False).epochs(2, 3))
    np.testing.assert_array_equal(resumed[0], straight[2])
    assert not np.allclose(straight[1], straight[2])  # new order and augmentation every epoch
    other_seed = _batches(_stream(image_paths, seed=6).epochs(2, 3))
    assert not np.allclose(other_seed[0], straight[2])


def test_iterating_the_same_epochs_twice_gives_the_same_batches(image_paths):
    # Keras iterates the dataset once to build the model, then again to train on it.
    dataset = _stream(image_paths, seed=5).epochs(0, 2)
    first, second = _batches(dataset), _batches(dataset)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_a_seed_of_0_works_like_any_other(image_paths):
    import keras

    keras.utils.set_random_seed(0)  # what train() does for --seed 0
    stream = _stream(image_paths, seed=0)
    assert len(_batches(stream.epochs(3, 5))) == 2


def test_a_steps_cap_cycles_through_the_split(image_paths):
    stream = training_stream(image_paths, [0, 1] * 3, 32, 4, steps_per_epoch=5)
    batches = _batches(stream.epochs(0, 2))
    assert [len(batch) for batch in batches] == [4, 2, 4, 2, 4] * 2


def test_class_weights_balance_the_classes():
    weights = class_weights_for([0] * 10 + [1] * 30)
    assert weights == {0: pytest.approx(2.0), 1: pytest.approx(2 / 3)}
    assert 10 * weights[0] == pytest.approx(30 * weights[1])


def test_training_batches_carry_per_image_class_weights(image_paths):
    labels = [0, 1, 1, 1, 1, 1]
    weights = class_weights_for(labels)
    stream = training_stream(image_paths, labels, 32, 6, class_weights=weights)
    _, batch_labels, sample_weights = next(iter(stream.epochs(0, 1)))
    expected = [weights[int(label)] for label in batch_labels.numpy().ravel()]
    np.testing.assert_allclose(sample_weights.numpy(), expected)


def test_the_reader_refuses_a_fifo_or_an_oversized_file_instead_of_hanging(image_paths, tmp_path):
    import os

    import tensorflow as tf

    from train_job.data.dataset import decoded_images

    fifo = tmp_path / "SOB_B_A-22-99999-40-001.png"
    os.mkfifo(fifo)
    with pytest.raises(tf.errors.OpError, match="FIFO"):
        list(decoded_images([str(fifo)], 32))
    size = os.path.getsize(image_paths[0])
    with pytest.raises(tf.errors.OpError, match="read cap"):
        list(decoded_images([image_paths[0]], 32, max_bytes=size - 1))
    assert len(list(decoded_images([image_paths[0]], 32, max_bytes=size))) == 1


def test_training_and_evaluation_datasets_run_without_the_autotuning_thread(image_paths):
    # Its thread can make deleting an iterator (the end of every fit) wait for seconds.
    labels = [index % 2 for index in range(len(image_paths))]
    assert _stream(image_paths).epochs(0, 2).options().autotune.enabled is False
    evaluation = evaluation_dataset(image_paths, labels, 32, 4)
    assert evaluation.options().autotune.enabled is False


def test_the_evaluation_cache_is_filled_whole_when_the_dataset_is_made(image_paths, monkeypatch):
    from train_job.data import dataset as dataset_module

    decoded = []
    real = dataset_module.load_image

    def counting(data, image_size):
        decoded.append(image_size)
        return real(data, image_size)

    monkeypatch.setattr(dataset_module, "load_image", counting)
    evaluation = evaluation_dataset(image_paths, [0, 1] * 3, 32, 4)
    assert len(decoded) == len(image_paths)  # every image, before any consumer reads a batch
    iterator = iter(evaluation)
    next(iterator)
    del iterator  # a pass stopped after its first batch, as Keras' peek does
    for _ in range(2):
        assert sum(int(images.shape[0]) for images, _ in evaluation) == len(image_paths)
    assert len(decoded) == len(image_paths)  # read from the cache ever after


def test_stain_jitter_depends_only_on_seed_epoch_and_image(image_paths):
    # Colour alone (no geometry), so the jittered images compare pixel for pixel with the plain.
    def stream(seed, strength=0.1, cache=True):
        return _stream(image_paths, seed=seed, augment=False, stain_jitter=strength, cache=cache)

    plain = _batches(stream(5, strength=0.0).epochs(0, 3))
    straight = _batches(stream(5).epochs(0, 3))
    resumed = _batches(stream(5, cache=False).epochs(2, 3))
    np.testing.assert_array_equal(resumed[0], straight[2])  # a resumed epoch: the same colours
    for jittered, original in zip(straight, plain, strict=True):
        assert all(not np.allclose(j, o, atol=1.0) for j, o in zip(jittered, original, strict=True))
    # Another epoch or another seed: other colours for the same image at the same place.
    epoch_1_again = _batches(stream(5).epochs(1, 2))[0]
    np.testing.assert_array_equal(epoch_1_again, straight[1])
    other_seed = _batches(stream(6).epochs(0, 1))[0]
    other_seed_plain = _batches(stream(6, strength=0.0).epochs(0, 1))[0]
    same_image = [np.argmin([np.abs(o - p).sum() for p in plain[0]]) for o in other_seed_plain]
    assert all(
        not np.allclose(other_seed[i], straight[0][j], atol=1.0) for i, j in enumerate(same_image)
    )


def test_stain_jitter_is_the_model_stain_function_at_the_images_seed(image_paths):
    # Pins the seeding: an image's colours come from model.image.stain at (seed, epoch, its index).
    import tensorflow as tf

    from model.image.preprocessing import load_image, normalize
    from model.image.stain import stain_jitter
    from train_job.data.dataset import element_seed, stain_seed

    labels = [0, 1] * 3
    stream = training_stream(image_paths, labels, 32, 6, seed=3, augment=False, stain_jitter=0.2)
    batch = _batches(stream.epochs(4, 5))[0]
    expected = []
    for index, path in enumerate(image_paths):
        image = tf.constant(load_image(open(path, "rb").read(), 32), tf.float32)
        jittered = stain_jitter(image, 0.2, stain_seed(element_seed(3, 4, index)))
        expected.append(normalize(jittered).numpy())
    matched = [min(range(6), key=lambda i: np.abs(got - expected[i]).max()) for got in batch]
    assert sorted(matched) == list(range(6))
    for got, index in zip(batch, matched, strict=True):
        np.testing.assert_allclose(got, expected[index], atol=1e-3)


def test_stain_jitter_joins_the_geometric_views_and_leaves_evaluation_alone(image_paths):
    geometric = _batches(_stream(image_paths, seed=5).epochs(0, 1))[0]
    both = _batches(_stream(image_paths, seed=5, stain_jitter=0.1).epochs(0, 1))[0]
    assert all(not np.allclose(a, b, atol=1.0) for a, b in zip(both, geometric, strict=True))
    evaluation = next(iter(evaluation_dataset(image_paths, [0, 1] * 3, 32, 6)))[0].numpy()
    expected = np.stack([preprocess_image(open(p, "rb").read(), 32) for p in image_paths])
    np.testing.assert_array_equal(evaluation, expected)
