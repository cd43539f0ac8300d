"""A job killed anywhere and rerun trains exactly what an uninterrupted job trains."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from model.network.model_card import load_exported_model, read_model_card
from model.reports.plots import training_curves_png
from tests.train_job.test_train import SHARED_RUN, tiny_config
from train_job.run_state.checkpoint import Checkpoints
from train_job.train import train

# End to end: the slow tier (bash scripts/test.sh --slow).
pytestmark = pytest.mark.slow


class Killed(RuntimeError):
    """What the test callbacks raise in place of a SIGKILL."""


class KillAfterEpochs(keras.callbacks.Callback):
    """Raise once `epochs` epochs have ended (counted across phases), after their checkpoint."""

    def __init__(self, epochs: int):
        super().__init__()
        self.remaining = epochs

    def on_epoch_end(self, epoch, logs=None):
        self.remaining -= 1
        if self.remaining == 0:
            raise Killed(f"killed after epoch {epoch + 1}")


class KillAtPhase2(keras.callbacks.Callback):
    """Raise when the second fit starts: phase 1 is finished, phase 2 has not trained."""

    def __init__(self):
        super().__init__()
        self.fits = 0

    def on_train_begin(self, logs=None):
        self.fits += 1
        if self.fits == 2:
            raise Killed("killed between the phases")


def exported_weights(output_dir) -> list[np.ndarray]:
    model, _ = load_exported_model(str(output_dir))
    return model.get_weights()


def test_the_shared_run_stops_phase_1_early(trained):
    result, _ = trained
    # Otherwise the early-stopping part of the resume test would prove nothing.
    assert result.epochs_run["phase1"] < SHARED_RUN["epochs"]
    assert result.epochs_run["phase2"] == SHARED_RUN["fine_tune_epochs"]


def test_a_run_killed_in_each_phase_ends_as_an_uninterrupted_run(
    synthetic_data_dir, tmp_path, trained
):
    reference, reference_dir = trained
    phase1_epochs = reference.epochs_run["phase1"]
    config = tiny_config(synthetic_data_dir, tmp_path, **SHARED_RUN)
    checkpoints = Checkpoints(str(tmp_path))

    def run_until_killed(killer) -> None:
        with pytest.raises(Killed):
            train(config, callbacks=[killer])
        assert not (tmp_path / "model_card.json").exists()

    # Killed in phase 1, after its first epoch; phase 1 would go on (or stop early) from there.
    run_until_killed(KillAfterEpochs(1))
    state = checkpoints.load()
    assert (state.phase, state.epochs_done) == ("phase1", 1)
    assert state.early_stopping["best_epoch"] == 0

    # Resumed, then killed between the phases: phase 1 ran only its remaining epochs.
    run_until_killed(KillAtPhase2())
    state = checkpoints.load()
    assert (state.phase, state.epochs_done) == ("phase2", 0)
    assert len(state.history["phase1"]["loss"]) == phase1_epochs
    phase1_variables = state.model_variables

    # Resumed, then killed in phase 2 after its first epoch. Flags that cannot change the
    # result (caching, the file size cap) may differ on resume.
    with pytest.raises(Killed):
        train(
            tiny_config(synthetic_data_dir, tmp_path, **SHARED_RUN, cache=False, max_file_mb=50),
            callbacks=[KillAfterEpochs(1)],
        )
    assert (checkpoints.load().phase, checkpoints.load().epochs_done) == ("phase2", 1)

    # Resumed to the end: the last phase-2 epoch only, and everything matches the reference.
    resumed = train(config)
    assert resumed.epochs_run == {"phase1": 0, "phase2": SHARED_RUN["fine_tune_epochs"] - 1}
    assert resumed.history.keys() == reference.history.keys()
    assert resumed.history["phase_boundary"] == reference.history["phase_boundary"]
    for key, values in reference.history.items():
        if key != "phase_boundary":
            np.testing.assert_allclose(resumed.history[key], values, rtol=1e-5, err_msg=key)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved == resumed.history
    curves = (tmp_path / "plots" / "training_curves.png").read_bytes()
    assert curves == training_curves_png(saved)  # drawn from every epoch, not the last run's
    weights = exported_weights(tmp_path)
    for got, expected in zip(weights, exported_weights(reference_dir), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Calibration runs after the last fit, on the resumed weights: the same temperature.
    resumed_card, reference_card = (
        read_model_card(str(tmp_path)),
        read_model_card(str(reference_dir)),
    )
    assert resumed_card.calibration["fitted"] == reference_card.calibration["fitted"]
    assert resumed_card.temperature == pytest.approx(reference_card.temperature, rel=1e-4)
    assert not (tmp_path / "checkpoints").exists()

    # Phase 2 trained: block5 (unfrozen in phase 2 only) moved away from phase 1's values.
    model, _ = load_exported_model(str(tmp_path))
    paths = [variable.path for variable in model.variables]
    phase1_values = dict(zip(paths, phase1_variables, strict=True))
    kernel = model.get_layer("block5_conv1").kernel
    assert not np.allclose(kernel.numpy(), phase1_values[kernel.path])
