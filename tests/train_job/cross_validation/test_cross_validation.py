"""Cross-validation in one command: every fold trained and aggregated; reruns, kills, refusals."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from model.constants import CV_DIR, MODEL_CARD_FILE, fold_dir_name
from model.evaluation.evaluate import evaluate
from model.evaluation.fold_predictions import evaluation_records, read_predictions
from model.evaluation.labels import predicted_label
from model.network.model_card import read_model_card
from tests.train_job.conftest import CV_FOLDS, cv_argv
from tests.train_job.test_train import REPO_ROOT
from train_job import main as train_main
from train_job.cross_validation.run import cross_validate
from train_job.run_state.checkpoint import Checkpoints

# End to end: the slow tier (bash scripts/test.sh --slow).
pytestmark = pytest.mark.slow


def _folds(output_dir) -> list:
    return [output_dir / fold_dir_name(index) for index in range(CV_FOLDS)]


def _csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _files(folder) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_one_command_trains_every_fold_into_its_folder_then_aggregates(cv_run):
    for index, folder in enumerate(_folds(cv_run)):
        card = read_model_card(str(folder))
        assert (card.training_config["folds"], card.training_config["fold"]) == (CV_FOLDS, index)
        assert card.training_config["output_dir"] == str(folder)
        assert not (folder / "checkpoints").exists()
    cv = cv_run / CV_DIR
    for name in ("cv_metrics.json", "oof_predictions.csv", "report.html"):
        assert (cv / name).is_file(), name
    for name in ("roc", "pr", "by_magnification", "confusion_matrix", "reliability"):
        assert (cv / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
    # Each fold's test split is one fold of a partition of the specimens.
    tests = [
        {row["specimen"] for row in _csv(folder / "split.csv") if row["split"] == "test"}
        for folder in _folds(cv_run)
    ]
    assert all(not (a & b) for i, a in enumerate(tests) for b in tests[i + 1 :])


def test_out_of_fold_predictions_hold_every_image_once_scored_by_the_fold_that_held_it_out(
    cv_run, synthetic_data_dir
):
    rows = _csv(cv_run / CV_DIR / "oof_predictions.csv")
    paths = [row["image_path"] for row in rows]
    assert len(paths) == len(set(paths))  # no image twice
    assert set(paths) == {str(p) for p in synthetic_data_dir.rglob("*.png")}  # every image
    splits = {
        index: {row["image_path"]: row["split"] for row in _csv(folder / "split.csv")}
        for index, folder in enumerate(_folds(cv_run))
    }
    cards = {index: read_model_card(str(folder)) for index, folder in enumerate(_folds(cv_run))}
    for row in rows:
        fold = int(row["fold"])
        # Never in the training or validation split of the fold whose model scored it.
        assert splits[fold][row["image_path"]] == "test"
        assert float(row["threshold"]) == cards[fold].threshold
        assert row["predicted_label"] == predicted_label(
            float(row["p_malignant"]), cards[fold].threshold
        )
    assert {int(row["fold"]) for row in rows} == set(range(CV_FOLDS))
    # The same score the fold's own export wrote for the image.
    for index, folder in enumerate(_folds(cv_run)):
        own = {r["image_path"]: r["p_malignant"] for r in _csv(folder / "test_predictions.csv")}
        assert {r["image_path"]: r["p_malignant"] for r in rows if r["fold"] == str(index)} == own


def test_each_exports_test_predictions_reproduce_its_metrics_exactly(cv_run):
    for folder in _folds(cv_run):
        card = read_model_card(str(folder))
        rows = read_predictions((folder / "test_predictions.csv").read_text(), "test")
        recomputed = json.loads(json.dumps(evaluate(evaluation_records(rows), card.threshold)))
        assert recomputed == json.loads((folder / "metrics.json").read_text())


def _pick(report: dict, path: tuple[str, ...], group: str) -> dict:
    for key in path:
        report = report[key]
    return report["pooled"] if group == "pooled" else report["by_magnification"][group]


def test_cv_metrics_give_each_folds_value_their_mean_sample_sd_and_the_out_of_fold_value(cv_run):
    metrics = json.loads((cv_run / CV_DIR / "cv_metrics.json").read_text())
    reports = [json.loads((f / "metrics.json").read_text()) for f in _folds(cv_run)]
    oof_rows = read_predictions(
        (cv_run / CV_DIR / "oof_predictions.csv").read_text(),
        "oof",
        (
            "image_path",
            "p_malignant",
            "predicted_label",
            "true_label",
            "patient_id",
            "magnification",
            "threshold",
        ),
    )
    oof = json.loads(json.dumps(evaluate(evaluation_records(oof_rows), None)))
    assert metrics["out_of_fold_report"] == oof
    assert "ddof=1" in metrics["sd"] and metrics["folds"] == CV_FOLDS
    checked = 0
    for path in (
        ("image_level",),
        ("patient_level",),
        ("baseline", "image_level"),
        ("baseline", "patient_level"),
    ):
        for group in ("pooled", "40X", "100X"):
            entry_block = _pick(metrics, path, group)
            for name in ("accuracy", "balanced_accuracy", "sensitivity", "brier"):
                entry = entry_block[name]
                values = [_pick(report, path, group)[name] for report in reports]
                assert entry["per_fold"] == values, (path, group, name)
                defined = [v for v in values if v is not None]
                assert entry["mean"] == pytest.approx(np.mean(defined))
                assert entry["sd"] == pytest.approx(np.std(defined, ddof=1))
                assert entry["oof"] == _pick(oof, path, group)[name]
                checked += 1
    assert checked == 4 * 3 * 4
    assert metrics["model_ids"] == [read_model_card(str(f)).model_id for f in _folds(cv_run)]


def test_a_rerun_after_completion_trains_nothing_and_writes_nothing(cv_run, synthetic_data_dir):
    before = _files(cv_run)
    completed = subprocess.run(
        [sys.executable, "train_job/main.py", *cv_argv(synthetic_data_dir, cv_run)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.count("already holds a complete export made with these flags") == 3
    assert "already aggregates these 3 folds: nothing to do" in completed.stderr
    assert "epoch" not in completed.stderr.lower()
    assert _files(cv_run) == before


def test_a_rerun_with_other_result_flags_is_refused_before_any_work(
    cv_run, synthetic_data_dir, capsys, no_decoding
):
    before = _files(cv_run)
    code = train_main.main(cv_argv(synthetic_data_dir, cv_run, seed=2, dropout=0.25))
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1
    assert f"{cv_run / fold_dir_name(0)} holds a complete export made with other settings" in stderr
    assert "--seed 1 -> 2" in stderr and "--dropout 0.5 -> 0.25" in stderr
    assert "--restart" in stderr
    assert _files(cv_run) == before


def test_fold_without_all_folds_keeps_training_one_fold_into_the_output_dir():
    base = ["--data_dir", "d", "--output_dir", "o"]
    config, args = train_main.parse_args([*base, "--folds", "5"])
    assert train_main.cross_validation_requested(config, args)
    config, args = train_main.parse_args([*base, "--folds", "5", "--fold", "0"])
    assert not train_main.cross_validation_requested(config, args) and config.fold == 0
    config, args = train_main.parse_args(base)
    assert not train_main.cross_validation_requested(config, args) and config.fold == 0


class CountEpochs(keras.callbacks.Callback):
    """Counts the epochs trained, across folds and phases."""

    def __init__(self):
        super().__init__()
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1


def _kill_when(process: subprocess.Popen, path, timeout: float = 240.0) -> None:
    """SIGKILL the process group as soon as `path` exists."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the job ended (exit {process.returncode}) before {path} existed")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def test_a_job_killed_after_one_fold_resumes_the_next_and_trains_the_rest(
    synthetic_data_dir, tmp_path, capsys
):
    output_dir = tmp_path / "cv"
    argv = cv_argv(synthetic_data_dir, output_dir)
    process = subprocess.Popen(
        [sys.executable, "train_job/main.py", *argv],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Killed once fold 1 has a checkpoint: fold 0 complete, fold 1 interrupted, fold 2 untouched.
    _kill_when(process, output_dir / fold_dir_name(1) / "checkpoints" / "state.npz")
    fold0 = output_dir / fold_dir_name(0)
    fold1 = output_dir / fold_dir_name(1)
    assert (fold0 / MODEL_CARD_FILE).is_file() and not (fold1 / MODEL_CARD_FILE).exists()
    assert not (output_dir / fold_dir_name(2)).exists() and not (output_dir / CV_DIR).exists()
    fold0_files = _files(fold0)
    state = Checkpoints(str(fold1)).load()

    # Resuming with another result-changing flag is refused before anything is touched.
    assert train_main.main(cv_argv(synthetic_data_dir, output_dir, epochs=2)) == 2
    assert "(--epochs 1 -> 2)" in capsys.readouterr().err
    assert Checkpoints(str(fold1)).load().history == state.history
    assert not (output_dir / fold_dir_name(2)).exists()

    # The same command again: fold 0 skipped, fold 1 resumed from its checkpoint, fold 2 trained.
    config = train_main.parse_args(argv)[0]
    counter = CountEpochs()
    result = cross_validate(config, callbacks=[counter])
    assert result.trained == [1, 2]
    assert _files(fold0) == fold0_files
    trained_before_kill = sum(len(v.get("loss", [])) for v in state.history.values())
    assert trained_before_kill >= 1
    assert counter.epochs == 2 + (2 - trained_before_kill)  # fold 2 whole, fold 1's remainder
    history = json.loads((fold1 / "history.json").read_text())
    assert len(history["loss"]) == 2  # both phases' epochs, before and after the kill
    oof = _csv(output_dir / CV_DIR / "oof_predictions.csv")
    assert len(oof) == len(list(synthetic_data_dir.rglob("*.png")))
