"""report.html of a scoring run: bounded gallery selection and the rendered page."""

from __future__ import annotations

import csv
import json
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from model.reports.html_report import select_gallery
from pipelines.reporting.report_html import GalleryFn
from pipelines.scoring.rows import ScoredImage
from tests.browser import broken_images, find_chromium, inspect_page


def _records(count: int, seed: int = 0) -> list[ScoredImage]:
    rng = random.Random(seed)
    records = []
    for index in range(count):
        p = round(rng.random(), 6)
        true_label = rng.choice(["benign", "malignant", ""])
        records.append(
            ScoredImage(
                image_path=f"/images/{index:05d}.png",
                p_malignant=p,
                predicted_label="malignant" if p >= 0.5 else "benign",
                true_label=true_label,
                patient_id="",
                magnification="",
                subtype="",
                heatmap_path=f"/out/heatmaps/{index:05d}.png",
            )
        )
    return records


def test_gallery_combiner_keeps_exactly_what_a_full_sort_would_pick():
    records = _records(2000)
    rows = [r._asdict() for r in records]
    expected_picks = select_gallery(rows, 3, 5)
    expected = [
        (category, [row["image_path"] for row in expected_picks[category]])
        for category in expected_picks
    ]
    with TestPipeline() as pipeline:
        picked = (
            pipeline
            | beam.Create(records, reshuffle=True)
            # Small caps make the combiner prune many times along the way.
            | beam.CombineGlobally(GalleryFn(per_category=3, max_misclassified=5))
            | beam.FlatMap(
                lambda result: [
                    (category, [row["image_path"] for row in rows])
                    for category, rows in result[0].items()
                ]
            )
        )
        assert_that(picked, equal_to(expected), label="CheckPicks")


def test_gallery_combiner_counts_every_row_once():
    records = _records(500, seed=1)
    misclassified = sum(1 for r in records if r.true_label and r.true_label != r.predicted_label)
    with TestPipeline() as pipeline:
        totals = (
            pipeline
            | beam.Create(records)
            | beam.CombineGlobally(GalleryFn(per_category=2, max_misclassified=2))
            | beam.Map(lambda result: (sum(result[1].values()), result[1]["misclassified"]))
        )
        assert_that(totals, equal_to([(500, misclassified)]), label="CheckTotals")


def test_scoring_report_lists_the_run_and_its_gallery(in_memory_run):
    html = (in_memory_run.output_dir / "report.html").read_text()
    summary = json.loads((in_memory_run.output_dir / "summary.json").read_text())
    assert "scoring run" in html
    assert f">{summary['inputs_matched']}<" in html
    with open(in_memory_run.output_dir / "errors.csv") as handle:
        for row in csv.DictReader(handle):
            assert row["error_type"] in html
    assert "heatmaps/" in html and "report_assets/" in html


@pytest.mark.slow
def test_scoring_report_renders_with_every_image_and_the_metrics_json_numbers(in_memory_run):
    if find_chromium() is None:
        pytest.skip("no Chromium binary to render the report")
    metrics = json.loads((in_memory_run.output_dir / "metrics.json").read_text())
    page = inspect_page(str(in_memory_run.output_dir / "report.html"))
    assert len(page["images"]) >= 5  # three plots plus gallery pairs
    assert not broken_images(page)
    pooled = metrics["image_level"]["pooled"]
    for name in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc"):
        value = pooled[name]
        expected = "n/a" if value is None else f"{value:.4f}"
        assert page["metrics"][f"image_level.pooled.{name}"] == expected, name
    patients = metrics["patient_level"]["pooled"]["accuracy"]
    assert page["metrics"]["patient_level.pooled.accuracy"] == f"{patients:.4f}"
