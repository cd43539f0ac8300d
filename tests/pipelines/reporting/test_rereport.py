"""`python -m pipelines.report`: a run's reports rebuilt from its predictions, without rescoring."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from model.evaluation.labels import predicted_label
from pipelines import report
from pipelines.runs.prediction_files import PredictionsFile, read_predictions
from pipelines.scoring.csv_output import csv_line
from pipelines.scoring.rows import PREDICTION_COLUMNS
from tests.conftest import REPO_ROOT
from tests.pipelines.helpers import (
    assert_metrics_close,
    label_index,
    prediction_rows,
    read_csv,
    read_json,
    sklearn_metrics,
)
from tests.pipelines.rerun_helpers import (
    assert_same_report,
    edit_line,
    write_predictions,
    write_run,
)

P, CALL, HEATMAP, QC_FLAGS = (
    PREDICTION_COLUMNS.index(name)
    for name in ("p_malignant", "predicted_label", "heatmap_path", "qc_flags")
)


def _report(*argv) -> int:
    return report.main([str(arg) for arg in argv])


def _field(index: int, value: str):
    """An edit setting one field of a row (the fixture's rows hold no quoted commas)."""

    def edit(text: str) -> str:
        fields = text.split(",")
        fields[index] = value
        return ",".join(fields)

    return edit


def _one_error_line(capsys) -> str:
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1, error
    return error


def test_the_scorers_rows_read_back_exactly_as_written(in_memory_run):
    path = in_memory_run.output_dir / "predictions.csv"
    lines = path.read_text().splitlines()[1:]
    source = PredictionsFile(str(path), str(in_memory_run.output_dir), 0.5)
    records = [record for _, record in read_predictions(source)]
    assert [csv_line(record) for record in records] == lines
    assert [line for line, _ in read_predictions(source)] == list(range(2, len(lines) + 2))


def test_a_report_over_a_run_rebuilds_its_outputs_and_links_its_overlays(in_memory_run, tmp_path):
    run = in_memory_run.output_dir
    out = tmp_path / "report"
    assert _report("--predictions", run / "predictions.csv", "--output_dir", out) == 0
    assert_same_report(run, out)
    for plot in ("roc.png", "pr.png", "confusion_matrix.png", "reliability.png"):
        assert (out / "plots" / plot).stat().st_size > 1000, plot

    summary, scored = read_json(str(out / "summary.json")), read_json(str(run / "summary.json"))
    assert summary["kind"] == "report" and summary["run_id"] != scored["run_id"]
    assert summary["source_runs"][0]["run_dir"] == str(run)
    assert summary["source_runs"][0]["run_id"] == scored["run_id"]
    for key in (
        "scored",
        "predictions_per_class",
        "labelled_images",
        "quality_control",
        "empty_heatmaps",
        "empty_heatmaps_per_class",
        "review",
        "model_id",
        "threshold",
        "members",
    ):
        assert summary[key] == scored[key], key
    assert (summary["threshold_source"], summary["rethresholded"]) == ("runs", False)

    html = (out / "report.html").read_text()
    assert "report over 1 scoring run" in html and str(run) in html
    assert 'id="errors"' not in html  # a report from predictions has no error table
    # The overlays it shows are copies of the run's, beside the page.
    shown = sorted((out / "heatmaps").iterdir())
    assert shown and all(f"heatmaps/{path.name}" in html for path in shown)
    for path in shown:
        assert path.read_bytes() == (run / "heatmaps" / path.name).read_bytes()


@pytest.mark.slow
def test_a_report_needs_neither_the_model_nor_the_images(in_memory_run, scoring_inputs, tmp_path):
    run = in_memory_run.output_dir
    moved_to = str(tmp_path / "images-gone")  # the images were moved away after scoring
    rows = [
        {**row, "image_path": row["image_path"].replace(str(scoring_inputs.root), moved_to)}
        for row in read_csv(str(run / "predictions.csv"))
    ]
    source = write_run(run, tmp_path / "run", rows)
    out = tmp_path / "report"
    code = (
        "import sys; from pipelines import report; code = report.main(sys.argv[1:]); "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--predictions", str(source), "--output_dir", str(out)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"  # no TensorFlow, so no model
    assert "Gallery skips" in result.stderr  # only the gallery's thumbnails would read images
    assert (out / "metrics.json").read_bytes() == (run / "metrics.json").read_bytes()
    assert (out / "patients.csv").read_bytes() == (run / "patients.csv").read_bytes()
    assert {row["image_path"] for row in read_csv(str(out / "review.csv"))} <= {
        row["image_path"] for row in rows
    }


def test_another_threshold_recalls_every_image_and_the_report_says_so(in_memory_run, tmp_path):
    run = in_memory_run.output_dir
    out = tmp_path / "report"
    threshold = 0.45
    assert _report("--predictions", run, "--output_dir", out, "--threshold", threshold) == 0
    labelled = [row for row in prediction_rows(str(run)) if row["true_label"]]
    y = [label_index(row["true_label"]) for row in labelled]
    p = [float(row["p_malignant"]) for row in labelled]
    assert sum((value >= threshold) != (value >= 0.5) for value in p) > 0  # some calls change
    metrics = read_json(str(out / "metrics.json"))
    assert metrics["threshold"] == threshold
    assert_metrics_close(metrics["image_level"]["pooled"], sklearn_metrics(y, p, threshold), "")
    for row in read_csv(str(out / "review.csv")):
        assert row["predicted_label"] == predicted_label(float(row["p_malignant"]), threshold)
    summary = read_json(str(out / "summary.json"))
    assert summary["threshold"] == threshold and summary["scoring_thresholds"] == [0.5]
    assert (summary["threshold_source"], summary["rethresholded"]) == ("--threshold", True)
    assert summary["predictions_per_class"]["malignant"] == sum(
        float(row["p_malignant"]) >= threshold for row in prediction_rows(str(run))
    )
    assert "given with --threshold" in (out / "report.html").read_text()


def test_runs_at_two_thresholds_need_threshold_and_two_models_are_refused(
    in_memory_run, tmp_path, capsys
):
    run = in_memory_run.output_dir
    rows = read_csv(str(run / "predictions.csv"))
    first = write_run(run, tmp_path / "first", rows[::2])
    second = write_run(run, tmp_path / "second", rows[1::2], threshold=0.6)
    out = tmp_path / "report"
    assert _report("--predictions", first, second, "--output_dir", out) == 2
    error = _one_error_line(capsys)
    assert f"{first}: 0.5" in error and f"{second}: 0.6" in error and "--threshold" in error
    assert not out.exists()

    # Both halves at the first run's threshold: the whole run's report again.
    argv = ["--predictions", first, second, "--output_dir", out, "--threshold", 0.5]
    assert _report(*argv) == 0
    assert_same_report(run, out)
    assert read_json(str(out / "summary.json"))["scoring_thresholds"] == [0.5, 0.6]

    other = write_run(run, tmp_path / "other", rows[1::2], model_id="another-model")
    argv = ["--predictions", first, other, "--output_dir", tmp_path / "r2", "--threshold", 0.5]
    assert _report(*argv) == 2
    error = _one_error_line(capsys)
    assert "different models" in error and "another-model" in error and "tiny-test" in error


def test_a_run_given_twice_counts_once_and_an_image_in_two_runs_is_refused(
    in_memory_run, tmp_path, capsys
):
    run = in_memory_run.output_dir
    out = tmp_path / "report"
    assert _report("--predictions", run, run / "predictions*.csv", "--output_dir", out) == 0
    assert_same_report(run, out)
    assert len(read_json(str(out / "summary.json"))["source_runs"]) == 1

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert _report("--predictions", run, copy, "--output_dir", tmp_path / "r2") == 2
    error = _one_error_line(capsys)
    first_image = read_csv(str(run / "predictions.csv"))[0]["image_path"]
    assert f"{first_image} is scored twice" in error
    assert f"{copy}/predictions.csv:2" in error and f"{run}/predictions.csv:2" in error


@pytest.mark.parametrize(
    "line, edit, reason",
    [
        (3, _field(P, "abc"), "p_malignant 'abc' is not a number"),
        (3, _field(P, "1.5"), "p_malignant 1.5 is outside [0, 1]"),
        (3, _field(P, "nan"), "p_malignant 'nan' is not finite"),
        (4, _field(CALL, "maybe"), "predicted_label 'maybe' is not one of"),
        (5, _field(QC_FLAGS, "smudged"), "names unknown flags ['smudged']"),
        (
            4,
            lambda text: ",".join(text.split(",")[:-3]),
            f"{len(PREDICTION_COLUMNS) - 3} fields, the header has {len(PREDICTION_COLUMNS)}",
        ),
        (2, lambda text: "", "an empty line"),
        (5, _field(0, "tile.png"), "is not an absolute path"),
        (3, _field(HEATMAP, "/out/heatmaps/.."), "does not name an overlay file"),
        (6, lambda text: text + ",extra", "fields, the header has"),
    ],
    ids=[
        "text-p",
        "p-above-1",
        "nan-p",
        "unknown-call",
        "unknown-flag",
        "short-row",
        "blank",
        "relative",
        "link",
        "extra-field",
    ],
)
def test_a_malformed_row_refuses_the_report_naming_file_and_line(
    in_memory_run, tmp_path, capsys, line, edit, reason
):
    source = write_run(in_memory_run.output_dir, tmp_path / "run")
    edit_line(source / "predictions.csv", line, edit)
    out = tmp_path / "report"
    assert _report("--predictions", source, "--output_dir", out) == 2
    error = _one_error_line(capsys)
    assert f"{source}/predictions.csv:{line}: " in error and reason in error, error
    assert list(out.iterdir()) == []  # nothing written


def test_a_call_that_disagrees_with_its_runs_threshold_is_malformed(
    in_memory_run, tmp_path, capsys
):
    source = write_run(in_memory_run.output_dir, tmp_path / "run")
    rows = read_csv(str(source / "predictions.csv"))
    flipped = {"benign": "malignant", "malignant": "benign"}
    rows[4]["predicted_label"] = flipped[rows[4]["predicted_label"]]
    write_predictions(source / "predictions.csv", rows)
    assert _report("--predictions", source, "--output_dir", tmp_path / "out") == 2
    assert "predictions.csv:6: predicted_label" in _one_error_line(capsys)


def test_files_that_are_not_a_finished_runs_whole_predictions_are_refused(
    in_memory_run, tmp_path, capsys
):
    run = in_memory_run.output_dir
    out = tmp_path / "report"

    def refused(*patterns) -> str:
        assert _report("--predictions", *patterns, "--output_dir", out) == 2
        return _one_error_line(capsys)

    assert "matches no file" in refused(tmp_path / "nothing" / "predictions*.csv")
    assert "matches no file" in refused(tmp_path)  # a folder without predictions files

    other_tool = write_run(run, tmp_path / "other_tool")
    write_predictions(
        other_tool / "predictions.csv", [{"path": "/x.png", "score": "0.3"}], ["path", "score"]
    )
    assert "is not the scorer's predictions header" in refused(other_tool)

    named = write_run(run, tmp_path / "named")
    shutil.copy(named / "predictions.csv", named / "scores.csv")
    assert "not a scorer predictions file" in refused(named / "*.csv")

    killed = tmp_path / "killed"  # a run killed before its summary.json
    killed.mkdir()
    shutil.copy(run / "predictions.csv", killed)
    assert "no summary.json: not a finished scoring run" in refused(killed)

    rows = read_csv(str(run / "predictions.csv"))
    edited = write_run(run, tmp_path / "edited")
    write_predictions(edited / "predictions.csv", rows[:-1])
    error = refused(edited)
    assert f"has {len(rows) - 1} prediction rows but its summary.json counts {len(rows)}" in error

    sharded = write_run(run, tmp_path / "sharded")
    (sharded / "predictions.csv").unlink()
    write_predictions(sharded / "predictions-00000-of-00002.csv", rows[:10])
    write_predictions(sharded / "predictions-00001-of-00002.csv", rows[10:])
    error = refused(sharded / "predictions-00000-of-00002.csv")
    assert "matches 1 of the 2 predictions files" in error
    assert _report("--predictions", sharded, "--output_dir", out) == 0
    assert_same_report(run, out)
    (sharded / "predictions-00001-of-00002.csv").unlink()
    assert "does not hold all 2 predictions shards" in refused(sharded)


def test_a_report_is_never_written_into_a_run_it_reads(in_memory_run, tmp_path, capsys):
    source = tmp_path / "run"
    shutil.copytree(in_memory_run.output_dir, source)
    before = {path: path.stat().st_mtime_ns for path in source.rglob("*")}
    for flags in ([], ["--overwrite"]):
        assert _report("--predictions", source, "--output_dir", source, *flags) == 2
        assert "is the folder of the run whose predictions are reported" in _one_error_line(capsys)
    assert {path: path.stat().st_mtime_ns for path in source.rglob("*")} == before


def test_a_rerun_needs_overwrite_then_replaces_only_the_reports_files(
    in_memory_run, tmp_path, capsys
):
    run = in_memory_run.output_dir
    out = tmp_path / "report"
    assert _report("--predictions", run, "--output_dir", out) == 0
    (out / "notes.txt").write_text("mine\n")
    overlays = {path.name for path in (out / "heatmaps").iterdir()}

    assert _report("--predictions", run, "--output_dir", out) == 2
    assert "--overwrite" in _one_error_line(capsys)

    # Other flags: another threshold and no review file; nothing of the first report may stay.
    argv = ["--predictions", run, "--output_dir", out, "--overwrite", "--review_limit", "0"]
    assert _report(*argv, "--threshold", 0.45) == 0
    summary = read_json(str(out / "summary.json"))
    assert summary["threshold"] == 0.45 and summary["review"]["file"] is None
    assert read_json(str(out / "metrics.json"))["threshold"] == 0.45
    assert not (out / "review.csv").exists()
    assert (out / "notes.txt").read_text() == "mine\n"
    html = (out / "report.html").read_text()
    assert all(f"heatmaps/{path.name}" in html for path in (out / "heatmaps").iterdir())

    # The same flags again: the first report, whole.
    assert _report("--predictions", run, "--output_dir", out, "--overwrite") == 0
    assert_same_report(run, out)
    assert {path.name for path in (out / "heatmaps").iterdir()} == overlays


@pytest.mark.slow
def test_a_killed_report_leaves_no_summary_and_a_rerun_is_whole(in_memory_run, tmp_path, capsys):
    run = in_memory_run.output_dir
    out = tmp_path / "report"
    command = [sys.executable, "-m", "pipelines.report", "--predictions", str(run)]
    command += ["--output_dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for _ in range(3):  # the window between metrics.json and summary.json is short: retry
        shutil.rmtree(out, ignore_errors=True)
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 120
            while not (out / "metrics.json").exists() and process.poll() is None:
                assert time.monotonic() < deadline, "the report did not start within 120 s"
                time.sleep(0.005)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
        if not (out / "summary.json").exists():
            break
    assert (out / "metrics.json").exists() and not (out / "summary.json").exists()

    assert _report("--predictions", run, "--output_dir", out) == 2  # partial: refused, not mixed
    assert "--overwrite" in _one_error_line(capsys)
    assert _report("--predictions", run, "--output_dir", out, "--overwrite") == 0
    assert_same_report(run, out)
    assert read_json(str(out / "summary.json"))["scored"] == len(prediction_rows(str(run)))


def test_the_report_refuses_bad_flags_before_reading_anything(tmp_path, capsys):
    assert (
        _report("--predictions", tmp_path, "--output_dir", tmp_path / "o", "--review_limit", -1)
        == 2
    )
    assert "--review_limit must be 0" in _one_error_line(capsys)


def test_a_report_of_a_runs_copy_on_another_machine_needs_only_its_folder(in_memory_run, tmp_path):
    # The run's overlays are found in its own folder, wherever it now is (relative or moved).
    copy = tmp_path / "moved-run"
    shutil.copytree(in_memory_run.output_dir, copy)
    out = tmp_path / "report"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert _report("--predictions", "moved-run/predictions.csv", "--output_dir", "report") == 0
    finally:
        os.chdir(cwd)
    assert_same_report(in_memory_run.output_dir, out)
    assert json.loads((out / "summary.json").read_text())["source_runs"][0]["run_dir"] == str(copy)
    for row in read_csv(str(out / "review.csv")):
        assert pathlib.Path(row["heatmap_path"]).parent == copy / "heatmaps"
    assert sorted((out / "heatmaps").iterdir())


def test_text_that_is_not_utf8_is_refused_with_where_it_was_found(in_memory_run, tmp_path, capsys):
    source = write_run(in_memory_run.output_dir, tmp_path / "run")
    data = (source / "predictions.csv").read_bytes()
    (source / "predictions.csv").write_bytes(data.replace(b"tile.png", b"tile\xff.png", 1))
    assert _report("--predictions", source, "--output_dir", tmp_path / "out") == 2
    error = _one_error_line(capsys)
    line = 1 + next(
        number
        for number, row in enumerate(read_csv(str(in_memory_run.output_dir / "predictions.csv")), 1)
        if row["image_path"].endswith("tile.png")
    )
    assert f"{source}/predictions.csv:{line}: not UTF-8 text (invalid start byte" in error
