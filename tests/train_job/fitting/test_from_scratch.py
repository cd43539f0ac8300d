"""--weights none trains every layer from the first epoch; a weights file keeps phase 1 frozen."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.network.architecture import build_classifier
from model.network.model_card import read_model_card
from tests.train_job.test_train import tiny_config
from train_job.config import FROM_SCRATCH_LEARNING_RATE
from train_job.fitting.fit import plan_phases
from train_job.train import train

WATCHED = ("block1_conv1", "block5_conv1")


class KernelsPerFit(keras.callbacks.Callback):
    """The watched layers' kernels at the start and the end of every fit (one fit per phase)."""

    def __init__(self):
        super().__init__()
        self.fits: list[dict[str, dict[str, np.ndarray]]] = []

    def _kernels(self) -> dict[str, np.ndarray]:
        return {name: self.model.get_layer(name).kernel.numpy().copy() for name in WATCHED}

    def on_train_begin(self, logs=None):
        self.fits.append({"begin": self._kernels()})

    def on_train_end(self, logs=None):
        self.fits[-1]["end"] = self._kernels()

    def changed(self, fit: int, layer: str) -> bool:
        return not np.array_equal(self.fits[fit]["begin"][layer], self.fits[fit]["end"][layer])


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A VGG16 no-top weights file (random values: what matters is that it is loaded)."""
    path = tmp_path_factory.mktemp("weights") / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(
        str(path)
    )
    return path


@pytest.mark.slow
def test_from_scratch_the_first_phase_trains_every_layer(synthetic_data_dir, tmp_path, caplog):
    kernels = KernelsPerFit()
    config = tiny_config(synthetic_data_dir, tmp_path, epochs=1, fine_tune_epochs=1)
    with caplog.at_level("INFO", logger="train_job.fitting.fit"):
        train(config, callbacks=[kernels])
    assert len(kernels.fits) == 2
    assert kernels.changed(0, "block1_conv1") and kernels.changed(0, "block5_conv1")
    # Phase 2 goes on with every layer (at the lower rate), not only from --fine_tune_from.
    assert kernels.changed(1, "block1_conv1")
    assert "--weights none: training from scratch, so every layer" in caplog.text
    training_config = read_model_card(str(tmp_path)).training_config
    assert training_config["from_scratch"] is True
    assert [(p["name"], p["trains"], p["learning_rate"]) for p in training_config["phases"]] == [
        ("phase1", "every layer", FROM_SCRATCH_LEARNING_RATE),
        ("phase2", "every layer", config.fine_tune_learning_rate),
    ]


@pytest.mark.slow
def test_with_a_weights_file_phase_1_leaves_the_base_frozen(
    synthetic_data_dir, tmp_path, weights_file
):
    kernels = KernelsPerFit()
    config = tiny_config(
        synthetic_data_dir, tmp_path, weights=str(weights_file), epochs=1, fine_tune_epochs=1
    )
    train(config, callbacks=[kernels])
    loaded = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    loaded.load_weights(str(weights_file))
    np.testing.assert_array_equal(
        kernels.fits[0]["begin"]["block1_conv1"], loaded.get_layer("block1_conv1").kernel.numpy()
    )
    assert not kernels.changed(0, "block1_conv1") and not kernels.changed(0, "block5_conv1")
    # Phase 2 fine-tunes from --fine_tune_from block5 only, as before.
    assert kernels.changed(1, "block5_conv1") and not kernels.changed(1, "block1_conv1")
    training_config = read_model_card(str(tmp_path)).training_config
    assert training_config["from_scratch"] is False
    assert [p["trains"] for p in training_config["phases"]] == [
        "the head only (VGG16 base frozen)",
        "the head and the VGG16 base from block5",
    ]


@pytest.mark.parametrize(
    ("weights", "fine_tune_from", "fine_tune_epochs", "expected"),
    [
        ("none", "block4", 3, [("phase1", "block1"), ("phase2", "block1")]),
        ("none", "none", 3, [("phase1", "block1")]),
        ("none", "block4", 0, [("phase1", "block1")]),
        ("imagenet", "block4", 3, [("phase1", None), ("phase2", "block4")]),
        ("imagenet", "none", 3, [("phase1", None)]),
    ],
)
def test_the_phase_plan(weights, fine_tune_from, fine_tune_epochs, expected, tmp_path):
    config = tiny_config(
        tmp_path,
        tmp_path / "out",
        weights=weights,
        fine_tune_from=fine_tune_from,
        fine_tune_epochs=fine_tune_epochs,
    )
    assert [(phase.name, phase.first_block) for phase in plan_phases(config)] == expected


def test_every_base_layer_is_trainable_from_block1():
    from train_job.fitting.fit import _set_trainable_from

    model = build_classifier(32, "none", dense_units=4)
    _set_trainable_from(model, "block1")
    assert all(layer.trainable for layer in model.layers if layer.weights)
