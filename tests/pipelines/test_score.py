"""End-to-end runs of pipelines.score on the DirectRunner over synthetic and broken inputs."""

from __future__ import annotations

import collections
import json
import logging
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from PIL import Image

from model.image.naming import parse_breakhis_name
from pipelines import score
from pipelines.scoring.model_handler import METRICS_NAMESPACE
from pipelines.scoring.rows import PREDICTION_COLUMNS
from tests.pipelines.conftest import IMAGE_SIZE, load_inputs, mixed_inputs_argv, run_scoring
from tests.pipelines.helpers import (
    assert_metrics_close,
    assert_overlay_file_shows,
    assert_review_queue,
    distinct_bins,
    label_index,
    prediction_rows,
    read_csv,
    read_header,
    read_json,
    sklearn_metrics,
)
from tests.pipelines.launch.test_launcher import TENSORFLOW_BANNER


def _distribution_count(result, name: str) -> int:
    """How many updates a RunInference distribution metric received across the job."""
    found = result.metrics().query(
        MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name)
    )
    return sum(item.committed.count for item in found["distributions"])


def test_every_input_becomes_exactly_one_prediction_or_error_row(in_memory_run, scoring_inputs):
    rows = prediction_rows(str(in_memory_run.output_dir))
    errors = read_csv(str(in_memory_run.output_dir / "errors.csv"))

    predicted = [row["image_path"] for row in rows]
    failed = [row["image_path"] for row in errors]
    assert sorted(predicted) == scoring_inputs.scorable  # each once, although two patterns overlap
    assert sorted(failed) == scoring_inputs.broken
    assert sorted(predicted + failed) == scoring_inputs.matched
    assert read_header(str(in_memory_run.output_dir / "predictions.csv")) == list(
        PREDICTION_COLUMNS
    )


def test_unreadable_files_are_reported_with_their_reason(in_memory_run):
    errors = {
        os.path.basename(row["image_path"]): row
        for row in read_csv(str(in_memory_run.output_dir / "errors.csv"))
    }
    assert {row["error_type"] for row in errors.values()} == {"ImageDecodeError"}
    assert "empty file" in errors["zero_bytes.png"]["message"]
    assert "truncated" in errors["truncated.png"]["message"]
    assert "cannot identify image" in errors["text_named.png"]["message"]


def test_ground_truth_comes_from_breakhis_names_and_is_blank_otherwise(
    in_memory_run, scoring_inputs
):
    rows = {row["image_path"]: row for row in prediction_rows(str(in_memory_run.output_dir))}
    for path in scoring_inputs.labelled + scoring_inputs.other_modes:
        info = parse_breakhis_name(path)
        row = rows[path]
        assert (row["true_label"], row["patient_id"], row["magnification"], row["subtype"]) == (
            info.label,
            info.slide_id,
            info.magnification,
            info.subtype,
        )
    for path in scoring_inputs.unlabelled:
        row = rows[path]
        assert (
            row["true_label"] == row["patient_id"] == row["magnification"] == row["subtype"] == ""
        )
        assert row["predicted_label"] in ("benign", "malignant")


def test_scores_equal_a_plain_forward_pass_of_the_training_preprocessing(
    in_memory_run, scoring_inputs, tiny_export
):
    from model.network.model_card import load_exported_model

    model, card = load_exported_model(tiny_export)
    paths = scoring_inputs.scorable
    expected = model.predict(load_inputs(paths), verbose=0).reshape(-1)
    rows = {row["image_path"]: row for row in prediction_rows(str(in_memory_run.output_dir))}
    scores = np.array([float(rows[path]["p_malignant"]) for path in paths])

    np.testing.assert_allclose(scores, expected, atol=2e-6)
    assert scores.std() > 0.05, "the tiny model should give spread-out scores"
    for path, p in zip(paths, scores, strict=True):
        assert rows[path]["predicted_label"] == ("malignant" if p >= card.threshold else "benign")


def test_metrics_json_agrees_with_sklearn_on_predictions_csv(in_memory_run):
    report = read_json(str(in_memory_run.output_dir / "metrics.json"))
    threshold = report["threshold"]
    labelled = [row for row in prediction_rows(str(in_memory_run.output_dir)) if row["true_label"]]
    y = [label_index(row["true_label"]) for row in labelled]
    p = [float(row["p_malignant"]) for row in labelled]
    assert distinct_bins(p), "test data must not share score bins for exact AUC comparison"
    assert 0 < sum(y) < len(y)

    assert_metrics_close(
        report["image_level"]["pooled"], sklearn_metrics(y, p, threshold), "pooled"
    )
    by_magnification = collections.defaultdict(list)
    for row in labelled:
        by_magnification[row["magnification"]].append(row)
    assert (
        set(report["image_level"]["by_magnification"]) == set(by_magnification) == {"40X", "100X"}
    )
    for magnification, rows in by_magnification.items():
        expected = sklearn_metrics(
            [label_index(r["true_label"]) for r in rows],
            [float(r["p_malignant"]) for r in rows],
            threshold,
        )
        actual = report["image_level"]["by_magnification"][magnification]
        assert_metrics_close(actual, expected, magnification)

    patients = collections.defaultdict(list)
    for row in labelled:
        patients[row["patient_id"]].append(row)
    patient_y = [label_index(rows[0]["true_label"]) for rows in patients.values()]
    patient_p = [np.mean([float(r["p_malignant"]) for r in rows]) for rows in patients.values()]
    assert_metrics_close(
        report["patient_level"]["pooled"],
        sklearn_metrics(patient_y, patient_p, threshold),
        "patient level",
    )
    recognition = np.mean(
        [
            np.mean(
                [
                    (float(r["p_malignant"]) >= threshold) == (r["true_label"] == "malignant")
                    for r in rows
                ]
            )
            for rows in patients.values()
        ]
    )
    assert report["image_level"]["pooled"]["patient_recognition_rate"] == pytest.approx(recognition)
    assert report["counts"]["images"] == len(labelled)
    assert report["counts"]["patients"] == len(patients) == 5
    # The pooled reliability bins: every labelled image once, and the ECE they add up to.
    bins = report["reliability"]["pooled"]
    assert sum(b["count"] for b in bins) == len(labelled)
    gaps = sum(b["count"] * abs(b["mean_p"] - b["fraction_malignant"]) for b in bins if b["count"])
    assert gaps / len(labelled) == pytest.approx(report["image_level"]["pooled"]["ece"], abs=1e-9)


def test_patients_csv_summarises_each_patient(in_memory_run):
    labelled = [row for row in prediction_rows(str(in_memory_run.output_dir)) if row["true_label"]]
    patients = {
        row["patient_id"]: row for row in read_csv(str(in_memory_run.output_dir / "patients.csv"))
    }
    grouped = collections.defaultdict(list)
    for row in labelled:
        grouped[row["patient_id"]].append(row)
    assert set(patients) == set(grouped)
    for patient_id, rows in grouped.items():
        summary = patients[patient_id]
        correct = sum(r["predicted_label"] == r["true_label"] for r in rows)
        malignant_votes = sum(r["predicted_label"] == "malignant" for r in rows)
        assert int(summary["images"]) == len(rows)
        assert int(summary["correct"]) == correct
        assert summary["true_label"] == rows[0]["true_label"]
        assert float(summary["mean_p_malignant"]) == pytest.approx(
            np.mean([float(r["p_malignant"]) for r in rows]), abs=1e-6
        )
        assert summary["majority_prediction"] == (
            "malignant" if 2 * malignant_votes >= len(rows) else "benign"
        )
        assert summary["called_both_ways"] == str(0 < malignant_votes < len(rows))
    assert any(row["called_both_ways"] == "True" for row in patients.values())


def _expected_overlays(model_dir: str, paths: list[str], tta: int = 1, scale=None) -> list:
    """Each image's overlay drawn directly: its Grad-CAM map, scaled, blended on the original."""
    from model.image.overlay import overlay_heatmap, scale_heatmap
    from model.image.preprocessing import decode_image
    from model.network.gradcam import gradcam_model, predict_with_gradcam
    from model.network.model_card import load_exported_model

    model, card = load_exported_model(model_dir)
    grad_model = gradcam_model(model, card.last_conv_layer, card.logit_layer)
    maps = predict_with_gradcam(grad_model, load_inputs(paths), tta=tta).heatmaps
    return [
        overlay_heatmap(decode_image(pathlib.Path(path).read_bytes()), scale_heatmap(map_, scale))
        for path, map_ in zip(paths, maps, strict=True)
    ]


def test_one_heatmap_per_prediction_at_the_image_size(in_memory_run, scoring_inputs, tiny_export):
    output_dir = in_memory_run.output_dir
    rows = prediction_rows(str(output_dir))
    heatmap_dir = output_dir / "heatmaps"
    heatmap_paths = [row["heatmap_path"] for row in rows]

    assert len(set(heatmap_paths)) == len(rows)  # tile.png in folders a/ and b/ do not collide
    assert sorted(str(path) for path in heatmap_dir.iterdir()) == sorted(heatmap_paths)
    assert all(path.endswith(".jpg") for path in heatmap_paths)  # the default format
    expected = _expected_overlays(tiny_export, [row["image_path"] for row in rows])
    for row, overlay in zip(rows, expected, strict=True):
        assert pathlib.Path(row["heatmap_path"]).parent == heatmap_dir
        # At the original's size, the image coloured by its map (by none: the image as it is).
        assert_overlay_file_shows(row["heatmap_path"], overlay)


def test_plots_are_written_as_images(in_memory_run):
    for name in ("roc.png", "pr.png", "confusion_matrix.png", "reliability.png"):
        with Image.open(in_memory_run.output_dir / "plots" / name) as plot:
            assert plot.format == "PNG" and min(plot.size) > 200


def test_summary_counts_add_up(in_memory_run, scoring_inputs):
    summary = read_json(str(in_memory_run.output_dir / "summary.json"))
    rows = prediction_rows(str(in_memory_run.output_dir))

    assert summary["inputs_matched"] == len(scoring_inputs.matched)
    assert summary["inputs_matched"] == summary["scored"] + summary["failed"]
    assert summary["scored"] == len(rows) and summary["failed"] == len(scoring_inputs.broken)
    assert summary["predictions_per_class"] == dict(
        collections.Counter(row["predicted_label"] for row in rows)
    )
    assert summary["labelled_images"] == len(scoring_inputs.labelled + scoring_inputs.other_modes)
    assert summary["non_image_files_skipped"] == len(scoring_inputs.skipped)
    assert summary["model_id"] == "tiny-test" and summary["image_size"] == IMAGE_SIZE
    assert summary["runner"] == "DirectRunner" and summary["direct_running_mode"] == "in_memory"
    assert summary["wall_time_seconds"] > 0
    # An export from before test-time views and heatmap scales: one view, maps on their peaks.
    assert summary["tta"] == 1 and summary["heatmap_scale"] is None
    empty = collections.Counter(r["predicted_label"] for r in rows if float(r["heatmap_peak"]) == 0)
    assert summary["empty_heatmaps_per_class"] == {
        name: empty[name] for name in ("benign", "malignant")
    }
    assert summary["empty_heatmaps"] == sum(empty.values())
    assert {row["p_std"] for row in rows} == {"0.000000"}


def test_the_model_is_loaded_once_and_run_once_per_batch(in_memory_run, scoring_inputs):
    result = in_memory_run.result
    scorable = len(scoring_inputs.scorable)
    assert _distribution_count(result, "load_model_latency_milli_secs") == 1
    batches = _distribution_count(result, "inference_request_batch_size")
    assert batches < scorable  # batched, not one call per image
    found = result.metrics().query(MetricsFilter().with_name("num_inferences"))
    assert sum(item.committed for item in found["counters"]) == scorable


@pytest.mark.slow
def test_multi_processing_runs_give_the_same_rows_in_shards(
    tmp_path, scoring_inputs, tiny_export, in_memory_run, capfd
):
    from model.image.overlay import heatmap_peaks
    from model.network.gradcam import gradcam_model, predict_with_gradcam
    from model.network.model_card import load_exported_model

    output_dir = tmp_path / "out"
    result = run_scoring(
        [
            "--input",
            os.path.join(scoring_inputs.root, "**"),
            "--model_dir",
            tiny_export,
            "--output_dir",
            str(output_dir),
            "--batch_size",
            "4",
            "--num_shards",
            "2",
            "--direct_num_workers",
            "2",
            "--direct_running_mode",
            "multi_processing",
            "--review_limit",
            "3",
            "--tta",
            "2",
        ]
    )
    shards = sorted(path.name for path in output_dir.glob("predictions*.csv"))
    assert shards == ["predictions-00000-of-00002.csv", "predictions-00001-of-00002.csv"]
    for shard in shards:
        assert read_header(str(output_dir / shard)) == list(PREDICTION_COLUMNS)

    expected = {row["image_path"]: row for row in prediction_rows(str(in_memory_run.output_dir))}
    rows = {row["image_path"]: row for row in prediction_rows(str(output_dir))}
    assert set(rows) == set(expected)
    # Two views in worker processes: p, p_std and the map peak are those computed directly.
    model, card = load_exported_model(tiny_export)
    paths = sorted(rows)
    direct = predict_with_gradcam(
        gradcam_model(model, card.last_conv_layer, card.logit_layer), load_inputs(paths), tta=2
    )
    peaks = heatmap_peaks(direct.heatmaps)
    assert direct.p_std.max() > 0
    for path, p, spread, peak in zip(paths, direct.p_malignant, direct.p_std, peaks, strict=True):
        row = rows[path]
        assert float(row["p_malignant"]) == pytest.approx(float(p), abs=2e-6)
        assert float(row["p_std"]) == pytest.approx(float(spread), abs=2e-6)
        assert float(row["heatmap_peak"]) == pytest.approx(float(peak), rel=1e-5, abs=1e-12)
    for path, row in rows.items():
        assert os.path.isfile(row["heatmap_path"])
        quality = ("qc_flags", "tissue_fraction", "focus_score", "stain_score")
        assert [row[key] for key in quality] == [expected[path][key] for key in quality]
    errors = read_csv(str(output_dir / "errors.csv"))
    assert sorted(row["image_path"] for row in errors) == scoring_inputs.broken
    summary = read_json(str(output_dir / "summary.json"))
    assert summary["inputs_matched"] == summary["scored"] + summary["failed"]
    assert summary["direct_running_mode"] == "multi_processing"
    assert summary["direct_num_workers"] == 2 and summary["tta"] == 2
    # The review queue combined across worker processes: the first 3 of the whole run's queue.
    assert assert_review_queue(str(output_dir), limit=3)["images_needing_review"] > 3
    assert 1 <= _distribution_count(result, "load_model_latency_milli_secs") <= 2
    # The worker processes, started with TF_CPP_MIN_LOG_LEVEL=2 as the launcher sets it without
    # -v, print none of TensorFlow's native start-up lines.
    assert TENSORFLOW_BANNER.findall(capfd.readouterr().err) == []


def test_no_gradcam_on_unlabelled_images_writes_predictions_only(
    tmp_path, scoring_inputs, tiny_export, in_memory_run
):
    output_dir = tmp_path / "out"
    argv = [
        "--input",
        os.path.join(scoring_inputs.root, "unlabelled", "**"),
        "--model_dir",
        tiny_export,
        "--output_dir",
        str(output_dir),
        "--no_gradcam",
    ]
    # Beam's run(argv, save_main_session, test_pipeline) contract: the given pipeline is used.
    score.run(argv, save_main_session=False, test_pipeline=test_pipeline.TestPipeline())
    rows = prediction_rows(str(output_dir))
    expected = {row["image_path"]: row for row in prediction_rows(str(in_memory_run.output_dir))}
    assert sorted(row["image_path"] for row in rows) == scoring_inputs.unlabelled
    for row in rows:
        assert row["heatmap_path"] == ""
        # Same model without the gradient tape: equal up to float32 rounding.
        assert float(row["p_malignant"]) == pytest.approx(
            float(expected[row["image_path"]]["p_malignant"]), abs=1e-5
        )
    assert not (output_dir / "heatmaps").exists()
    assert not (output_dir / "metrics.json").exists() and not (output_dir / "plots").exists()
    assert read_csv(str(output_dir / "errors.csv")) == []  # header only, still written
    assert read_header(str(output_dir / "errors.csv")) == ["image_path", "error_type", "message"]
    summary = read_json(str(output_dir / "summary.json"))
    assert summary["labelled_images"] == 0
    assert summary["empty_heatmaps"] is None and summary["heatmap_scale"] is None
    assert {row["heatmap_peak"] for row in rows} == {""} and summary["tta"] == 1


def test_main_exits_non_zero_when_too_many_inputs_fail_and_logs_progress(
    tmp_path, scoring_inputs, tiny_export, capsys, caplog
):
    argv = [
        "--input",
        os.path.join(scoring_inputs.root, "broken", "*.png"),
        scoring_inputs.labelled[0],
        "--model_dir",
        tiny_export,
        "--output_dir",
        str(tmp_path / "out"),
        "--no_gradcam",
        "--progress_interval",
        "0",
    ]
    with caplog.at_level(logging.INFO, logger="pipelines.scoring.progress"):
        code = score.main(argv + ["--max_error_fraction", "0.5"])
    assert code == score.EXIT_TOO_MANY_ERRORS
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: 3 of 4 inputs failed") and "\n" not in message

    progress = [
        record.getMessage() for record in caplog.records if "Progress" in record.getMessage()
    ]
    counts = [int(re.search(r"finished (\d+) of 4 matched", line)[1]) for line in progress]
    assert counts == [1, 2, 3, 4]

    # The same folder again: its earlier outputs are replaced, as --overwrite asks.
    assert score.main(argv + ["--max_error_fraction", "0.75", "--overwrite"]) == 0


def _tint(row: dict[str, str]) -> np.ndarray:
    """How far each overlay pixel is from the original's."""
    with Image.open(row["heatmap_path"]) as overlay, Image.open(row["image_path"]) as original:
        return np.abs(
            np.asarray(overlay, dtype=int) - np.asarray(original.convert("RGB"), dtype=int)
        )


@pytest.mark.slow
def test_a_card_with_eval_tta_and_a_heatmap_scale_sets_the_runs_views_and_colours(
    tmp_path, scoring_inputs, tiny_export
):
    from model.image.overlay import heatmap_peaks
    from model.network.gradcam import gradcam_model, predict_with_gradcam
    from model.network.model_card import load_exported_model

    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    card = json.loads((export / "model_card.json").read_text())
    scale = 0.5
    (export / "model_card.json").write_text(
        json.dumps({**card, "eval_tta": 4, "heatmap_scale": scale})
    )
    output_dir = tmp_path / "out"
    paths = scoring_inputs.labelled[:6]
    run_scoring(
        ["--input", *paths, "--model_dir", str(export), "--output_dir", str(output_dir)]
        + ["--batch_size", "4"]
    )
    summary = read_json(str(output_dir / "summary.json"))
    assert summary["tta"] == 4 and summary["heatmap_scale"] == scale

    model, _ = load_exported_model(str(export))
    expected = predict_with_gradcam(gradcam_model(model), load_inputs(paths), tta=4)
    rows = {row["image_path"]: row for row in prediction_rows(str(output_dir))}
    peaks = heatmap_peaks(expected.heatmaps)
    for path, p, spread, peak in zip(
        paths, expected.p_malignant, expected.p_std, peaks, strict=True
    ):
        row = rows[path]
        assert float(row["p_malignant"]) == pytest.approx(float(p), abs=2e-6)
        assert float(row["p_std"]) == pytest.approx(float(spread), abs=2e-6) and spread > 0
        assert float(row["heatmap_peak"]) == pytest.approx(float(peak), rel=1e-5)
    # The overlays are drawn on the card's scale from the views' mean map.
    for path, overlay in zip(paths, _expected_overlays(str(export), paths, 4, scale), strict=True):
        assert_overlay_file_shows(rows[path]["heatmap_path"], overlay)
    strongest, weakest = np.argmax(peaks), np.argmin(peaks)
    assert peaks[weakest] < 0.8 * peaks[strongest], "the test needs maps of different strength"

    assert _tint(rows[paths[weakest]]).mean() < _tint(rows[paths[strongest]]).mean()


@pytest.mark.slow
@pytest.mark.parametrize("heatmap_format", ["png", "none"])
def test_the_heatmap_format_changes_only_the_overlay_files(
    tmp_path, scoring_inputs, tiny_export, in_memory_run, heatmap_format
):
    output_dir = tmp_path / "out"
    run_scoring(
        mixed_inputs_argv(
            scoring_inputs, tiny_export, output_dir, "--heatmap_format", heatmap_format
        )
    )
    jpeg_dir = in_memory_run.output_dir  # the same run in the default format, JPEG
    expected = {row["image_path"]: row for row in prediction_rows(str(jpeg_dir))}
    rows = {row["image_path"]: row for row in prediction_rows(str(output_dir))}
    assert set(rows) == set(expected)
    for path, row in rows.items():
        jpeg_row = expected[path]
        assert {k: v for k, v in row.items() if k != "heatmap_path"} == {
            k: v for k, v in jpeg_row.items() if k != "heatmap_path"
        }
        if heatmap_format == "none":
            assert row["heatmap_path"] == "" and float(row["heatmap_peak"]) >= 0
        else:
            assert (
                row["heatmap_path"]
                == str(output_dir / "heatmaps")
                + jpeg_row["heatmap_path"][len(str(jpeg_dir / "heatmaps")) : -len(".jpg")]
                + ".png"
            )
    errors = [(e["image_path"], e["error_type"]) for e in read_csv(str(output_dir / "errors.csv"))]
    jpeg_errors = read_csv(str(jpeg_dir / "errors.csv"))
    assert sorted(errors) == sorted((e["image_path"], e["error_type"]) for e in jpeg_errors)
    for name in ("metrics.json", "patients.csv"):
        assert (output_dir / name).read_text() == (jpeg_dir / name).read_text(), name
    review = read_csv(str(output_dir / "review.csv"))
    jpeg_review = read_csv(str(jpeg_dir / "review.csv"))
    assert [{**r, "heatmap_path": ""} for r in review] == [
        {**r, "heatmap_path": ""} for r in jpeg_review
    ]
    assert all(r["heatmap_path"] == rows[r["image_path"]]["heatmap_path"] for r in review)
    summary = read_json(str(output_dir / "summary.json"))
    jpeg_summary = read_json(str(jpeg_dir / "summary.json"))
    assert summary["heatmap_format"] == heatmap_format and jpeg_summary["heatmap_format"] == "jpeg"
    assert summary["empty_heatmaps_per_class"] == jpeg_summary["empty_heatmaps_per_class"]
    report = (output_dir / "report.html").read_text(encoding="utf-8")
    if heatmap_format == "none":
        assert not (output_dir / "heatmaps").exists()
        assert "--heatmap_format none: no overlay files" in report
    else:
        overlays = sorted(str(path) for path in (output_dir / "heatmaps").iterdir())
        assert overlays == sorted(row["heatmap_path"] for row in rows.values())
        assert "heatmaps/" in report and ".png" in report


def test_an_unknown_heatmap_format_or_model_copies_below_1_stops_the_job(
    tmp_path, scoring_inputs, tiny_export, capsys
):
    argv = ["--input", *scoring_inputs.labelled[:1], "--model_dir", tiny_export]
    argv += ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stopped:
        score.main([*argv, "--heatmap_format", "gif"])
    assert stopped.value.code == score.EXIT_LAUNCH_ERROR
    assert "invalid choice: 'gif' (choose from 'jpeg', 'png', 'none')" in capsys.readouterr().err
    assert score.main([*argv, "--model_copies", "0"]) == score.EXIT_LAUNCH_ERROR
    error = capsys.readouterr().err
    assert error == "error: --model_copies must be at least 1, got 0\n"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
