"""Launch checks: bad inputs, exports and output locations stop the job with one clear line."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil

import pytest

from pipelines import score
from pipelines.launch.checks import (
    LaunchError,
    check_inputs,
    check_output_dir,
    check_remote_locations,
)
from pipelines.launch.model_checks import check_model_export


def _main_error(argv, capsys) -> str:
    """Run main, assert the launch-error exit code, return the stderr it printed."""
    assert score.main(argv) == score.EXIT_LAUNCH_ERROR
    return capsys.readouterr().err


def _argv(inputs, model_dir, output_dir):
    return ["--input", *inputs, "--model_dir", str(model_dir), "--output_dir", str(output_dir)]


def test_a_pattern_that_matches_nothing_stops_the_job(tmp_path, tiny_export, capsys):
    pattern = str(tmp_path / "nowhere" / "*.png")
    error = _main_error(_argv([pattern], tiny_export, tmp_path / "out"), capsys)
    assert error == f"error: --input {pattern!r} matches no file\n"
    assert not (tmp_path / "out").exists()  # checked before the output folder is touched


def test_a_pattern_matching_only_non_images_stops_the_job(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LaunchError, match="matches 1 files but no image"):
        check_inputs([str(tmp_path / "*")], str(tmp_path / "out"))


def test_manifest_problems_are_named(tmp_path):
    with pytest.raises(LaunchError, match="does not exist"):
        check_inputs([str(tmp_path / "missing.csv")], str(tmp_path / "out"))
    wrong_column = tmp_path / "wrong.csv"
    wrong_column.write_text("path\nx.png\n")
    with pytest.raises(LaunchError, match="no 'image_path' column"):
        check_inputs([str(wrong_column)], str(tmp_path / "out"))
    empty = tmp_path / "empty.csv"
    empty.write_text("image_path\n")
    with pytest.raises(LaunchError, match="lists no images"):
        check_inputs([str(empty)], str(tmp_path / "out"))


def test_a_missing_model_dir_stops_the_job(tmp_path, scoring_inputs, capsys):
    missing = tmp_path / "no_model"
    error = _main_error(_argv([scoring_inputs.labelled[0]], missing, tmp_path / "out"), capsys)
    assert error == f"error: --model_dir {missing} does not exist\n"


def test_an_incomplete_export_names_the_missing_files(tmp_path, tiny_export):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_export, partial)
    os.remove(partial / "model.keras")
    with pytest.raises(LaunchError, match="missing model.keras"):
        check_model_export(str(partial))


def test_a_card_this_scorer_cannot_honour_is_rejected(tmp_path, tiny_export):
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    card_path = export / "model_card.json"
    card = json.loads(card_path.read_text())
    card["preprocessing"]["normalization"] = "imagenet_torch"
    card_path.write_text(json.dumps(card))
    with pytest.raises(LaunchError, match="normalisation 'imagenet_torch'"):
        check_model_export(str(export))
    card_path.write_text("{not json")
    with pytest.raises(LaunchError, match="unreadable model_card.json"):
        check_model_export(str(export))


def test_the_card_configures_image_size_and_threshold(tiny_export):
    card = check_model_export(tiny_export)
    assert (card.image_size, card.threshold, card.model_id) == (32, 0.5, "tiny-test")


def test_an_output_location_that_cannot_be_written_stops_the_job(
    tmp_path, scoring_inputs, tiny_export, capsys
):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    error = _main_error(_argv([scoring_inputs.labelled[0]], tiny_export, a_file), capsys)
    assert error == f"error: --output_dir {a_file} is a file, not a folder\n"
    with pytest.raises(LaunchError, match="cannot be created"):
        check_output_dir(str(a_file / "below_a_file"), overwrite=False)


def test_a_writable_output_location_is_created_and_left_clean(tmp_path):
    output_dir = tmp_path / "new" / "out"
    check_output_dir(str(output_dir), overwrite=False)
    assert output_dir.is_dir() and list(output_dir.iterdir()) == []


def test_dataflow_refuses_local_paths():
    with pytest.raises(LaunchError, match="use gs:// for: /data/x"):
        check_remote_locations("DataflowRunner", ["gs://b/in/**", "/data/x"])
    check_remote_locations("DirectRunner", ["/data/x"])


def test_bad_numeric_flags_are_rejected(tmp_path, scoring_inputs, tiny_export, capsys):
    argv = _argv([scoring_inputs.labelled[0]], tiny_export, tmp_path / "out")
    assert "--batch_size must be at least 1" in _main_error(argv + ["--batch_size", "0"], capsys)
    error = _main_error(argv + ["--max_error_fraction", "1.5"], capsys)
    assert "--max_error_fraction must be in [0, 1]" in error
    error = _main_error(argv + ["--review_limit", "-1"], capsys)
    assert "--review_limit must be 0 (no review file) or more, got -1" in error


@pytest.mark.parametrize("views", ["3", "0", "16"])
def test_a_view_count_other_than_1_2_4_8_is_refused_in_one_line(
    tmp_path, scoring_inputs, tiny_export, capsys, views
):
    argv = _argv([scoring_inputs.labelled[0]], tiny_export, tmp_path / "out")
    error = _main_error(argv + ["--tta", views], capsys)
    assert error == f"error: --tta must be one of 1, 2, 4, 8, got {views}\n"
    assert not (tmp_path / "out").exists()  # refused before anything was written


def _resolved(argv, caplog):
    args, _ = score.parse_args(argv)
    with caplog.at_level(logging.WARNING, logger="pipelines.score"):
        config, _ = score.resolve_config(args, "DirectRunner")
    return config, caplog.text


def test_the_default_view_count_and_heatmap_scale_come_from_the_card(
    tmp_path, scoring_inputs, tiny_export, caplog
):
    old = _argv([scoring_inputs.labelled[0]], tiny_export, tmp_path / "old")
    config, warnings = _resolved(old, caplog)
    assert (config.tta, config.heatmap_scale) == (1, None)  # an export from before the fields
    assert "no heatmap_scale" in warnings
    caplog.clear()

    export = _export_with_card(tmp_path, tiny_export, eval_tta=4, heatmap_scale=0.25)
    argv = _argv([scoring_inputs.labelled[0]], export, tmp_path / "out")
    config, warnings = _resolved(argv, caplog)
    assert (config.tta, config.heatmap_scale) == (4, 0.25) and warnings == ""
    config, warnings = _resolved(argv + ["--tta", "8"], caplog)
    assert config.tta == 8  # the flag wins, with a warning about the threshold's views
    assert "--tta 8, but the model's threshold was chosen on p from 4 view(s)" in warnings


_DROP = object()  # a card change that removes the field


def _export_with_card(tmp_path, tiny_export, **changes) -> pathlib.Path:
    """A copy of the tiny export whose card has the given fields changed (None kept as null)."""
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    card_path = export / "model_card.json"
    card = json.loads(card_path.read_text())
    for key, value in changes.items():
        if value is _DROP:
            card.pop(key)
        else:
            card[key] = value
    card_path.write_text(json.dumps(card))
    return export


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": "abc"}, "threshold 'abc' (need a number in [0, 1])"),
        ({"threshold": None}, "threshold None (need a number in [0, 1])"),
        ({"threshold": True}, "threshold True (need a number in [0, 1])"),
        ({"threshold": 1.5}, "threshold 1.5 (need a number in [0, 1])"),
        ({"threshold": _DROP}, "no 'threshold'"),
        ({"class_names": None}, "class_names None, expected ['benign', 'malignant']"),
        ({"class_names": ["malignant", "benign"]}, "class_names ['malignant', 'benign']"),
        ({"preprocessing": None}, "preprocessing None (need an object)"),
        ({"image_size": "32"}, "image_size '32' (need an integer from 32 to 512)"),
        ({"image_size": False}, "image_size False (need an integer from 32 to 512)"),
        ({"image_size": 100000}, "image_size 100000 (need an integer from 32 to 512)"),
        ({"model_id": 7}, "model_id 7 (need a string)"),
        ({"last_conv_layer": None}, "last_conv_layer None (need a layer name)"),
        ({"eval_tta": 3}, "eval_tta 3 (need one of 1, 2, 4, 8)"),
        ({"eval_tta": "4"}, "eval_tta '4' (need one of 1, 2, 4, 8)"),
        ({"eval_tta": True}, "eval_tta True (need one of 1, 2, 4, 8)"),
        ({"heatmap_scale": 0}, "heatmap_scale 0 (need a number above 0, or null)"),
        ({"heatmap_scale": "big"}, "heatmap_scale 'big' (need a number above 0, or null)"),
    ],
)
def test_a_card_field_of_the_wrong_type_or_range_stops_the_job_in_one_line(
    tmp_path, scoring_inputs, tiny_export, capsys, changes, message
):
    export = _export_with_card(tmp_path, tiny_export, **changes)
    error = _main_error(_argv([scoring_inputs.labelled[0]], export, tmp_path / "out"), capsys)
    assert error.startswith(f"error: --model_dir {export}: model card has ")
    assert message in error and error.count("\n") == 1 and "Traceback" not in error


def test_a_non_finite_threshold_is_refused(tmp_path, tiny_export):
    export = _export_with_card(tmp_path, tiny_export)
    card_path = export / "model_card.json"
    card_path.write_text(card_path.read_text().replace('"threshold": 0.5', '"threshold": NaN'))
    with pytest.raises(LaunchError, match=r"threshold nan \(need a number in \[0, 1\]\)"):
        check_model_export(str(export))


def test_a_card_image_size_other_than_the_models_input_is_refused(tmp_path, tiny_export):
    export = _export_with_card(tmp_path, tiny_export, image_size=64)
    with pytest.raises(LaunchError, match="image_size 64 but model.keras takes 32 x 32 x 3"):
        check_model_export(str(export))


@pytest.mark.parametrize("field", ["last_conv_layer", "logit_layer"])
def test_a_gradcam_layer_the_model_lacks_is_refused_unless_gradcam_is_off(
    tmp_path, tiny_export, field
):
    export = _export_with_card(tmp_path, tiny_export, **{field: "block9_conv9"})
    with pytest.raises(LaunchError, match=f"{field} 'block9_conv9' names no layer of model.keras"):
        check_model_export(str(export))
    assert check_model_export(str(export), gradcam=False).model_id == "tiny-test"


def test_a_model_file_that_is_not_a_keras_archive_is_refused(tmp_path, tiny_export):
    export = _export_with_card(tmp_path, tiny_export)
    (export / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(LaunchError, match="model.keras cannot be read .not a Keras archive"):
        check_model_export(str(export))
