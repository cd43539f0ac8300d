"""python -m train_job.cv_report: folds trained anywhere, in any order, aggregated or refused."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil

import pytest

from model.constants import CV_DIR, MODEL_CARD_FILE, fold_dir_name
from model.reports.sections import format_metric
from tests.train_job.conftest import CV_FOLDS
from train_job.cross_validation import aggregate as cv_report
from train_job.cross_validation.aggregate_files import CV_PLOTS
from train_job.cross_validation.aggregate_report import MAX_MISTAKES


def _folds(cv_run) -> list[str]:
    return [str(cv_run / fold_dir_name(index)) for index in range(CV_FOLDS)]


def _files(folder) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _copy_fold(cv_run, index: int, target):
    shutil.copytree(cv_run / fold_dir_name(index), target)
    return target


def _edit_card(folder, **settings) -> None:
    card = json.loads((folder / MODEL_CARD_FILE).read_text())
    card["training_config"].update(settings)
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card))


def _rows(folder) -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.StringIO((folder / "test_predictions.csv").read_text()))
    return list(reader.fieldnames), list(reader)


def _write_rows(folder, columns, rows) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "test_predictions.csv").write_text(buffer.getvalue())


def test_folds_given_in_any_order_give_the_one_commands_aggregate(cv_run, tmp_path):
    folds = _folds(cv_run)
    output_dir = tmp_path / "agg"
    assert cv_report.main([folds[2], folds[0], folds[1], "--output_dir", str(output_dir)]) == 0
    expected = cv_run / CV_DIR
    assert json.loads((output_dir / "cv_metrics.json").read_text()) == json.loads(
        (expected / "cv_metrics.json").read_text()
    )
    assert (output_dir / "oof_predictions.csv").read_bytes() == (
        expected / "oof_predictions.csv"
    ).read_bytes()
    # Run again on the same folds: nothing to do, nothing written.
    before = _files(output_dir)
    assert cv_report.main([*reversed(folds), "--output_dir", str(output_dir)]) == 0
    assert _files(output_dir) == before


def _case(name, cv_run, tmp_path, trained_dir):
    """(fold folders, a piece of the expected one-line error) of one hostile input."""
    folds = _folds(cv_run)
    copy = tmp_path / "copy"
    if name == "missing folder":
        return [folds[0], str(tmp_path / "nowhere"), folds[2]], "does not exist or is not a folder"
    if name == "not an export":
        (tmp_path / "empty").mkdir()
        return [folds[0], folds[1], str(tmp_path / "empty")], "is not a complete training export"
    if name == "unfinished export":
        _copy_fold(cv_run, 1, copy)
        (copy / MODEL_CARD_FILE).unlink()
        return [folds[0], str(copy), folds[2]], "is not a complete training export (no model_card"
    if name == "garbage card":
        _copy_fold(cv_run, 1, copy)
        (copy / MODEL_CARD_FILE).write_text("{not json")
        return [folds[0], str(copy), folds[2]], "has an unreadable model_card.json"
    if name == "same folder twice":
        return [folds[0], folds[1], folds[1] + "/", folds[2]], "is given twice"
    if name == "a fold twice":
        _copy_fold(cv_run, 0, copy)
        return [folds[0], str(copy), folds[1], folds[2]], "fold 0 is given twice"
    if name == "a fold missing":
        return folds[:2], "fold 2 of 3 is missing"
    if name == "another seed":
        _copy_fold(cv_run, 2, copy)
        _edit_card(copy, seed=7)
        return [folds[0], folds[1], str(copy)], "other settings than"
    if name == "another K":
        _copy_fold(cv_run, 2, copy)
        _edit_card(copy, folds=4)
        return [folds[0], folds[1], str(copy)], "(--folds 3 -> 4)"
    if name == "overlapping test splits":
        _copy_fold(cv_run, 0, copy)
        _edit_card(copy, fold=1)
        return [folds[0], str(copy), folds[2]], "both hold"
    if name == "a single-split export":
        return [folds[0], folds[1], str(trained_dir)], "single split"
    if name == "export without test predictions":
        _copy_fold(cv_run, 1, copy)
        (copy / "test_predictions.csv").unlink()
        return [folds[0], str(copy), folds[2]], "has no test_predictions.csv"
    if name == "unreadable test predictions":
        _copy_fold(cv_run, 1, copy)
        columns, rows = _rows(copy)
        rows[0]["p_malignant"] = "abc"
        _write_rows(copy, columns, rows)
        return [folds[0], str(copy), folds[2]], "test_predictions.csv line 2"
    if name == "calls its threshold does not make":
        _copy_fold(cv_run, 1, copy)
        columns, rows = _rows(copy)
        flip = {"benign": "malignant", "malignant": "benign"}
        rows[0]["predicted_label"] = flip[rows[0]["predicted_label"]]
        _write_rows(copy, columns, rows)
        return [folds[0], str(copy), folds[2]], "which its card's threshold"
    if name == "data changed":
        _copy_fold(cv_run, 2, copy)
        lines = (copy / "split.csv").read_text().splitlines(keepends=True)
        kept = [lines[0]] + [line for line in lines[1:] if ",train," not in line][:1]
        kept += [line for line in lines[1:] if ",train," not in line][1:]
        (copy / "split.csv").write_text("".join(kept))
        return [folds[0], folds[1], str(copy)], "split other images than fold 0"
    raise AssertionError(name)


HOSTILE = (
    "missing folder",
    "not an export",
    "unfinished export",
    "garbage card",
    "same folder twice",
    "a fold twice",
    "a fold missing",
    "another seed",
    "another K",
    "overlapping test splits",
    "a single-split export",
    "export without test predictions",
    "unreadable test predictions",
    "calls its threshold does not make",
    "data changed",
)


@pytest.mark.parametrize("name", HOSTILE)
def test_folders_that_are_not_one_cross_validation_are_refused_in_one_line(
    name, cv_run, trained, tmp_path, capsys
):
    _, trained_dir = trained
    folders, expected = _case(name, cv_run, tmp_path, trained_dir)
    before = {folder: _files(cv_run / folder) for folder in (fold_dir_name(i) for i in range(3))}
    output_dir = tmp_path / "agg"
    assert cv_report.main([*folders, "--output_dir", str(output_dir)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert expected in stderr
    assert not output_dir.exists()  # nothing written
    assert {f: _files(cv_run / f) for f in before} == before  # the folds untouched


def test_an_output_dir_that_cannot_be_written_is_refused(cv_run, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("mine")
    assert cv_report.main([*_folds(cv_run), "--output_dir", str(target)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "is a file, not a folder" in stderr
    assert target.read_text() == "mine"


def test_an_interrupted_aggregate_is_replaced_whole_and_a_users_files_stay(cv_run, tmp_path):
    output_dir = tmp_path / "agg"
    shutil.copytree(cv_run / CV_DIR, output_dir)
    # As a kill mid-way leaves it: the completion mark gone, a stale gallery picture left.
    (output_dir / "cv_metrics.json").unlink()
    (output_dir / "report_assets").mkdir(exist_ok=True)
    (output_dir / "report_assets" / "047_overlay.png").write_bytes(b"stale")
    (output_dir / "notes.txt").write_text("mine")
    assert cv_report.main([*_folds(cv_run), "--output_dir", str(output_dir)]) == 0
    assert not (output_dir / "report_assets" / "047_overlay.png").exists()
    assert (output_dir / "notes.txt").read_text() == "mine"
    assert json.loads((output_dir / "cv_metrics.json").read_text()) == json.loads(
        (cv_run / CV_DIR / "cv_metrics.json").read_text()
    )


def _lookup(metrics: dict, dotted: str):
    value = metrics
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@pytest.mark.slow
def test_the_report_shows_mean_sd_and_the_out_of_fold_mistakes_with_their_folds_grad_cam(
    cv_run, tmp_path
):
    # Fold 1's model made a confident mistake (the tiny synthetic models make none).
    folds = [tmp_path / f"f{index}" for index in range(CV_FOLDS)]
    for index, folder in enumerate(folds):
        _copy_fold(cv_run, index, folder)
    columns, rows = _rows(folds[1])
    wrong = next(row for row in rows if row["true_label"] == "benign")
    wrong.update(p_malignant="0.999999", predicted_label="malignant")
    _write_rows(folds[1], columns, rows)
    output_dir = tmp_path / "agg"
    assert cv_report.main([*map(str, folds), "--output_dir", str(output_dir)]) == 0
    metrics = json.loads((output_dir / "cv_metrics.json").read_text())
    html = (output_dir / "report.html").read_text()
    for heading in ("Mean ± sd over 3 folds", "By magnification (mean ± sd over folds)", "Folds"):
        assert heading in html, heading
    assert "Misclassifications (" in html and "scored by fold 1" in html
    assert "Most confident benign calls" not in html  # only the mistakes are shown
    name = wrong["image_path"].rsplit("/", 1)[1]
    assert f'alt="Grad-CAM overlay {name}"' in html
    assert (output_dir / "report_assets" / "000_overlay.png").read_bytes().startswith(b"\x89PNG")
    oof = list(csv.DictReader(io.StringIO((output_dir / "oof_predictions.csv").read_text())))
    mistake = next(row for row in oof if row["image_path"] == wrong["image_path"])
    assert (mistake["fold"], mistake["predicted_label"]) == ("1", "malignant")
    assert metrics["image_level"]["pooled"]["specificity"]["oof"] < 1.0

    from tests.browser import broken_images, find_chromium, inspect_page

    if find_chromium() is None:
        pytest.skip("Chromium not installed")
    page = inspect_page(output_dir / "report.html")
    assert broken_images(page) == []
    # The plots, and an original and its overlay per out-of-fold mistake the gallery shows (the
    # planted one and whatever the tiny models got wrong themselves).
    mistakes = sum(row["predicted_label"] != row["true_label"] for row in oof)
    shown = min(mistakes, MAX_MISTAKES)
    assert len(page["images"]) == len(CV_PLOTS) + 2 * shown
    cells = page["metric_cells"]
    assert len(cells) > 50
    for path, shown in cells:
        assert shown == format_metric(_lookup(metrics, path)), path
    assert "image_level.pooled.roc_auc.mean" in dict(cells)
    assert "baseline.image_level.pooled.accuracy.sd" in dict(cells)


def test_folds_aggregate_into_a_gs_bucket(cv_run, gcs_emulator):
    from model import storage

    output_dir = f"{gcs_emulator}/cv-aggregate"
    assert cv_report.main([*_folds(cv_run), "--output_dir", output_dir]) == 0
    written = storage.read_text(storage.join(output_dir, "cv_metrics.json"))
    assert json.loads(written) == json.loads((cv_run / CV_DIR / "cv_metrics.json").read_text())
    assert storage.exists(storage.join(output_dir, "plots", "roc.png"))
    assert "Mean ± sd over 3 folds" in storage.read_text(storage.join(output_dir, "report.html"))


def test_restart_deletes_exactly_the_aggregates_files(cv_run, tmp_path, caplog):
    from train_job.cross_validation.run import delete_aggregate

    cv_dir = tmp_path / "cv"
    shutil.copytree(cv_run / CV_DIR, cv_dir)
    listed = json.loads((cv_dir / "cv_metrics.json").read_text())["files"]
    ours = sorted(p.relative_to(cv_dir).as_posix() for p in cv_dir.rglob("*") if p.is_file())
    assert ours == sorted([*listed, "cv_metrics.json"])  # the list names every file it wrote
    (cv_dir / "report_assets").mkdir(exist_ok=True)
    # A user's files, one named like the aggregator's (the file-name rule deleted it).
    mine = ["notes.txt", "plots/mine.png", "report_assets/keep.txt"]
    mine.append("report_assets/999_overlay.png")
    for name in mine:
        (cv_dir / name).write_text("the user's")
    with caplog.at_level(logging.INFO):
        delete_aggregate(str(cv_dir))
    left = sorted(p.relative_to(cv_dir).as_posix() for p in cv_dir.rglob("*") if p.is_file())
    assert left == sorted(mine)
    said = [record.getMessage() for record in caplog.records]
    assert any(f"--restart: deleting {len(ours)} files (cv_metrics.json, " in line for line in said)
    assert not any(record.levelno >= logging.WARNING for record in caplog.records)


def test_an_aggregate_without_a_file_list_is_removed_by_name_with_a_warning(
    cv_run, tmp_path, caplog
):
    from train_job.cross_validation.run import delete_aggregate

    cv_dir = tmp_path / "cv"
    shutil.copytree(cv_run / CV_DIR, cv_dir)
    metrics = json.loads((cv_dir / "cv_metrics.json").read_text())
    del metrics["files"]  # as an older release wrote it
    (cv_dir / "cv_metrics.json").write_text(json.dumps(metrics))
    (cv_dir / "report_assets").mkdir(exist_ok=True)
    (cv_dir / "report_assets" / "999_overlay.png").write_text("the user's")
    (cv_dir / "notes.txt").write_text("the user's")
    with caplog.at_level(logging.INFO):
        delete_aggregate(str(cv_dir))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "found by name" in warnings[0]
    assert [p.name for p in cv_dir.rglob("*") if p.is_file()] == ["notes.txt"]
