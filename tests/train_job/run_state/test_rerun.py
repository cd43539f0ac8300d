"""Reruns into a folder that holds an earlier run: resume, skip, refuse or restart."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys

import keras
import pytest

from model.network.model_card import read_model_card
from tests.train_job.run_state.test_resume import KillAfterEpochs, Killed
from tests.train_job.test_train import REPO_ROOT, tiny_config
from train_job import main as train_main
from train_job.config import TrainConfig
from train_job.export.files import is_export_file
from train_job.run_state.checkpoint import Checkpoints
from train_job.train import train


def cli_argv(config: TrainConfig) -> list[str]:
    """The command line that gives this config."""
    argv = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if isinstance(value, bool):
            if value != field.default:
                argv.append(f"--no_{field.name}" if field.default else f"--{field.name}")
        elif isinstance(value, tuple):
            argv += [f"--{field.name}", *value]
        elif value is not None:
            argv += [f"--{field.name}", str(value)]
    return argv


def config_of(card) -> TrainConfig:
    """The TrainConfig an export's card records."""
    values = {name: card.training_config[name] for name in TrainConfig.__dataclass_fields__}
    return TrainConfig(**{**values, "magnifications": tuple(values["magnifications"])})


@pytest.fixture(scope="module")
def killed_run(synthetic_data_dir, tmp_path_factory):
    """A run killed after its first epoch, on its own copy of the data: (config, state)."""
    root = tmp_path_factory.mktemp("killed")
    shutil.copytree(synthetic_data_dir, root / "data")
    config = tiny_config(root / "data", root / "out", epochs=2, fine_tune_epochs=1)
    with pytest.raises(Killed):
        train(config, callbacks=[KillAfterEpochs(1)])
    return config, Checkpoints(config.output_dir).load()


def _state_unchanged(config, before) -> bool:
    after = Checkpoints(config.output_dir).load()
    return (after.phase, after.epochs_done, after.history) == (
        before.phase,
        before.epochs_done,
        before.history,
    )


def test_a_resume_with_other_result_flags_stops_before_any_work(
    killed_run,
    capsys,
    no_decoding,
):
    config, state = killed_run
    changed = dataclasses.replace(config, seed=0, epochs=3)
    code = train_main.main(cli_argv(changed))
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1
    assert stderr.startswith(f"error: --output_dir {config.output_dir} holds checkpoints")
    assert "--epochs 2 -> 3" in stderr and "--seed 1 -> 0" in stderr and "--restart" in stderr
    assert _state_unchanged(config, state)


def test_a_resume_with_another_calibration_is_refused_like_other_result_flags(
    killed_run, capsys, no_decoding
):
    config, state = killed_run
    code = train_main.main(cli_argv(dataclasses.replace(config, calibration="none")))
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1
    assert "holds checkpoints" in stderr and "--calibration temperature -> none" in stderr


def test_a_resume_with_other_test_time_views_is_refused(killed_run, capsys, no_decoding):
    # The threshold is chosen on p from --eval_tta views: changing them changes the result.
    config, state = killed_run
    code = train_main.main(cli_argv(dataclasses.replace(config, eval_tta=4)))
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1
    assert "--eval_tta 1 -> 4" in stderr and "--restart" in stderr
    assert _state_unchanged(config, state)


def test_a_resume_with_another_stain_jitter_is_refused(killed_run, capsys, no_decoding):
    # The jitter changes every training batch; --stain_jitter 0 turns it off, also a change.
    config, state = killed_run
    for strength, shown in ((0.1, "0.1"), (0.0, "0.0")):
        code = train_main.main(cli_argv(dataclasses.replace(config, stain_jitter=strength)))
        stderr = capsys.readouterr().err
        assert code == 2 and stderr.count("\n") == 1
        assert f"--stain_jitter {config.stain_jitter} -> {shown}" in stderr
        assert "holds checkpoints" in stderr and "--restart" in stderr
    assert _state_unchanged(config, state)


def test_a_resume_on_changed_data_is_refused(killed_run, capsys):
    config, state = killed_run
    folder = _a_folder_with_images(config.data_dir)
    image = sorted(os.listdir(folder))[0]
    moved = os.path.join(os.path.dirname(config.data_dir), image)
    shutil.move(os.path.join(folder, image), moved)  # one image less under the same flags
    try:
        code = train_main.main(cli_argv(config))
    finally:
        shutil.move(moved, os.path.join(folder, image))
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1
    assert "the data under --data_dir changed" in stderr
    assert "0 images added, 1 removed or unreadable" in stderr and "--restart" in stderr
    assert _state_unchanged(config, state)


def _a_folder_with_images(data_dir: str) -> str:
    for folder, _, names in sorted(os.walk(data_dir)):
        if any(name.endswith(".png") for name in names):
            return folder
    raise AssertionError("no images")


def test_a_complete_export_rerun_with_its_flags_does_nothing_quietly(trained):
    _, output_dir = trained
    config = config_of(read_model_card(str(output_dir)))
    before = {p: p.stat().st_mtime_ns for p in output_dir.rglob("*") if p.is_file()}
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run(
        [sys.executable, "train_job/main.py", *cli_argv(config)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=environment,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "already holds a complete export made with these flags" in completed.stderr
    assert "epoch" not in completed.stderr
    after = {p: p.stat().st_mtime_ns for p in output_dir.rglob("*") if p.is_file()}
    assert after == before
    # TensorFlow's start-up banner (absl, oneDNN, CUDA lines) stays out of the way.
    for noise in ("absl::InitializeLog", "oneDNN", "cuda", "I0000", "E0000"):
        assert noise not in completed.stderr, noise
    assert all(" INFO " in line or " WARNING " in line for line in completed.stderr.splitlines())


def test_a_complete_export_rerun_with_other_flags_is_refused(trained, capsys):
    _, output_dir = trained
    card = read_model_card(str(output_dir))
    code = train_main.main(cli_argv(dataclasses.replace(config_of(card), dropout=0.25)))
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1
    assert "holds a complete export made with other settings (--dropout 0.5 -> 0.25)" in stderr
    assert "--restart" in stderr
    assert read_model_card(str(output_dir)).model_id == card.model_id
    code = train_main.main(cli_argv(dataclasses.replace(config_of(card), calibration="none")))
    stderr = capsys.readouterr().err
    assert code == 2 and "(--calibration temperature -> none)" in stderr
    assert read_model_card(str(output_dir)).model_id == card.model_id


class ExpectGone(keras.callbacks.Callback):
    """Fail training if any of the given files still exists when it begins."""

    def __init__(self, paths):
        super().__init__()
        self.paths = paths

    def on_train_begin(self, logs=None):
        left = [path for path in self.paths if path.exists()]
        if left:
            raise AssertionError(f"still there when training began: {left}")


def _files(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_the_card_lists_every_file_the_run_wrote(trained):
    _, output_dir = trained
    card = read_model_card(str(output_dir))
    assert set(card.export_files) == _files(output_dir) - {"model_card.json"}
    assert {"model.keras", "metrics.json", "report.html", "split.csv"} <= set(card.export_files)
    assert any(name.startswith("logs/phase1/") for name in card.export_files)
    assert any(name.startswith("saved_model/") for name in card.export_files)
    assert not any(name.startswith("checkpoints/") for name in card.export_files)


@pytest.mark.slow
def test_restart_deletes_exactly_the_export_and_trains_from_scratch(trained, tmp_path, caplog):
    _, exported = trained
    output_dir = tmp_path / "out"
    shutil.copytree(exported, output_dir)
    ours = _files(output_dir)
    assert all(is_export_file(path) for path in ours)
    user_files = ["notes.txt", "plots/mine.png", "report_assets/keep.txt", "logs/other/run.log"]
    user_files += ["saved_model_backup/model.keras", "report_assets/000_overlay.png.txt"]
    # Named like the job's own files, which the file-name rule would delete:
    lookalikes = ["logs/phase1/notes.txt", "report_assets/999_overlay.png", "saved_model/x.txt"]
    for name in user_files + lookalikes:
        (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (output_dir / name).write_text(f"the user's {name}")
    old_card = read_model_card(str(output_dir))
    config = dataclasses.replace(config_of(old_card), output_dir=str(output_dir), seed=5)
    gone = ExpectGone([output_dir / path for path in ours])
    with caplog.at_level(logging.INFO, logger="train_job.run_state"):
        result = train(config, restart=True, callbacks=[gone])
    said = [record.getMessage() for record in caplog.records]
    deleting = f"--restart: deleting {len(ours)} files (model_card.json, "
    of_export = f"of export {old_card.model_id} (created {old_card.created_at}) in {output_dir}"
    assert any(line.startswith(deleting) and of_export in line for line in said), said
    assert any(line.startswith("--restart: keeping 3 files") for line in said), said
    assert len(result.history["loss"]) == sum(result.epochs_run.values())  # all trained anew
    for name in user_files + lookalikes:
        assert (output_dir / name).read_text() == f"the user's {name}", name
    card = read_model_card(str(output_dir))
    assert card.training_config["seed"] == 5 and card.model_id != old_card.model_id
    assert json.loads((output_dir / "history.json").read_text()) == result.history
    # The new card lists its own files and not the user's, so the next --restart keeps them.
    assert set(card.export_files) == _files(output_dir) - {
        "model_card.json",
        *user_files,
        *lookalikes,
    }


@pytest.mark.slow
def test_restart_after_a_killed_restart_keeps_the_users_files(trained, tmp_path, caplog):
    _, exported = trained
    output_dir = tmp_path / "out"
    shutil.copytree(exported, output_dir)
    lookalikes = ["logs/phase1/notes.txt", "report_assets/999_overlay.png", "saved_model/x.txt"]
    for name in lookalikes:
        (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (output_dir / name).write_text(f"the user's {name}")
    config = dataclasses.replace(
        config_of(read_model_card(str(output_dir))), output_dir=str(output_dir), seed=5
    )
    with pytest.raises(Killed):
        train(config, restart=True, callbacks=[KillAfterEpochs(1)])
    recorded = Checkpoints(str(output_dir)).recorded_run()
    assert set(recorded["foreign_files"]) == set(lookalikes)  # there before it: not its own
    partial = _files(output_dir) - set(lookalikes)
    assert any(name.startswith("logs/phase1/train/events") for name in partial), partial
    with caplog.at_level(logging.INFO, logger="train_job.run_state"):
        train(dataclasses.replace(config, seed=6), restart=True)
    said = [record.getMessage() for record in caplog.records]
    started = f"of an interrupted run started {recorded['started_at']} in {output_dir}"
    assert any(f"deleting {len(partial)} files" in line and started in line for line in said)
    for name in lookalikes:
        assert (output_dir / name).read_text() == f"the user's {name}", name
    assert read_model_card(str(output_dir)).training_config["seed"] == 6
