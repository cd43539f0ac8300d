"""Every flag and location is checked before any image is decoded: exit 2, one `error:` line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.train_job.test_train import REPO_ROOT
from train_job import main as train_main
from train_job.launch_checks import VGG16_BLOCKS, LaunchError, check_flags
from train_job.train import train


def run_main(argv, capsys) -> tuple[int, str]:
    code = train_main.main(argv)
    return code, capsys.readouterr().err


def base_argv(data_dir, output_dir) -> list[str]:
    return [
        "--data_dir",
        str(data_dir),
        "--output_dir",
        str(output_dir),
        "--weights",
        "none",
        "--image_size",
        "32",
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fine_tune_from", "block9"], "--fine_tune_from must be one of block1"),
        (["--fine_tune_from", "conv4"], "--fine_tune_from must be one of block1"),
        (["--weights", "imagenett"], "--weights must be imagenet, none or a Keras"),
        (["--folds", "5", "--fold", "5"], "--fold must be in [0, 4] for --folds 5, got 5"),
        (["--folds", "5", "--fold", "-1"], "--fold must be in [0, 4]"),
        (["--folds", "1"], "--folds must be 0 (one split) or at least 2"),
        (["--fold", "2"], "--fold 2 needs --folds"),
        (["--val_fraction", "0"], "--val_fraction must be in (0, 1), got 0.0"),
        (["--test_fraction", "1.5"], "--test_fraction must be in (0, 1)"),
        (["--val_fraction", "0.5", "--test_fraction", "0.5"], "must be below 1"),
        (["--image_size", "16"], "--image_size must be in [32, 512], got 16"),
        (["--image_size", "1024"], "--image_size must be in [32, 512], got 1024"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--fine_tune_epochs", "-1"], "--fine_tune_epochs must be at least 0"),
        (["--batch_size", "0"], "--batch_size must be at least 1"),
        (["--patience", "0"], "--patience must be at least 1"),
        (["--learning_rate", "0"], "--learning_rate must be above 0"),
        (["--fine_tune_learning_rate=-1e-5"], "--fine_tune_learning_rate must be above 0"),
        (["--dropout", "1"], "--dropout must be in [0, 1)"),
        (["--dense_units", "0"], "--dense_units must be at least 1"),
        (["--steps_per_epoch", "0"], "--steps_per_epoch must be at least 1"),
        (["--max_file_mb", "0"], "--max_file_mb must be above 0"),
        (["--calibration", "platt"], "--calibration must be one of temperature, none, got 'platt'"),
        (["--stain_jitter", "1"], "--stain_jitter must be in [0, 1), got 1.0"),
        (["--stain_jitter=-0.05"], "--stain_jitter must be in [0, 1), got -0.05"),
        (["--stain_jitter", "nan"], "--stain_jitter must be in [0, 1), got nan"),
        (["--eval_tta", "3"], "--eval_tta must be one of 1, 2, 4, 8, got 3"),
        (["--eval_tta", "0"], "--eval_tta must be one of 1, 2, 4, 8, got 0"),
    ],
)
def test_a_bad_flag_stops_the_job_with_one_line(
    flags, message, synthetic_data_dir, tmp_path, capsys, no_decoding
):
    code, stderr = run_main([*base_argv(synthetic_data_dir, tmp_path), *flags], capsys)
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr


def test_several_bad_flags_are_named_together(tmp_path):
    from train_job.config import TrainConfig

    config = TrainConfig(str(tmp_path), str(tmp_path / "out"), epochs=0, dropout=2.0)
    with pytest.raises(LaunchError, match=r"--epochs .*; --dropout"):
        check_flags(config)


def test_train_itself_refuses_a_bad_block_before_phase_1(synthetic_data_dir, tmp_path):
    # Library callers get the same checks: before, a typo failed after phase 1 had trained.
    from tests.train_job.test_train import tiny_config

    with pytest.raises(LaunchError, match="--fine_tune_from"):
        train(tiny_config(synthetic_data_dir, tmp_path, fine_tune_from="block_4"))
    assert not os.listdir(tmp_path)


def test_the_fine_tune_blocks_are_the_models_blocks():
    from model.network.architecture import build_classifier, conv_block_names

    assert tuple(conv_block_names(build_classifier(32, "none", 8))) == VGG16_BLOCKS


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing", "does not exist or is not a folder"),
        ("no_images", "holds no BreakHis-named image"),
        ("wrong_magnification", "holds no BreakHis-named image"),
        ("weights_file", "--weights file"),
        ("output_is_a_file", "is a file, not a folder"),
        ("output_is_data", "overlaps --data_dir"),
        ("output_inside_data", "overlaps --data_dir"),
        ("data_inside_output", "overlaps --data_dir"),
    ],
)
def test_a_bad_location_stops_the_job_with_one_line(
    where, message, synthetic_data_dir, tmp_path, capsys, no_decoding
):
    data_dir, output_dir, extra = synthetic_data_dir, tmp_path / "out", []
    if where == "missing":
        data_dir = tmp_path / "nowhere"
    elif where == "no_images":
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / "scan_001.png").write_bytes(b"x")
        (data_dir / "notes.txt").write_text("no images here")
    elif where == "wrong_magnification":
        extra = ["--magnifications", "400X"]  # the synthetic set has 40X and 100X
    elif where == "weights_file":
        extra = ["--weights", str(tmp_path / "vgg16_notop.h5")]
    elif where == "output_is_a_file":
        output_dir.write_text("a file")
    elif where == "output_is_data":
        output_dir = data_dir
    elif where == "output_inside_data":
        output_dir = data_dir / "export"
    elif where == "data_inside_output":
        data_dir = tmp_path / "data"
        shutil.copytree(synthetic_data_dir, data_dir)
        output_dir = tmp_path
    code, stderr = run_main([*base_argv(data_dir, output_dir), *extra], capsys)
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr, stderr
    assert stderr.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_output_dir_stops_the_job(synthetic_data_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    code, stderr = run_main(base_argv(synthetic_data_dir, locked / "out"), capsys)
    assert code == 2 and "--output_dir" in stderr and "cannot be created" in stderr


def test_an_unwritable_output_dir_on_a_read_only_path_stops_the_job(synthetic_data_dir, capsys):
    # /proc is read-only even for root.
    code, stderr = run_main(base_argv(synthetic_data_dir, "/proc/breakhis-out"), capsys)
    assert code == 2 and stderr.startswith("error: --output_dir /proc/breakhis-out")


def test_the_command_line_reports_a_launch_error_without_a_traceback(tmp_path):
    (tmp_path / "data").mkdir()  # no BreakHis image in it
    completed = subprocess.run(
        [sys.executable, "train_job/main.py", *base_argv(tmp_path / "data", tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: --data_dir") and "no BreakHis-named" in (
        completed.stderr
    )
    assert completed.stderr.count("\n") == 1
