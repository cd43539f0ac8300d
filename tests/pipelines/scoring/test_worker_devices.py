"""GPU-ready workers: memory growth before the model loads, and models shared by processes."""

from __future__ import annotations

import logging
import os

import pytest
import tensorflow as tf

from pipelines.scoring import model_handler, worker_devices
from pipelines.scoring.keyed_handler import keyed_scoring_handler
from pipelines.scoring.model_handler import GradCamModelHandler
from tests.pipelines.conftest import IMAGE_SIZE, mixed_inputs_argv, run_scoring
from tests.pipelines.helpers import prediction_rows

GPUS = [
    tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
    tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU"),
]


def _fake_gpus(monkeypatch, refuse: str | None = None) -> list[tuple[str, bool]]:
    """Two visible GPUs; returns the memory-growth calls, refusing `refuse` as TF does once
    its devices are initialised."""
    calls = []

    def set_memory_growth(device, enable):
        if device.name == refuse:
            raise RuntimeError("Physical devices cannot be modified after being initialized")
        calls.append((device.name, enable))

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: list(GPUS))
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", set_memory_growth)
    return calls


def test_memory_growth_is_turned_on_for_every_visible_gpu(monkeypatch):
    calls = _fake_gpus(monkeypatch)
    assert worker_devices.enable_gpu_memory_growth() == [gpu.name for gpu in GPUS]
    assert calls == [(gpu.name, True) for gpu in GPUS]


def test_a_gpu_tensorflow_already_initialised_keeps_its_settings_with_a_warning(
    monkeypatch, caplog
):
    calls = _fake_gpus(monkeypatch, refuse=GPUS[0].name)
    with caplog.at_level(logging.WARNING, logger=worker_devices.__name__):
        assert worker_devices.enable_gpu_memory_growth() == [GPUS[1].name]
    assert calls == [(GPUS[1].name, True)]
    assert f"GPU {GPUS[0].name} keeps its memory settings" in caplog.text


def test_without_a_gpu_nothing_changes_even_after_tensorflow_started():
    tf.constant(1.0) + 1.0  # TensorFlow's devices are initialised in this process
    assert tf.config.list_physical_devices("GPU") == []  # this machine has none
    assert worker_devices.enable_gpu_memory_growth() == []
    assert worker_devices.enable_gpu_memory_growth() == []  # and again: still safe


def test_the_handler_turns_memory_growth_on_before_it_loads_the_model(monkeypatch, tiny_export):
    from model.network import model_card

    events = []
    real_load = model_card.load_exported_model
    monkeypatch.setattr(
        model_handler, "enable_gpu_memory_growth", lambda: events.append("memory growth")
    )
    monkeypatch.setattr(
        model_card,
        "load_exported_model",
        lambda model_dir: events.append("load") or real_load(model_dir),
    )
    GradCamModelHandler(tiny_export).load_model()
    assert events == ["memory growth", "load"]


def test_model_copies_ask_beam_to_share_the_models_across_processes():
    default = keyed_scoring_handler("unused", IMAGE_SIZE, 0.5, heatmap_dir="unused")
    assert not default.share_model_across_processes()  # one model per worker process
    for copies in (1, 2):
        shared = keyed_scoring_handler(
            "unused", IMAGE_SIZE, 0.5, heatmap_dir="unused", model_copies=copies
        )
        assert shared.share_model_across_processes() and shared.model_copies() == copies


@pytest.mark.slow
def test_a_run_with_a_shared_model_copy_scores_exactly_as_one_model_per_process(
    tmp_path, scoring_inputs, tiny_export, in_memory_run, caplog
):
    output_dir = tmp_path / "out"
    caplog.set_level(logging.INFO)
    run_scoring(mixed_inputs_argv(scoring_inputs, tiny_export, output_dir, "--model_copies", "1"))
    # The model was served by Beam's shared-object server and reached through its proxy.
    assert "Starting proxy server at" in caplog.text
    expected = {row["image_path"]: row for row in prediction_rows(str(in_memory_run.output_dir))}
    rows = {row["image_path"]: row for row in prediction_rows(str(output_dir))}
    assert set(rows) == set(expected)
    for path, row in rows.items():
        other = expected[path]
        assert {**row, "heatmap_path": ""} == {**other, "heatmap_path": ""}
        assert os.path.basename(row["heatmap_path"]) == os.path.basename(other["heatmap_path"])
        with open(row["heatmap_path"], "rb") as mine, open(other["heatmap_path"], "rb") as theirs:
            assert mine.read() == theirs.read()
