"""benchmarks/cv_table.py prints the README's tables from a cross-validation's cv_metrics.json."""

from __future__ import annotations

import importlib.util
import json
import pathlib

from model.constants import CV_DIR

SCRIPT = pathlib.Path(__file__).resolve().parents[3] / "benchmarks" / "cv_table.py"


def _script():
    spec = importlib.util.spec_from_file_location("cv_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_shows_mean_sd_beside_the_baseline_and_out_of_fold(cv_run, capsys):
    cv_table = _script()
    assert cv_table.main(["--output_dir", str(cv_run), "--table_only"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((cv_run / CV_DIR / "cv_metrics.json").read_text())
    lines = printed.splitlines()
    assert lines[0].startswith("| metric | model, mean ± sd over 3 folds |")
    row = next(line for line in lines if line.startswith("| image accuracy |"))
    entry = metrics["image_level"]["pooled"]["accuracy"]
    baseline = metrics["baseline"]["image_level"]["pooled"]["accuracy"]
    assert row == (
        f"| image accuracy | {entry['mean']:.3f} ± {entry['sd']:.3f} | "
        f"{baseline['mean']:.3f} ± {baseline['sd']:.3f} | {entry['oof']:.3f} |"
    )
    auc = metrics["patient_level"]["pooled"]["roc_auc"]
    assert f"| patient-level ROC AUC | {auc['mean']:.3f} ± {auc['sd']:.3f} |" in printed
    assert "| patient recognition rate |" in printed and " | — | " in printed
    for magnification in metrics["image_level"]["by_magnification"]:
        counts = metrics["counts"]["oof"]["by_magnification"][magnification]
        assert f"| {magnification} | {counts['images']} ({counts['patients']}) |" in printed
    assert "ddof=1" in printed


def test_a_fold_that_cannot_define_a_metric_is_counted_in_the_table():
    cv_table = _script()
    entry = {"per_fold": [0.5, None, 0.7], "mean": 0.6, "sd": 0.1414, "folds_defined": 2}
    assert cv_table.mean_sd(entry) == "0.600 ± 0.141 (2 of 3 folds)"
    assert cv_table.mean_sd({"per_fold": [None], "mean": None, "sd": None}) == "n/a"


def test_without_a_finished_run_the_table_says_so(tmp_path, capsys):
    assert _script().main(["--output_dir", str(tmp_path), "--table_only"]) == 2
    assert "no finished cross-validation" in capsys.readouterr().err


def test_the_script_runs_the_readme_recipe_with_extra_training_flags(monkeypatch, tmp_path):
    cv_table = _script()
    seen = []

    class Done:
        returncode = 3

    monkeypatch.setattr(
        cv_table.subprocess, "run", lambda command, check: seen.append(command) or Done()
    )
    assert cv_table.main(["--output_dir", str(tmp_path), "--stain_jitter", "0"]) == 3
    command = " ".join(seen[0][2:])
    assert "--folds 5 --weights none --learning_rate 1e-4 --epochs 8" in command
    assert "--fine_tune_epochs 4 --fine_tune_learning_rate 1e-5 --patience 4" in command
    assert command.endswith("--stain_jitter 0")
