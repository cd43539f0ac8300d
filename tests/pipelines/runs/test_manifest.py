"""manifest.json: a run lists the files it wrote, and --overwrite removes those and no other."""

from __future__ import annotations

import json
import logging
import pathlib
import shutil

import pytest

from pipelines import report, score
from pipelines.runs.manifest import earlier_run, launch_record, write_manifest

# A user's own files that look like a scorer's outputs (the names the file-name rule removes).
LOOKALIKES = {
    "predictions-99999-of-99999.csv": b"image_path,p_malignant\nmine.png,0.5\n",
    "heatmaps/slide1-0123456789abcdef.jpg": b"not an overlay of any run\n",
    ".write-check-0123456789abcdef0123456789abcdef": b"mine\n",
}


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _manifest(folder: pathlib.Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _add_lookalikes(folder: pathlib.Path) -> None:
    for relative, data in LOOKALIKES.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)


def _score_argv(scoring_inputs, model_dir, output_dir, *flags):
    return [
        "--input",
        *scoring_inputs.labelled[:4],
        "--model_dir",
        model_dir,
        "--output_dir",
        str(output_dir),
        *flags,
    ]


def test_a_finished_run_lists_exactly_the_files_it_wrote(in_memory_run):
    folder = in_memory_run.output_dir
    manifest = _manifest(folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert manifest["state"] == "finished" and manifest["run_id"] == summary["run_id"]
    assert manifest["kind"] == "scoring" and manifest["foreign_files"] == []
    on_disk = set(_files(folder)) - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert {"summary.json", "report.html", "predictions.csv", "metrics.json"} <= on_disk
    assert any(name.startswith("heatmaps/") for name in manifest["files"])


@pytest.mark.slow
def test_a_users_files_survive_overwrite_and_the_message_names_the_earlier_run(
    tmp_path, scoring_inputs, tiny_export, capsys
):
    output_dir = tmp_path / "out"
    assert score.main(_score_argv(scoring_inputs, tiny_export, output_dir)) == 0
    first = _manifest(output_dir)
    _add_lookalikes(output_dir)
    before = _files(output_dir)

    argv = _score_argv(scoring_inputs, tiny_export, output_dir, "--no_gradcam")
    assert score.main(argv) == score.EXIT_LAUNCH_ERROR
    error = capsys.readouterr().err
    assert f"run {first['run_id']} started {first['started_at']}" in error
    assert f"{len(first['files']) + 1} files (summary.json, report.html" in error
    assert "heatmaps/slide1" not in error and "99999" not in error
    assert _files(output_dir) == before

    assert score.main([*argv, "--overwrite"]) == 0
    after = _files(output_dir)
    for relative, data in LOOKALIKES.items():
        assert after[relative] == data, relative
    # Everything else is the second run's: the first run's overlays went (no Grad-CAM now).
    second = _manifest(output_dir)
    assert second["run_id"] != first["run_id"]
    assert sorted(second["foreign_files"]) == sorted(LOOKALIKES)
    assert set(after) - set(LOOKALIKES) - {"manifest.json"} == set(second["files"])
    assert not [name for name in after if name.startswith("heatmaps/") and "slide1" not in name]


def test_a_killed_runs_partial_files_go_and_what_was_there_before_it_stays(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    _add_lookalikes(output_dir)
    record = launch_record(str(output_dir), "killed-run", "scoring")
    write_manifest(str(output_dir), record)
    partial = ["heatmaps/SOB_B_A-14-22549AB-40-001-fedcba9876543210.jpg", "errors.csv"]
    for relative in partial:
        (output_dir / relative).write_bytes(b"partial\n")

    earlier = earlier_run(str(output_dir))
    assert earlier.run_id == "killed-run" and "did not finish" in earlier.describe()
    removed = sorted(str(pathlib.Path(path).relative_to(output_dir)) for path in earlier.files)
    assert removed == sorted([*partial, "manifest.json"])
    assert earlier.files[-1].endswith("manifest.json")  # last: a killed removal is resumable


def test_a_killed_run_that_wrote_nothing_leaves_nothing_to_overwrite(tmp_path):
    write_manifest(str(tmp_path), launch_record(str(tmp_path), "quick-kill", "scoring"))
    assert earlier_run(str(tmp_path)) is None


@pytest.mark.slow
def test_a_folder_from_an_older_release_keeps_the_file_name_rule_with_a_warning(
    tmp_path, in_memory_run, scoring_inputs, tiny_export, caplog
):
    output_dir = tmp_path / "old"
    shutil.copytree(in_memory_run.output_dir, output_dir)
    (output_dir / "manifest.json").unlink()  # as an older release left it
    (output_dir / "predictions-99999-of-99999.csv").write_bytes(b"looks like a shard\n")
    argv = _score_argv(scoring_inputs, tiny_export, output_dir, "--no_gradcam", "--overwrite")
    with caplog.at_level(logging.WARNING, logger="pipelines.runs.manifest"):
        assert score.main(argv) == 0
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "pipelines.runs.manifest" and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "has no manifest.json" in warnings[0]
    assert not (output_dir / "predictions-99999-of-99999.csv").exists()  # by name, as before
    assert _manifest(output_dir)["foreign_files"] == []


@pytest.mark.slow
def test_a_reports_overwrite_removes_only_the_earlier_reports_files(
    tmp_path, in_memory_run, capsys
):
    output_dir = tmp_path / "report"
    argv = ["--predictions", str(in_memory_run.output_dir), "--output_dir", str(output_dir)]
    assert report.main(argv) == 0
    first = _manifest(output_dir)
    assert first["kind"] == "report" and first["state"] == "finished"
    _add_lookalikes(output_dir)
    assert report.main(argv) == 2
    assert f"run {first['run_id']}" in capsys.readouterr().err
    assert report.main([*argv, "--overwrite"]) == 0
    after = _files(output_dir)
    assert all(after[relative] == data for relative, data in LOOKALIKES.items())
    assert _manifest(output_dir)["run_id"] != first["run_id"]
