"""One declaration per flag: TrainConfig, the parser and the resume check agree."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from tests.train_job.test_train import REPO_ROOT
from train_job import main as train_main
from train_job.config import (
    FROM_SCRATCH_LEARNING_RATE,
    PRETRAINED_LEARNING_RATE,
    RESULT_FLAGS,
    TrainConfig,
    differing_settings,
    normalized,
    result_settings,
)

FIELDS = [field.name for field in dataclasses.fields(TrainConfig)]


def test_defaults_from_the_command_line_are_the_configs_defaults():
    config, args = train_main.parse_args(["--data_dir", "d", "--output_dir", "o"])
    assert config == TrainConfig(data_dir="d", output_dir="o")
    assert not args.restart and not args.verbose


def test_every_field_is_a_flag_and_negated_booleans_read_naturally():
    argv = ["--data_dir", "d", "--output_dir", "o", "--no_cache", "--no_augment"]
    argv += ["--mixed_precision", "--magnifications", "40X", "200X", "--steps_per_epoch", "3"]
    argv += ["--max_file_mb", "1.5", "--fine_tune_from", "block3", "--seed", "7"]
    config, _ = train_main.parse_args(argv)
    assert not config.cache and not config.augment and config.mixed_precision
    assert config.magnifications == ("40X", "200X") and config.steps_per_epoch == 3
    assert config.max_file_mb == 1.5 and config.fine_tune_from == "block3" and config.seed == 7


def test_help_lists_every_flag_with_its_default():
    completed = subprocess.run(
        [sys.executable, "train_job/main.py", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert completed.returncode == 0
    text = " ".join(completed.stdout.split())  # argparse wraps help lines
    for name in FIELDS:
        flag = f"--no_{name}" if name in ("cache", "augment") else f"--{name}"
        assert flag in text, flag
    for flag in ("--restart", "--verbose"):
        assert flag in text
    assert "(default: 128)" in text and "(default: 256.0)" in text  # image size, max file MB
    assert "stop_after" not in text


def test_only_flags_that_cannot_change_the_result_may_change_on_resume():
    assert set(FIELDS) - set(RESULT_FLAGS) == {"output_dir", "cache", "max_file_mb"}


def test_differing_settings_name_each_changed_flag(tmp_path):
    first = normalized(TrainConfig(str(tmp_path), str(tmp_path / "o"), seed=42))
    recorded = result_settings(first)
    same = dataclasses.replace(first, cache=False, max_file_mb=1.0, output_dir="elsewhere")
    assert differing_settings(recorded, same) == []
    changed = dataclasses.replace(first, seed=0, magnifications=("40X",), epochs=3)
    assert differing_settings(recorded, changed) == [
        "--magnifications 40X 100X 200X 400X -> 40X",
        "--epochs 10 -> 3",
        "--seed 42 -> 0",
    ]


def test_the_same_settings_written_differently_compare_equal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    written = TrainConfig("data", "out", magnifications=("100X", "40X", "40X"), weights="ImageNet")
    plain = TrainConfig(str(tmp_path / "data"), "out", magnifications=("40X", "100X"))
    assert result_settings(normalized(written)) == result_settings(normalized(plain))


def test_an_unset_learning_rate_is_lower_from_scratch_and_a_given_one_is_kept(tmp_path):
    def phase1_rate(**flags) -> float:
        return normalized(TrainConfig(str(tmp_path), str(tmp_path / "o"), **flags)).learning_rate

    assert phase1_rate() == PRETRAINED_LEARNING_RATE == 1e-3
    assert phase1_rate(weights="None ") == FROM_SCRATCH_LEARNING_RATE == 1e-4
    assert phase1_rate(weights=str(tmp_path / "base.weights.h5")) == PRETRAINED_LEARNING_RATE
    assert phase1_rate(weights="none", learning_rate=3e-4) == 3e-4
    # Resolved before the resume check: a from-scratch rerun without the flag matches its run.
    recorded = result_settings(normalized(TrainConfig(str(tmp_path), "o", weights="none")))
    assert recorded["learning_rate"] == 1e-4
    rerun = normalized(TrainConfig(str(tmp_path), "o", weights="none", learning_rate=1e-3))
    assert differing_settings(recorded, rerun) == ["--learning_rate 0.0001 -> 0.001"]
