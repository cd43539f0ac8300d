"""Fixtures of the training tests: one finished tiny training shared by the read-only tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trained(synthetic_data_dir, tmp_path_factory):
    """One training run whose export the tests read (and never change); (result, folder)."""
    from tests.train_job.test_train import SHARED_RUN, tiny_config
    from train_job.train import train

    output_dir = tmp_path_factory.mktemp("export")
    result = train(tiny_config(synthetic_data_dir, output_dir, **SHARED_RUN))
    return result, output_dir


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if anything decodes an image (launch checks must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded before the launch checks finished")

    monkeypatch.setattr("train_job.data.discovery.measure_image", refuse)
    monkeypatch.setattr("train_job.data.dataset.load_image", refuse)


CV_FOLDS = 3


def cv_argv(data_dir, output_dir, **overrides) -> list[str]:
    """The one cross-validation command of the tests: 3 folds, one epoch in each phase."""
    values = {
        "data_dir": str(data_dir),
        "output_dir": str(output_dir),
        "folds": str(CV_FOLDS),
        "image_size": "32",
        "weights": "none",
        "batch_size": "8",
        "dense_units": "16",
        "epochs": "1",
        "fine_tune_epochs": "1",
        "fine_tune_from": "block5",
        "val_fraction": "0.2",
        "seed": "1",
    }
    values.update({name: str(value) for name, value in overrides.items()})
    return [item for name, value in values.items() for item in (f"--{name}", value)]


@pytest.fixture(scope="session")
def cv_run(synthetic_data_dir, tmp_path_factory):
    """One finished cross-validation by the one command (read-only for the tests): its folder."""
    from train_job import main as train_main

    output_dir = tmp_path_factory.mktemp("cv")
    assert train_main.main(cv_argv(synthetic_data_dir, output_dir)) == 0
    return output_dir
