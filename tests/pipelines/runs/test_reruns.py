"""A scoring run's outputs all come from that run: reruns, --overwrite, kills, nested outputs."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from model import storage
from pipelines import score
from pipelines.reporting import report_writer
from pipelines.runs.manifest import earlier_run
from pipelines.runs.outputs import is_run_output
from tests.conftest import REPO_ROOT
from tests.pipelines.helpers import prediction_rows, read_csv, read_json

# Files a user keeps beside the outputs; no run may touch them.
USER_FILES = {
    "notes.txt": b"my notes\n",
    "predictions-old.csv": b"a user's own csv\n",
    "heatmaps/mine.png": b"not a scorer heatmap name\n",
    "heatmaps/mine.jpg": b"nor this\n",
    "heatmaps/README": b"kept\n",
    "plots/extra.png": b"kept\n",
    "report_assets/logo.svg": b"kept\n",
}


def _argv(inputs, output_dir, *extra) -> list[str]:
    return ["--input", *map(str, inputs), "--output_dir", str(output_dir), *extra]


def _write_user_files(output_dir: pathlib.Path) -> None:
    for relative, data in USER_FILES.items():
        path = output_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _assert_user_files_intact(output_dir: pathlib.Path) -> None:
    for relative, data in USER_FILES.items():
        assert (output_dir / relative).read_bytes() == data, relative


def _assert_one_run(output_dir: str, expected_paths: list[str]) -> dict:
    """Every output in the folder comes from the one run whose summary is there."""
    summary = read_json(storage.join(output_dir, "summary.json"))
    rows = prediction_rows(output_dir)
    errors = read_csv(storage.join(output_dir, "errors.csv"))
    assert sorted(row["image_path"] for row in rows + errors) == sorted(expected_paths)
    assert summary["scored"] == len(rows) and summary["failed"] == len(errors)
    # Overlays of any format: an earlier run's in another format would be stale ones.
    heatmaps = storage.match(storage.join(output_dir, "heatmaps", "*-*"))
    heatmaps = [path for path in heatmaps if is_run_output(f"heatmaps/{path.rsplit('/', 1)[-1]}")]
    assert sorted(heatmaps) == sorted(row["heatmap_path"] for row in rows if row["heatmap_path"])
    report = storage.read_text(storage.join(output_dir, "report.html"))
    assert f">{summary['run_id']}<" in report  # the page is this run's too
    return summary


def test_a_rerun_into_a_used_folder_stops_unless_overwrite_and_then_replaces_only_its_files(
    tmp_path, scoring_inputs, tiny_export, capsys
):
    output_dir = tmp_path / "out"
    first = scoring_inputs.labelled
    argv = ["--model_dir", tiny_export, "--max_error_fraction", "1"]
    assert score.main(_argv(first, output_dir, "--num_shards", "3", *argv)) == 0
    _write_user_files(output_dir)
    assert (output_dir / "metrics.json").exists() and len(list(output_dir.glob("*.csv"))) > 3
    before = {path: path.stat().st_mtime_ns for path in output_dir.rglob("*")}

    second = scoring_inputs.unlabelled
    assert score.main(_argv(second, output_dir, *argv)) == score.EXIT_LAUNCH_ERROR
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--overwrite" in error and "earlier run" in error
    assert {path: path.stat().st_mtime_ns for path in output_dir.rglob("*")} == before

    assert (output_dir / "review.csv").exists()
    # The second run writes no review.csv (--review_limit 0): the first run's must go.
    overwrite = ["--overwrite", "--review_limit", "0"]
    assert score.main(_argv(second, output_dir, *overwrite, *argv)) == 0
    summary = _assert_one_run(str(output_dir), second)
    assert summary["inputs_matched"] == len(second)
    # The unlabelled run writes no metrics: none may be left from the labelled one.
    for stale in (
        "metrics.json",
        "patients.csv",
        "plots/roc.png",
        "plots/pr.png",
        "plots/reliability.png",
        "review.csv",
    ):
        assert not (output_dir / stale).exists(), stale
    assert not list(output_dir.glob("predictions-*-of-*.csv"))
    _assert_user_files_intact(output_dir)


def test_overwrite_lists_only_the_scorers_own_file_names(tmp_path):
    _write_user_files(tmp_path)
    own = [
        "summary.json",
        "report.html",
        "predictions.csv",
        "predictions-00001-of-00003.csv",
        "errors.csv",
        "metrics.json",
        "patients.csv",
        "review.csv",
        "plots/roc.png",
        "plots/reliability.png",
        "heatmaps/SOB_B_A-14-22549AB-40-001-0123456789abcdef.png",
        "heatmaps/SOB_B_A-14-22549AB-40-001-0123456789abcdef.jpg",
        "report_assets/tile-fedcba9876543210.png",
        "beam-temp-predictions-0123456789abcdef0123456789abcdef/shard",
        ".write-check-0123456789abcdef0123456789abcdef",
    ]
    for relative in own:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    found = earlier_run(str(tmp_path)).files  # no manifest: the scorer's file names
    assert [os.path.relpath(path, tmp_path) for path in found[:2]] == [
        "summary.json",
        "report.html",
    ]
    assert sorted(os.path.relpath(path, tmp_path) for path in found) == sorted(own)


def test_a_folder_holding_only_a_review_csv_is_an_earlier_runs_and_overwrite_removes_it(
    tmp_path, scoring_inputs, tiny_export, capsys
):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "review.csv").write_text("rank,image_path\n1,/old/run.png\n")
    argv = _argv(scoring_inputs.unlabelled, output_dir, "--model_dir", tiny_export, "--no_gradcam")
    assert score.main(argv) == score.EXIT_LAUNCH_ERROR
    error = capsys.readouterr().err
    assert "earlier run's outputs (a run; no manifest.json" in error
    assert "1 file (review.csv)" in error
    assert (output_dir / "review.csv").read_text().endswith("/old/run.png\n")

    assert score.main([*argv, "--overwrite"]) == 0
    rows = read_csv(str(output_dir / "review.csv"))
    assert {row["image_path"] for row in rows} <= set(scoring_inputs.unlabelled)


@pytest.mark.slow
def test_main_reads_only_its_own_runs_summary(
    tmp_path, scoring_inputs, tiny_export, capsys, monkeypatch
):
    output_dir = tmp_path / "out"
    argv = _argv(scoring_inputs.unlabelled, output_dir, "--model_dir", tiny_export, "--no_gradcam")
    assert score.main(argv) == 0
    summary_path = output_dir / "summary.json"
    run_id = json.loads(summary_path.read_text())["run_id"]
    assert len(run_id) == 32

    # Another run writes its summary into the folder while this one runs (here: just after).
    original = report_writer.read_summary

    def someone_elses(directory):
        return {**original(directory), "run_id": "another-run"}

    monkeypatch.setattr(report_writer, "read_summary", someone_elses)
    assert score.main([*argv, "--overwrite"]) == score.EXIT_TOO_MANY_ERRORS
    assert "is not this run's" in capsys.readouterr().err


def test_summary_json_is_written_after_every_other_output(in_memory_run):
    output_dir = in_memory_run.output_dir
    summary = (output_dir / "summary.json").stat().st_mtime_ns
    others = [
        path for path in output_dir.rglob("*") if path.is_file() and path.name != "summary.json"
    ]
    assert len(others) > 20  # predictions, errors, heatmaps, metrics, plots, report, assets
    late = [str(path) for path in others if path.stat().st_mtime_ns > summary]
    assert late == []
    assert not list(output_dir.glob("beam-temp-*"))


def _many_images(folder: pathlib.Path, count: int) -> list[str]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"tile_{index:03d}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.slow
def test_a_killed_run_leaves_no_finished_looking_summary_and_a_rerun_is_whole(
    tmp_path, in_memory_run, tiny_export, capsys
):
    output_dir = tmp_path / "out"
    shutil.copytree(in_memory_run.output_dir, output_dir)  # a finished earlier run
    images = _many_images(tmp_path / "many", 150)
    command = [
        sys.executable,
        "-m",
        "pipelines.score",
        *_argv([tmp_path / "many"], output_dir, "--model_dir", tiny_export),
        "--batch_size",
        "1",
        "--heatmap_format",
        "png",
        "--overwrite",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        # Killed once scoring has started: the first new overlay is on disk.
        while not any(
            path.name.startswith("tile_") for path in (output_dir / "heatmaps").glob("*.png")
        ):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "scoring did not start within 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()

    assert not (output_dir / "summary.json").exists()
    assert not (output_dir / "report.html").exists()
    assert not (output_dir / "metrics.json").exists()  # nothing of the earlier run is left

    argv = _argv([tmp_path / "many"], output_dir, "--model_dir", tiny_export)
    assert score.main(argv) == score.EXIT_LAUNCH_ERROR  # partial outputs: refused, not mixed
    assert "--overwrite" in capsys.readouterr().err
    # Rerun in the default format (JPEG): none of the killed run's PNG overlays may be left.
    assert score.main([*argv, "--overwrite"]) == 0
    _assert_one_run(str(output_dir), images)
    overlays = sorted(path.suffix for path in (output_dir / "heatmaps").iterdir())
    assert overlays == [".jpg"] * len(images)
    assert not list(output_dir.glob("beam-temp-*"))


@pytest.mark.slow
def test_an_output_folder_inside_the_input_is_never_scored(tmp_path, scoring_inputs, tiny_export):
    root = tmp_path / "data"
    for path in scoring_inputs.unlabelled + scoring_inputs.labelled[:2]:
        target = root / os.path.relpath(path, scoring_inputs.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    inputs = sorted(str(path) for path in root.rglob("*") if path.is_file())
    output_dir = root / "scores"
    argv = _argv([root], output_dir, "--model_dir", tiny_export)
    assert score.main(argv) == 0
    first = _assert_one_run(str(output_dir), inputs)
    assert first["output_files_excluded"] == 1  # its own launch record, manifest.json
    shutil.copyfile(inputs[0], output_dir / "my_copy.png")  # a user's image in the output folder

    assert score.main([*argv, "--overwrite"]) == 0
    second = _assert_one_run(str(output_dir), inputs)
    assert second["inputs_matched"] == len(inputs)
    assert second["output_files_excluded"] == 2  # the user's image and the launch record
    assert (output_dir / "my_copy.png").exists()


@pytest.mark.parametrize("pattern", ["heatmaps/*.png", "**"])
def test_a_pattern_matching_only_the_output_folder_stops_at_launch(
    tmp_path, tiny_export, capsys, pattern
):
    output_dir = tmp_path / "out"
    (output_dir / "heatmaps").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(output_dir / "heatmaps" / "x.png")
    argv = _argv([output_dir / pattern], output_dir, "--model_dir", tiny_export)
    assert score.main(argv) == score.EXIT_LAUNCH_ERROR
    assert "matches only files inside --output_dir" in capsys.readouterr().err


class _Ended:
    """A stand-in for a Beam PipelineResult that ended in `state`."""

    def __init__(self, state):
        self.state = state


def test_finished_summary_refuses_unfinished_and_foreign_runs(tmp_path):
    from apache_beam.runners.runner import PipelineState

    with pytest.raises(report_writer.RunNotFinished, match="ended in state FAILED"):
        report_writer.finished_summary(_Ended(PipelineState.FAILED), str(tmp_path), "a", "run")
    with pytest.raises(report_writer.RunNotFinished, match="is not this report's \\(a\\)"):
        report_writer.finished_summary(_Ended(PipelineState.DONE), str(tmp_path), "a", "report")
    (tmp_path / "summary.json").write_text(json.dumps({"run_id": "b"}))
    with pytest.raises(report_writer.RunNotFinished, match="another job writing"):
        report_writer.finished_summary(_Ended(PipelineState.DONE), str(tmp_path), "a", "run")
    (tmp_path / "summary.json").write_text(json.dumps({"run_id": "a", "failed": 0}))
    summary = report_writer.finished_summary(_Ended(PipelineState.DONE), str(tmp_path), "a", "run")
    assert summary == {"run_id": "a", "failed": 0}
