"""Input quality control in the scorer: measures and flags per row, counts, QC-clean metrics."""

from __future__ import annotations

import collections
import json
import pathlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from model.constants import MODEL_CARD_FILE
from model.evaluation.evaluate import evaluate
from model.evaluation.labels import label_index
from model.image.preprocessing import measure_image
from model.image.quality import (
    QC_FLAGS,
    UNEXPECTED_SIZE,
    SizeRange,
    format_flags,
    parse_flags,
    quality_flags,
)
from pipelines.launch.checks import LaunchError
from pipelines.launch.model_checks import check_model_export
from tests.pipelines.conftest import run_scoring
from tests.pipelines.helpers import prediction_rows, read_json

MEASURE_COLUMNS = ("tissue_fraction", "focus_score", "stain_score")


def _measures_and_flags(row: dict[str, str]) -> tuple[tuple[float, ...], str]:
    return tuple(float(row[column]) for column in MEASURE_COLUMNS), row["qc_flags"]


def _labelled_records(rows) -> list[dict]:
    return [
        {
            "label": label_index(row["true_label"]),
            "p_malignant": float(row["p_malignant"]),
            "patient_id": row["patient_id"],
            "magnification": row["magnification"],
        }
        for row in rows
        if row["true_label"]
    ]


def test_every_prediction_carries_its_files_measures_and_flags(in_memory_run):
    rows = prediction_rows(str(in_memory_run.output_dir))
    for row in rows:
        measures = measure_image(pathlib.Path(row["image_path"]).read_bytes())
        expected = (measures.tissue_fraction, measures.focus_score, measures.stain_score)
        # The tiny export's card records no training sizes: no size check.
        assert _measures_and_flags(row) == (expected, format_flags(quality_flags(measures, None)))
    flagged = [row for row in rows if row["qc_flags"]]
    assert 0 < len(flagged) < len(rows), "the shared inputs should hold clean and flagged images"


def test_summary_counts_each_flag_and_the_clean_images(in_memory_run):
    rows = prediction_rows(str(in_memory_run.output_dir))
    quality = read_json(str(in_memory_run.output_dir / "summary.json"))["quality_control"]
    counts = collections.Counter(flag for row in rows for flag in parse_flags(row["qc_flags"]))
    assert quality["flag_counts"] == {flag: counts[flag] for flag in QC_FLAGS}
    clean = sum(1 for row in rows if not row["qc_flags"])
    assert (quality["clean_images"], quality["flagged_images"]) == (clean, len(rows) - clean)
    assert quality["size_check"] is False


def test_metrics_report_the_qc_clean_images_as_the_full_report_over_them(in_memory_run):
    report = read_json(str(in_memory_run.output_dir / "metrics.json"))
    rows = prediction_rows(str(in_memory_run.output_dir))
    clean_rows = [row for row in rows if not row["qc_flags"]]
    clean_records = _labelled_records(clean_rows)
    assert 0 < len(clean_records) < len(_labelled_records(rows))
    expected = evaluate(clean_records, report["threshold"])
    clean = report["qc_clean"]
    assert clean["counts"] == expected["counts"]
    for level in ("image_level", "patient_level"):
        for key in ("accuracy", "sensitivity", "specificity", "roc_auc"):
            actual, wanted = clean[level]["pooled"][key], expected[level]["pooled"][key]
            assert actual == pytest.approx(wanted) if wanted is not None else actual is None
    assert set(clean["image_level"]["by_magnification"]) == set(
        expected["image_level"]["by_magnification"]
    )


@pytest.fixture(scope="module")
def sized_export(tmp_path_factory, tiny_export) -> str:
    """The tiny export with a card recording training images of 90-100 x 60-70 pixels."""
    export = tmp_path_factory.mktemp("sized_export") / "model"
    shutil.copytree(tiny_export, export)
    card_path = export / MODEL_CARD_FILE
    card = json.loads(card_path.read_text())
    card["training_image_sizes"] = SizeRange(90, 100, 60, 70, images=8).to_card()
    card_path.write_text(json.dumps(card))
    return str(export)


def test_the_cards_training_sizes_flag_other_sizes_and_flagged_images_are_still_scored(
    tmp_path, scoring_inputs, sized_export
):
    inputs = tmp_path / "in" / "SOB_B_A_22-90001" / "40X"
    inputs.mkdir(parents=True)
    for path in scoring_inputs.labelled[:3]:  # 96 x 64 tiles: the training size
        shutil.copy(path, inputs)
    tile = np.asarray(Image.open(scoring_inputs.labelled[0]).convert("RGB"))
    odd = {
        "SOB_B_A-22-90001-40-901.png": Image.new("RGB", (1, 1), (200, 120, 180)),
        "SOB_B_A-22-90001-40-902.png": Image.fromarray(np.tile(tile, (4, 4, 1))),  # 384 x 256
    }
    for name, image in odd.items():
        image.save(inputs / name)
    output_dir = tmp_path / "out"
    run_scoring(
        ["--input", str(tmp_path / "in"), "--model_dir", sized_export]
        + ["--output_dir", str(output_dir), "--batch_size", "4"]
    )
    rows = {pathlib.Path(row["image_path"]).name: row for row in prediction_rows(str(output_dir))}
    assert len(rows) == 5
    for name, row in rows.items():
        flagged = UNEXPECTED_SIZE in parse_flags(row["qc_flags"])
        assert flagged == (name in odd), name
        assert 0.0 <= float(row["p_malignant"]) <= 1.0 and row["heatmap_path"]
    summary = read_json(str(output_dir / "summary.json"))
    assert summary["quality_control"]["size_check"] is True
    assert summary["quality_control"]["flag_counts"][UNEXPECTED_SIZE] == 2
    assert summary["expected_image_sizes"]["width"] == {"min": 90, "max": 100}
    metrics = read_json(str(output_dir / "metrics.json"))
    clean = sum(1 for row in rows.values() if not row["qc_flags"])
    assert 0 < clean < 5
    assert metrics["counts"]["images"] == 5 and metrics["qc_clean"]["counts"]["images"] == clean


def test_a_malformed_size_record_in_the_card_stops_the_launch(tmp_path, tiny_export):
    export = tmp_path / "model"
    shutil.copytree(tiny_export, export)
    card_path = export / MODEL_CARD_FILE
    card = json.loads(card_path.read_text())
    card["training_image_sizes"] = {"width": {"min": 700, "max": 500}}
    card_path.write_text(json.dumps(card))
    with pytest.raises(LaunchError, match="training_image_sizes"):
        check_model_export(str(export))


def test_the_scoring_report_shows_each_flags_count_and_the_qc_clean_metrics(in_memory_run):
    html = (in_memory_run.output_dir / "report.html").read_text()
    quality = read_json(str(in_memory_run.output_dir / "summary.json"))["quality_control"]
    shown_counts = dict(re.findall(r'data-quality-flag="(\w+)">(\d+)<', html))
    assert shown_counts == {flag: str(count) for flag, count in quality["flag_counts"].items()}
    metrics = read_json(str(in_memory_run.output_dir / "metrics.json"))
    shown = dict(re.findall(r'data-metric="(qc_clean\.[\w.]+)">([^<]*)<', html))
    clean_images = metrics["qc_clean"]["counts"]["images"]
    assert shown["qc_clean.counts.images"] == str(clean_images)
    accuracy = metrics["qc_clean"]["image_level"]["pooled"]["accuracy"]
    assert shown["qc_clean.image_level.pooled.accuracy"] == f"{accuracy:.4f}"
    assert html.index('id="quality"') < html.index('id="plots"')
