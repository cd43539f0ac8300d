"""--skip_scored: incremental runs over a growing folder score each image once, and
`pipelines.report` over all of them equals one run over everything."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest

from pipelines import report, score
from tests.pipelines.helpers import prediction_rows, read_csv, read_json
from tests.pipelines.rerun_helpers import assert_same_report, write_run


def _copy_into(folder: pathlib.Path, root: pathlib.Path, paths: list[str]) -> list[str]:
    """Copy inputs into folder, keeping their places under root; their new paths."""
    copied = []
    for path in paths:
        target = folder / os.path.relpath(path, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.append(str(target))
    return sorted(copied)


def _score(folder: pathlib.Path, output_dir: pathlib.Path, tiny_export: str, *extra) -> int:
    # One image per batch: each image's forward pass is then the same in every run, so the
    # scores of the split runs and of the single run are bit for bit comparable.
    argv = ["--input", str(folder), "--model_dir", tiny_export, "--output_dir", str(output_dir)]
    argv += ["--batch_size", "1", "--max_error_fraction", "1", *map(str, extra)]
    return score.main(argv)


@pytest.mark.slow
def test_two_runs_over_a_growing_folder_score_every_image_once_and_report_as_one_run(
    tmp_path, scoring_inputs, tiny_export
):
    folder, root = tmp_path / "bucket", scoring_inputs.root
    labelled = scoring_inputs.labelled
    first_images = _copy_into(folder, root, labelled[::2])
    first_broken = _copy_into(folder, root, scoring_inputs.broken[:1])
    run1, run2, single = tmp_path / "run1", tmp_path / "run2", tmp_path / "single"
    assert _score(folder, run1, tiny_export) == 0

    # New arrivals, including images without ground truth.
    new_images = _copy_into(
        folder, root, labelled[1::2] + scoring_inputs.other_modes + scoring_inputs.unlabelled
    )
    assert _score(folder, run2, tiny_export, "--skip_scored", run1) == 0
    assert _score(folder, single, tiny_export) == 0

    first_rows = [row["image_path"] for row in prediction_rows(str(run1))]
    second_rows = [row["image_path"] for row in prediction_rows(str(run2))]
    assert sorted(first_rows) == first_images
    assert sorted(second_rows) == new_images  # only what arrived since
    # Errors are not skipped: the broken file is tried again.
    for run in (run1, run2):
        assert [row["image_path"] for row in read_csv(str(run / "errors.csv"))] == first_broken
    summary = read_json(str(run2 / "summary.json"))
    assert summary["already_scored"] == len(first_images)
    assert (summary["scored"], summary["failed"]) == (len(new_images), 1)
    assert summary["inputs_matched"] == len(first_images) + len(new_images) + 1
    assert summary["failed_fraction"] == 1 / (len(new_images) + 1)  # of the images it tried
    assert summary["skip_scored"] == [str(run1)]
    assert read_json(str(run1 / "summary.json"))["already_scored"] == 0

    # The same incremental run again: refused without --overwrite, then the same rows.
    rows = sorted(prediction_rows(str(run2)), key=lambda row: row["image_path"])
    assert _score(folder, run2, tiny_export, "--skip_scored", run1) == score.EXIT_LAUNCH_ERROR
    assert _score(folder, run2, tiny_export, "--skip_scored", run1, "--overwrite") == 0
    assert sorted(prediction_rows(str(run2)), key=lambda row: row["image_path"]) == rows

    combined = tmp_path / "combined"
    argv = ["--predictions", f"{tmp_path}/run*/predictions*.csv", "--output_dir", str(combined)]
    assert report.main(argv) == 0
    assert_same_report(single, combined)
    scored = read_json(str(single / "summary.json"))
    rebuilt = read_json(str(combined / "summary.json"))
    for key in ("scored", "predictions_per_class", "labelled_images", "quality_control"):
        assert rebuilt[key] == scored[key], key


def test_skip_scored_is_refused_for_anything_but_another_finished_run_of_this_model(
    tmp_path, in_memory_run, scoring_inputs, tiny_export, capsys
):
    run = tmp_path / "run"
    shutil.copytree(in_memory_run.output_dir, run)
    before = {path: path.stat().st_mtime_ns for path in run.rglob("*")}
    images = scoring_inputs.unlabelled

    def refused(skip, output_dir=tmp_path / "new", *extra) -> str:
        argv = ["--input", *images, "--model_dir", tiny_export, "--output_dir", str(output_dir)]
        assert score.main([*argv, "--skip_scored", str(skip), *extra]) == score.EXIT_LAUNCH_ERROR
        error = capsys.readouterr().err
        assert error.startswith("error: --skip_scored ") and error.count("\n") == 1, error
        return error

    # Its own --output_dir, on a rerun: --overwrite would remove the predictions it skips.
    for extra in ([], ["--overwrite"]):
        assert "is this run's --output_dir" in refused(run, run, *extra)
    assert {path: path.stat().st_mtime_ns for path in run.rglob("*")} == before

    assert "does not exist" in refused(tmp_path / "no-such-run")
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(run / "predictions.csv", killed)
    assert "has no summary.json: not a finished scoring run" in refused(killed)
    other = write_run(run, tmp_path / "other-model", model_id="another-model")
    assert "was scored by model another-model, not tiny-test" in refused(other)
    rebuilt = tmp_path / "report"
    assert report.main(["--predictions", str(run), "--output_dir", str(rebuilt)]) == 0
    capsys.readouterr()
    assert "holds a report (python -m pipelines.report), not a scoring run" in refused(rebuilt)
    broken = write_run(run, tmp_path / "broken")
    (broken / "summary.json").write_text(json.dumps({"model_id": "tiny-test"}))
    assert "is not a scoring run's (it has threshold None, scored None)" in refused(broken)
    assert not (tmp_path / "new").exists()


def test_a_run_named_twice_or_with_a_trailing_slash_is_one_run_and_nothing_new_is_fine(
    tmp_path, in_memory_run, scoring_inputs, tiny_export
):
    run = str(in_memory_run.output_dir)
    output_dir = tmp_path / "out"
    argv = ["--input", *scoring_inputs.unlabelled, "--model_dir", tiny_export, "--no_gradcam"]
    argv += ["--output_dir", str(output_dir), "--skip_scored", run + "/", run]
    assert score.main(argv) == 0
    summary = read_json(str(output_dir / "summary.json"))
    assert summary["already_scored"] == len(scoring_inputs.unlabelled)
    assert (summary["scored"], summary["failed"], summary["failed_fraction"]) == (0, 0, 0.0)
    assert prediction_rows(str(output_dir)) == []
