"""Scoring with several exports as one ensemble: the rules, the runs, the refusals."""

from __future__ import annotations

import hashlib
import json
import math
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
from model.constants import MODEL_CARD_FILE, fold_dir_name
from pipelines import score
from pipelines.ensemble.members import combine_logits, ensemble_model_id, ensemble_threshold
from pipelines.ensemble.model_handler import EnsembleModelHandler
from pipelines.scoring.model_handler import read_and_prepare
from pipelines.scoring.rows import PREDICTION_COLUMNS
from tests.conftest import REPO_ROOT
from tests.pipelines.conftest import (
    ENSEMBLE_HEATMAP_SCALES,
    ENSEMBLE_THRESHOLDS,
    IMAGE_SIZE,
    load_inputs,
    run_scoring,
    write_member_export,
)
from tests.pipelines.helpers import (
    assert_review_queue,
    prediction_rows,
    read_csv,
    read_header,
    read_json,
)

FOLDS = len(ENSEMBLE_THRESHOLDS)


def _folds(cv_folder: pathlib.Path) -> list[str]:
    return [str(cv_folder / fold_dir_name(index)) for index in range(FOLDS)]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _logit(p):
    return math.log(p / (1.0 - p))


def _main_error(argv, capsys) -> str:
    """Run main, assert the launch-error exit code, return the one line it printed."""
    assert score.main(argv) == score.EXIT_LAUNCH_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


# --- the rules -------------------------------------------------------------------------------


def test_one_members_threshold_and_id_are_its_own_and_several_combine_in_log_odds():
    assert ensemble_threshold([0.347]) == 0.347
    assert ensemble_model_id(["m-1"]) == "m-1"
    t = ensemble_threshold(list(ENSEMBLE_THRESHOLDS))
    assert t == pytest.approx(_sigmoid(np.mean([_logit(x) for x in ENSEMBLE_THRESHOLDS])))
    assert ensemble_threshold([0.2, 0.2, 0.2]) == pytest.approx(0.2)
    # Any order of the same members: the same run id, from the sorted ids.
    digest = hashlib.sha256(b"a\nb\nc").hexdigest()[:16]
    assert ensemble_model_id(["c", "a", "b"]) == ensemble_model_id(["a", "b", "c"])
    assert ensemble_model_id(["b", "a", "c"]) == f"ensemble-{digest}"
    # A member threshold of 0 or 1 pulls the mean without making it infinite.
    assert 0.0 < ensemble_threshold([0.0, 1.0, 1.0]) < 1.0


def test_combined_scores_are_the_mean_logit_with_view_and_member_spreads():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3, 5, 4))  # members, images, views
    scores = combine_logits(logits)
    for image in range(5):
        grid = logits[:, image, :]
        assert scores.p_malignant[image] == pytest.approx(_sigmoid(grid.mean()))
        assert scores.member_std[image] == pytest.approx(np.std(_sigmoid(grid.mean(axis=1))))
        assert scores.p_std[image] == pytest.approx(np.std(_sigmoid(grid.mean(axis=0))))


# --- in the worker -----------------------------------------------------------------------------


def _prepared(paths):
    return [
        read_and_prepare(path, IMAGE_SIZE, keep_original=True, max_bytes=2**20)[1] for path in paths
    ]


def test_each_member_scores_a_chunk_in_one_pass_and_gradcam_does_not_change_p(
    ensemble_cv_folder, scoring_inputs, monkeypatch
):
    from model.network import gradcam, tta
    from pipelines.ensemble.members import Member

    members = [
        Member(folder, f"m{index}", 0.5, "block5_conv3", "calibrated_logit", scale, 1, 1.0, "x")
        for index, (folder, scale) in enumerate(
            zip(_folds(ensemble_cv_folder), ENSEMBLE_HEATMAP_SCALES, strict=True)
        )
    ]
    batch = _prepared(scoring_inputs.labelled[:5])
    passes = []
    real_gradcam, real_logits = gradcam.predict_view_logits_with_gradcam, tta.predict_view_logits

    def spy_gradcam(grad_model, images, tta=1):
        passes.append(("gradcam", len(images)))
        return real_gradcam(grad_model, images, tta)

    def spy_logits(logits_of, images, views):
        passes.append(("logits", len(images)))
        return real_logits(logits_of, images, views)

    monkeypatch.setattr(gradcam, "predict_view_logits_with_gradcam", spy_gradcam)
    monkeypatch.setattr(tta, "predict_view_logits", spy_logits)
    explaining = EnsembleModelHandler(members, gradcam=True, batch_size=8, tta=2)
    scoring = EnsembleModelHandler(members, gradcam=False, batch_size=8, tta=2)
    explained = explaining.run_inference(batch, explaining.load_model())
    assert passes == [("gradcam", 4)] * FOLDS + [("gradcam", 1)] * FOLDS  # 8 views a pass
    passes.clear()
    scored = scoring.run_inference(batch, scoring.load_model())
    assert passes == [("logits", 4)] * FOLDS + [("logits", 1)] * FOLDS
    for with_map, without in zip(explained, scored, strict=True):
        assert with_map.inference.p_malignant == pytest.approx(without.inference.p_malignant)
        assert with_map.inference.member_std == pytest.approx(without.inference.member_std)
        assert without.inference.heatmap is None and without.inference.heatmap_peak is None
        assert with_map.inference.member_std > 0
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleModelHandler(members[:1])


# --- whole runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed_run(tmp_path_factory, scoring_inputs, ensemble_cv_folder) -> pathlib.Path:
    """The three folds listed one by one, in_memory, two views, Grad-CAM."""
    output_dir = tmp_path_factory.mktemp("listed_run")
    run_scoring(
        ["--input", os.path.join(scoring_inputs.root, "**")]
        + ["--model_dir", *_folds(ensemble_cv_folder), "--output_dir", str(output_dir)]
        + ["--tta", "2", "--batch_size", "4", "--max_error_fraction", "1"]
    )
    return output_dir


def _direct_ensemble(folders: list[str], paths: list[str]) -> dict[str, np.ndarray]:
    """The ensemble's scores and map peaks computed straight from the members' networks at two
    views (the image and its left-right mirror)."""
    from model.network.gradcam import gradcam_model, predict_with_gradcam
    from model.network.model_card import load_exported_model
    from model.network.tta import logit_model

    images = load_inputs(paths)
    views = [images, images[:, :, ::-1, :]]
    logits, maps = [], []
    for folder in folders:
        model, card = load_exported_model(folder)
        logits_of = logit_model(model, card.logit_layer)
        logits.append(np.stack([np.asarray(logits_of(view)).reshape(-1) for view in views], axis=1))
        explainer = gradcam_model(model, card.last_conv_layer, card.logit_layer)
        maps.append(predict_with_gradcam(explainer, images, tta=2).heatmaps / card.heatmap_scale)
    logits = np.stack(logits)  # [members, images, views]
    return {
        "p_malignant": _sigmoid(logits.mean(axis=(0, 2))),
        "member_std": _sigmoid(logits.mean(axis=2)).std(axis=0),
        "p_std": _sigmoid(logits.mean(axis=0)).std(axis=1),
        "heatmap_peak": np.mean(maps, axis=0).reshape(len(paths), -1).max(axis=1),
    }


def test_an_ensemble_of_k_reproduces_the_mean_of_the_members_logits(
    listed_run, scoring_inputs, ensemble_cv_folder
):
    rows = {row["image_path"]: row for row in prediction_rows(str(listed_run))}
    assert sorted(rows) == scoring_inputs.scorable
    paths = sorted(rows)
    direct = _direct_ensemble(_folds(ensemble_cv_folder), paths)
    threshold = _sigmoid(np.mean([_logit(t) for t in ENSEMBLE_THRESHOLDS]))
    for index, path in enumerate(paths):
        row = rows[path]
        for column in ("p_malignant", "member_std", "p_std"):
            assert float(row[column]) == pytest.approx(direct[column][index], abs=2e-6), column
        assert float(row["heatmap_peak"]) == pytest.approx(direct["heatmap_peak"][index], rel=1e-4)
        expected_call = "malignant" if float(row["p_malignant"]) >= threshold else "benign"
        assert row["predicted_label"] == expected_call
    assert max(direct["member_std"]) > 0.01  # the members really disagree
    assert read_header(str(listed_run / "predictions.csv")) == list(PREDICTION_COLUMNS)
    assert PREDICTION_COLUMNS[-1] == "member_std"

    summary = read_json(str(listed_run / "summary.json"))
    ids = [f"fold-model-{fold}" for fold in range(FOLDS)]
    assert summary["model_id"] == ensemble_model_id(ids) == ensemble_model_id(ids[::-1])
    assert summary["threshold"] == pytest.approx(threshold, abs=1e-12)
    assert "mean of the members' thresholds in log-odds" in summary["threshold_rule"]
    assert summary["heatmap_scale"] == 1.0 and "heatmap_scale" in summary["heatmap_units"]
    assert [(m["model_id"], m["model_dir"]) for m in summary["members"]] == list(
        zip(ids, _folds(ensemble_cv_folder), strict=True)
    )
    assert summary["model_dir"] == _folds(ensemble_cv_folder)
    metrics = read_json(str(listed_run / "metrics.json"))
    assert metrics["threshold"] == summary["threshold"]


def test_the_review_queue_counts_member_disagreement_as_uncertain(listed_run):
    review = assert_review_queue(str(listed_run), limit=1000)
    rows = prediction_rows(str(listed_run))
    threshold = read_json(str(listed_run / "summary.json"))["threshold"]
    by_members = [
        row
        for row in rows
        if float(row["member_std"]) > abs(float(row["p_malignant"]) - threshold)
        and float(row["p_std"]) <= abs(float(row["p_malignant"]) - threshold)
    ]
    assert by_members, "the test needs images only the members' spread makes uncertain"
    assert review["reasons"]["uncertain"] >= len(by_members)
    listed = {row["image_path"]: row for row in read_csv(str(listed_run / "review.csv"))}
    for row in by_members:
        assert "uncertain" in listed[row["image_path"]]["reasons"].split(";")
        assert listed[row["image_path"]]["member_std"] == row["member_std"]


def test_the_report_names_the_members_and_the_threshold_rule(listed_run):
    html = (listed_run / "report.html").read_text()
    assert "Ensemble of 3 models" in html
    for fold in range(FOLDS):
        assert f'data-member="fold-model-{fold}"' in html
    assert "mean of the members&#39; thresholds in log-odds" in html


def _assert_close(actual, expected, where: str = "") -> None:
    """Equal JSON values, floats to 1e-9."""
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), where
        for key in expected:
            _assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (a, b) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, b, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-9), where
    else:
        assert actual == expected, where


def _same_rows(first: pathlib.Path, second: pathlib.Path) -> None:
    """Every column equal, overlays byte-identical (their folders differ)."""
    a = {row["image_path"]: row for row in prediction_rows(str(first))}
    b = {row["image_path"]: row for row in prediction_rows(str(second))}
    assert sorted(a) == sorted(b)
    for path, row in a.items():
        other = b[path]
        assert {k: v for k, v in row.items() if k != "heatmap_path"} == {
            k: v for k, v in other.items() if k != "heatmap_path"
        }, path
        if row["heatmap_path"]:
            assert os.path.basename(row["heatmap_path"]) == os.path.basename(other["heatmap_path"])
            assert (
                pathlib.Path(row["heatmap_path"]).read_bytes()
                == pathlib.Path(other["heatmap_path"]).read_bytes()
            )


@pytest.mark.slow
def test_a_cv_folder_in_worker_processes_equals_listing_its_folds(
    tmp_path, scoring_inputs, ensemble_cv_folder, listed_run
):
    output_dir = tmp_path / "out"
    run_scoring(
        ["--input", os.path.join(scoring_inputs.root, "**")]
        + ["--model_dir", str(ensemble_cv_folder), "--output_dir", str(output_dir)]
        + ["--tta", "2", "--batch_size", "4", "--max_error_fraction", "1"]
        + ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    )
    _same_rows(listed_run, output_dir)
    summary, listed = (read_json(str(d / "summary.json")) for d in (output_dir, listed_run))
    for key in ("model_id", "threshold", "threshold_rule", "heatmap_scale", "members"):
        if key == "members":
            assert [m["model_dir"] for m in summary[key]] == [m["model_dir"] for m in listed[key]]
            assert {m["given_as"] for m in summary[key]} == {str(ensemble_cv_folder)}
        else:
            assert summary[key] == listed[key], key
    assert summary["model_dir"] == str(ensemble_cv_folder)
    # Equal up to the order in which worker processes add up floats.
    _assert_close(
        read_json(str(output_dir / "metrics.json")), read_json(str(listed_run / "metrics.json"))
    )


@pytest.mark.slow
def test_an_ensemble_of_one_equals_the_single_model(
    tmp_path, scoring_inputs, tiny_export, in_memory_run
):
    cv_folder = tmp_path / "cv"
    shutil.copytree(tiny_export, cv_folder / fold_dir_name(0))
    output_dir = tmp_path / "out"
    run_scoring(
        ["--input", os.path.join(scoring_inputs.root, "**")]
        + ["--model_dir", str(cv_folder), "--output_dir", str(output_dir)]
        + ["--batch_size", "8", "--max_error_fraction", "1"]
    )
    _same_rows(in_memory_run.output_dir, output_dir)
    rows = prediction_rows(str(output_dir))
    assert {row["member_std"] for row in rows} == {""}  # one model: no spread between members
    single = read_json(str(in_memory_run.output_dir / "summary.json"))
    one = read_json(str(output_dir / "summary.json"))
    for key in ("model_id", "threshold", "heatmap_scale", "tta", "review", "quality_control"):
        assert one[key] == single[key], key
    assert one["model_id"] == "tiny-test" and one["threshold_rule"] == "the model card's threshold"
    assert read_json(str(output_dir / "metrics.json")) == read_json(
        str(in_memory_run.output_dir / "metrics.json")
    )
    strip = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731
    assert strip((output_dir / "review.csv").read_text().replace(str(output_dir), "OUT")) == strip(
        (in_memory_run.output_dir / "review.csv")
        .read_text()
        .replace(str(in_memory_run.output_dir), "OUT")
    )


@pytest.mark.slow
def test_an_ensemble_rerun_needs_overwrite_and_may_change_its_members(
    tmp_path, scoring_inputs, ensemble_cv_folder, capsys
):
    output_dir = tmp_path / "out"
    images = scoring_inputs.labelled[:4]
    folds = _folds(ensemble_cv_folder)
    argv = ["--input", *images, "--output_dir", str(output_dir), "--no_gradcam"]
    assert score.main([*argv, "--model_dir", *folds]) == 0
    first = read_json(str(output_dir / "summary.json"))
    error = _main_error([*argv, "--model_dir", *folds], capsys)
    assert "earlier run's outputs" in error and "--overwrite" in error
    assert read_json(str(output_dir / "summary.json")) == first  # nothing touched
    assert score.main([*argv, "--model_dir", *folds[:2], "--overwrite"]) == 0
    second = read_json(str(output_dir / "summary.json"))
    assert second["run_id"] != first["run_id"] and len(second["members"]) == 2
    assert second["model_id"] == ensemble_model_id(["fold-model-0", "fold-model-1"])
    assert len(prediction_rows(str(output_dir))) == len(images)


# --- launch refusals ----------------------------------------------------------------------------


@pytest.fixture()
def cv_copy(tmp_path, ensemble_cv_folder) -> pathlib.Path:
    """A copy of the cross-validation folder a test may break."""
    copy = tmp_path / "cv_copy"
    shutil.copytree(ensemble_cv_folder, copy)
    return copy


def _refusal_argv(tmp_path, scoring_inputs, *model_dirs) -> list[str]:
    return ["--input", scoring_inputs.labelled[0], "--output_dir", str(tmp_path / "out")] + [
        "--model_dir",
        *map(str, model_dirs),
    ]


def test_a_cv_folder_with_an_incomplete_or_missing_fold_is_refused_naming_it(
    tmp_path, scoring_inputs, cv_copy, capsys
):
    card = cv_copy / fold_dir_name(1) / MODEL_CARD_FILE
    saved = card.read_bytes()
    card.unlink()  # training of fold 1 was killed before its card
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, cv_copy), capsys)
    assert f"{fold_dir_name(1)} is incomplete" in error
    card.write_bytes(saved)

    shutil.rmtree(cv_copy / fold_dir_name(2))  # never trained here
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, cv_copy), capsys)
    assert f"{fold_dir_name(2)} is missing (the folds' cards say --folds 3)" in error
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_fold_holding_another_folds_card_is_refused(tmp_path, scoring_inputs, cv_copy, capsys):
    card_path = cv_copy / fold_dir_name(0) / MODEL_CARD_FILE
    card = json.loads(card_path.read_text())
    card["training_config"]["fold"] = 2
    card_path.write_text(json.dumps(card))
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, cv_copy), capsys)
    assert f"{fold_dir_name(0)}/{MODEL_CARD_FILE} is the card of fold 2" in error


def test_an_export_listed_twice_or_a_model_copied_is_refused(
    tmp_path, scoring_inputs, ensemble_cv_folder, capsys
):
    fold = _folds(ensemble_cv_folder)[1]
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, ensemble_cv_folder, fold), capsys)
    assert f"{fold} is listed twice (as {ensemble_cv_folder} and as {fold})" in error
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, fold, fold + "/"), capsys)
    assert "is listed twice" in error
    copy = tmp_path / "copy"
    shutil.copytree(fold, copy)
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, fold, copy), capsys)
    assert "hold the same model (model_id 'fold-model-1')" in error


def test_members_that_disagree_on_size_or_preprocessing_are_refused_in_one_line(
    tmp_path, scoring_inputs, ensemble_cv_folder, capsys
):
    fold = _folds(ensemble_cv_folder)[0]
    larger = write_member_export(
        tmp_path / "larger", seed=3, model_id="larger", inputs=None, image_size=48, threshold=0.5
    )
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, fold, larger), capsys)
    assert error == (
        f"error: --model_dir members disagree on image_size: 32 ({fold}) vs 48 ({larger})\n"
    )
    other = tmp_path / "other"
    shutil.copytree(fold, other)
    card = json.loads((other / MODEL_CARD_FILE).read_text())
    card["model_id"] = "other"
    card["preprocessing"]["mean_bgr"] = [100.0, 110.0, 120.0]
    (other / MODEL_CARD_FILE).write_text(json.dumps(card))
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, fold, other), capsys)
    assert error.startswith("error: --model_dir members disagree on preprocessing: ")


def test_members_with_different_eval_tta_need_an_explicit_tta(
    tmp_path, scoring_inputs, ensemble_cv_folder, capsys
):
    fold = _folds(ensemble_cv_folder)[0]
    other = tmp_path / "other"
    shutil.copytree(_folds(ensemble_cv_folder)[1], other)
    card = json.loads((other / MODEL_CARD_FILE).read_text())
    (other / MODEL_CARD_FILE).write_text(json.dumps({**card, "eval_tta": 4}))
    argv = _refusal_argv(tmp_path, scoring_inputs, fold, other)
    error = _main_error(argv, capsys)
    assert "members disagree on eval_tta" in error and "pass --tta" in error
    config, _ = score.resolve_config(score.parse_args([*argv, "--tta", "2"])[0], "DirectRunner")
    assert config.tta == 2 and len(config.members) == 2


def test_a_folder_that_is_neither_an_export_nor_a_cv_folder_is_refused(
    tmp_path, scoring_inputs, ensemble_cv_folder, capsys
):
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    (empty / "notes" / "README").write_text("not a model\n")
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, empty), capsys)
    assert "is neither a training export" in error and "nor a cross-validation folder" in error
    only_cv = tmp_path / "only_cv"
    shutil.copytree(ensemble_cv_folder / "cv", only_cv / "cv")
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, only_cv), capsys)
    assert "holds no fold-<i>/ folder" in error
    fold = _folds(ensemble_cv_folder)[0]
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, fold, tmp_path / "nope"), capsys)
    assert error == f"error: --model_dir {tmp_path / 'nope'} does not exist\n"


def test_a_fold_with_a_broken_card_is_refused_naming_the_fold(
    tmp_path, scoring_inputs, cv_copy, capsys
):
    (cv_copy / fold_dir_name(2) / MODEL_CARD_FILE).write_text("{not json")
    error = _main_error(_refusal_argv(tmp_path, scoring_inputs, cv_copy), capsys)
    assert f"{fold_dir_name(2)}: unreadable {MODEL_CARD_FILE}" in error


# --- gs:// and Dataflow --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket_cv(gcs_emulator, ensemble_cv_folder, scoring_inputs) -> str:
    """The cross-validation folder and a few tiles in the emulated bucket."""
    root = f"{gcs_emulator}/ensemble"
    storage.upload_dir(str(ensemble_cv_folder), f"{root}/cv_run")
    for path in scoring_inputs.labelled[:6]:
        storage.write_bytes(
            f"{root}/images/{os.path.basename(path)}", pathlib.Path(path).read_bytes()
        )
    return root


@pytest.mark.slow
def test_a_gs_cv_folder_scores_as_its_local_copy(bucket_cv, scoring_inputs, listed_run):
    output_dir = f"{bucket_cv}/out"
    run_scoring(
        ["--input", f"{bucket_cv}/images", "--model_dir", f"{bucket_cv}/cv_run"]
        + ["--output_dir", output_dir, "--tta", "2", "--batch_size", "4"]
    )
    local = {os.path.basename(row["image_path"]): row for row in prediction_rows(str(listed_run))}
    rows = prediction_rows(output_dir)
    assert len(rows) == 6
    for row in rows:
        expected = local[row["image_path"].rsplit("/", 1)[1]]
        for column in ("p_malignant", "p_std", "member_std", "heatmap_peak", "predicted_label"):
            assert row[column] == expected[column], column
        assert storage.exists(row["heatmap_path"])
    summary = read_json(f"{output_dir}/summary.json")
    assert [m["model_dir"] for m in summary["members"]] == [
        f"{bucket_cv}/cv_run/{fold_dir_name(fold)}" for fold in range(FOLDS)
    ]


@pytest.mark.slow
def test_dataflow_graph_builds_offline_with_several_model_dirs(bucket_cv):
    result = run_scoring(
        ["--input", f"{bucket_cv}/images/*.png", "--output_dir", f"{bucket_cv}/dataflow_out"]
        + ["--model_dir", *(f"{bucket_cv}/cv_run/{fold_dir_name(f)}" for f in range(2))]
        + ["--runner", "DataflowRunner", "--dry_run=True", "--project", "demo-project"]
        + ["--region", "us-central1", "--temp_location", f"{bucket_cv}/tmp"]
    )
    names = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    assert "ScoreImages" in names
    assert any(name.startswith("ScoreImages/RunInference") for name in names)
    assert not storage.exists(f"{bucket_cv}/dataflow_out/summary.json")


def test_dataflow_refuses_a_local_member(bucket_cv, ensemble_cv_folder, capsys):
    error = _main_error(
        ["--input", f"{bucket_cv}/images/*.png", "--output_dir", f"{bucket_cv}/x"]
        + ["--model_dir", f"{bucket_cv}/cv_run", str(ensemble_cv_folder)]
        + ["--runner", "DataflowRunner", "--project", "p", "--temp_location", f"{bucket_cv}/t"],
        capsys,
    )
    assert f"use gs:// for: {ensemble_cv_folder}" in error


@pytest.mark.slow
def test_a_killed_ensemble_run_leaves_no_summary_and_a_rerun_is_whole(
    tmp_path, ensemble_cv_folder, capsys
):
    images = tmp_path / "many"
    images.mkdir()
    rng = np.random.default_rng(1)
    for index in range(60):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            images / f"tile_{index:03d}.png"
        )
    output_dir = tmp_path / "out"
    argv = ["--input", str(images), "--model_dir", str(ensemble_cv_folder)]
    argv += ["--output_dir", str(output_dir), "--batch_size", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.score", *argv],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list((output_dir / "heatmaps").glob("tile_*.jpg")):  # scoring has started
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "scoring did not start within 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not (output_dir / "summary.json").exists()

    error = _main_error(argv, capsys)  # partial outputs: refused, never mixed
    assert "--overwrite" in error
    assert score.main([*argv, "--overwrite"]) == 0
    summary = read_json(str(output_dir / "summary.json"))
    rows = prediction_rows(str(output_dir))
    assert summary["scored"] == len(rows) == 60 and len(summary["members"]) == FOLDS
    heatmaps = sorted(path.name for path in (output_dir / "heatmaps").glob("tile_*"))
    assert heatmaps == sorted(os.path.basename(row["heatmap_path"]) for row in rows)
    assert not list(output_dir.glob("beam-temp-*"))
