"""Folders a run never writes into, with or without --overwrite: its model's (any ensemble
member, a cross-validation folder), and any training export (found by its model_card.json)."""

from __future__ import annotations

import hashlib
import pathlib
import shutil

import pytest

from model.constants import fold_dir_name
from pipelines import report, score


def _snapshot(folder: pathlib.Path) -> dict[str, str]:
    """Every file below folder with a digest of its bytes (what "unchanged" means)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _refusal(main, argv, capsys) -> str:
    """Run a job's main, assert exit 2 with one error line, return that line."""
    assert main([str(arg) for arg in argv]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr


def _score_argv(scoring_inputs, model_dirs, output_dir, overwrite):
    return [
        "--input",
        scoring_inputs.labelled[0],
        "--model_dir",
        *model_dirs,
        "--output_dir",
        output_dir,
        *(["--overwrite"] if overwrite else []),
    ]


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("where", ["the export itself", "inside it", "holding it"])
def test_an_export_scored_into_its_own_folder_is_refused_and_unchanged(
    where, overwrite, tmp_path, tiny_export, scoring_inputs, capsys
):
    model = tmp_path / "exports" / "model"
    shutil.copytree(tiny_export, model)
    output_dir = {
        "the export itself": model,
        "inside it": model / "scores",
        "holding it": tmp_path / "exports",
    }[where]
    before = _snapshot(tmp_path)
    error = _refusal(
        score.main, _score_argv(scoring_inputs, [model], output_dir, overwrite), capsys
    )
    assert f"--output_dir {output_dir} overlaps --model_dir {model}" in error
    assert _snapshot(tmp_path) == before
    assert not (model / "scores").exists()


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_an_output_dir_inside_any_ensemble_member_is_refused(
    overwrite, tmp_path, ensemble_cv_folder, scoring_inputs, capsys
):
    members = [tmp_path / "a", tmp_path / "b"]
    for fold, member in enumerate(members):
        shutil.copytree(ensemble_cv_folder / fold_dir_name(fold), member)
    before = _snapshot(tmp_path)
    argv = _score_argv(scoring_inputs, members, members[1] / "out", overwrite)
    assert f"overlaps --model_dir {members[1]}" in _refusal(score.main, argv, capsys)
    assert _snapshot(tmp_path) == before


def test_an_output_dir_inside_a_fold_of_the_scored_cv_folder_is_refused(
    tmp_path, ensemble_cv_folder, scoring_inputs, capsys
):
    cv = tmp_path / "cv_run"
    shutil.copytree(ensemble_cv_folder, cv)
    before = _snapshot(cv)
    inside_fold = cv / fold_dir_name(1) / "scores"
    argv = _score_argv(scoring_inputs, [cv], inside_fold, overwrite=True)
    assert f"--output_dir {inside_fold} overlaps --model_dir {cv}" in _refusal(
        score.main, argv, capsys
    )
    assert _snapshot(cv) == before


@pytest.mark.parametrize("inside", [False, True], ids=["the export", "a folder inside it"])
def test_scores_written_into_another_training_export_are_refused(
    inside, tmp_path, tiny_export, scoring_inputs, capsys
):
    other = tmp_path / "other_export"
    shutil.copytree(tiny_export, other)
    (other / "plots").mkdir(exist_ok=True)
    before = _snapshot(other)
    output_dir = other / "plots" if inside else other
    argv = _score_argv(scoring_inputs, [tiny_export], output_dir, overwrite=True)
    error = _refusal(score.main, argv, capsys)
    assert f"--output_dir {output_dir} is inside the training export {other}" in error
    assert _snapshot(other) == before


def test_a_report_written_into_a_training_export_is_refused(
    tmp_path, tiny_export, in_memory_run, capsys
):
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    before = _snapshot(export)
    argv = ["--predictions", in_memory_run.output_dir, "--output_dir", export, "--overwrite"]
    error = _refusal(report.main, argv, capsys)
    assert f"--output_dir {export} is inside the training export {export}" in error
    assert _snapshot(export) == before


def test_a_folder_beside_the_export_is_not_protected(tmp_path, tiny_export):
    from pipelines.launch.checks import check_output_not_protected

    # A sibling whose name starts with the export's is neither inside nor holding it.
    check_output_not_protected(
        str(tmp_path / "model-scores"), {"--model_dir": [str(tmp_path / "model")]}
    )
    check_output_not_protected(str(tmp_path / "scores"), {"--model_dir": [tiny_export]})
