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

    monkeypatch.setattr("train_job.data.measure_image", refuse)
    monkeypatch.setattr("train_job.dataset.load_image", refuse)
