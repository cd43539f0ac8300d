"""Combiners: streaming summaries and patient tallies reproduce the exact evaluation."""

from __future__ import annotations

import collections
import copy
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from model.evaluation.evaluate import evaluate, patient_rows_from_records, report_from_summaries
from model.evaluation.metrics import binary_metrics
from model.image.quality import (
    LOW_TISSUE,
    NOT_HE_STAINED,
    OUT_OF_FOCUS,
    UNEXPECTED_SIZE,
    format_flags,
)
from pipelines.reporting.aggregates import (
    ComputeMetrics,
    ImageSummariesFn,
    MetricsInputs,
    OutcomeCountsFn,
    PatientTallyFn,
    patient_keys,
    patient_row,
)
from pipelines.reporting.report_writer import write_metrics
from pipelines.scoring.rows import scored_image
from tests.model.evaluation.test_metrics import summary_state

THRESHOLD = 0.4


def _records(count: int = 60, seed: int = 7):
    """ScoredImages of 6 patients at two magnifications, plus unlabelled ones, distinct scores."""
    rng = np.random.default_rng(seed)
    scores = rng.permutation(np.linspace(0.01, 0.99, count))  # distinct, 1/60 apart
    records = []
    for index, p in enumerate(scores):
        malignant = index % 6 >= 3
        patient = f"14-{1000 + index % 6}"
        magnification = ("40", "100")[index % 2]
        label, code = ("M", "DC") if malignant else ("B", "A")
        path = f"/d/SOB_{label}_{code}-{patient}-{magnification}-{index:03d}.png"
        records.append(scored_image(path, float(p), THRESHOLD, ""))
    records.append(scored_image("/d/unlabelled.png", 0.9, THRESHOLD, ""))
    return records


def _as_evaluation_records(records):
    return [
        {
            "label": int(r.true_label == "malignant"),
            "p_malignant": r.p_malignant,
            "patient_id": r.patient_id,
            "magnification": r.magnification,
        }
        for r in records
        if r.true_label
    ]


def _assert_reports_match(streaming: dict, exact: dict, path: str = "") -> None:
    """Streaming and exact reports agree everywhere (AUCs within histogram resolution)."""
    if isinstance(exact, dict):
        assert set(streaming) == set(exact), path
        for key in exact:
            _assert_reports_match(streaming[key], exact[key], f"{path}/{key}")
    elif isinstance(exact, float):
        assert streaming == pytest.approx(exact, abs=1e-9), path
    else:
        assert streaming == exact, path


def test_streaming_report_equals_the_exact_evaluation():
    records = _records()
    expected = evaluate(_as_evaluation_records(records), THRESHOLD)

    def check(outputs):
        (inputs,) = outputs
        report = report_from_summaries(inputs.image_summaries, inputs.patient_rows, THRESHOLD)
        _assert_reports_match(report, expected)

    with test_pipeline.TestPipeline() as pipeline:
        metrics_inputs = pipeline | beam.Create(records) | ComputeMetrics(THRESHOLD)
        assert_that(metrics_inputs, check)


def test_image_summaries_merge_like_one_pass_without_touching_later_accumulators():
    records = [r for r in _records() if r.true_label]
    combine = ImageSummariesFn(THRESHOLD)
    parts = []
    for chunk in (records[:10], records[10:35], records[35:]):
        accumulator = combine.create_accumulator()
        for record in chunk:
            accumulator = combine.add_input(accumulator, record)
        parts.append(accumulator)
    later = copy.deepcopy(parts[1:])
    merged = combine.extract_output(combine.merge_accumulators(parts))

    for before, after in zip(later, parts[1:], strict=True):
        assert set(before) == set(after)
        for key in before:
            assert summary_state(before[key]) == summary_state(after[key]), "merge mutated"
    y = [int(r.true_label == "malignant") for r in records]
    p = [r.p_malignant for r in records]
    exact = binary_metrics(y, p, THRESHOLD)
    pooled = merged["pooled"].metrics()
    assert pooled["confusion_matrix"] == exact["confusion_matrix"]
    assert pooled["roc_auc"] == pytest.approx(exact["roc_auc"], abs=1e-12)
    assert pooled["brier"] == pytest.approx(exact["brier"], abs=1e-12)
    assert merged["40X"].n + merged["100X"].n == merged["pooled"].n == len(records)


def test_summary_memory_does_not_grow_with_images():
    combine = ImageSummariesFn(THRESHOLD)
    small, large = combine.create_accumulator(), combine.create_accumulator()
    records = [r for r in _records() if r.true_label]
    for record in records[:2]:
        small = combine.add_input(small, record)
    for _ in range(20):
        for record in records:
            large = combine.add_input(large, record)
    assert large["pooled"].n == 20 * len(records)
    size = {
        name: sum(s.positive_counts.nbytes + s.negative_counts.nbytes for s in acc.values())
        for name, acc in (("small", small), ("large", large))
    }
    assert size["small"] == size["large"]


def test_patient_tallies_match_the_exact_patient_rows():
    records = _records()
    expected = patient_rows_from_records(_as_evaluation_records(records), THRESHOLD)
    expected_rows = sorted(
        (
            r["patient_id"],
            r["magnification"] or "",
            r["label"],
            r["images"],
            r["correct"],
            round(r["sum_p"], 9),
        )
        for r in expected
    )

    def as_tuple(row):
        return (
            row["patient_id"],
            row["magnification"] or "",
            row["label"],
            row["images"],
            row["correct"],
            round(row["sum_p"], 9),
        )

    with test_pipeline.TestPipeline() as pipeline:
        rows = (
            pipeline
            | beam.Create([r for r in records if r.true_label])
            | beam.FlatMap(patient_keys)
            | beam.CombinePerKey(PatientTallyFn())
            | beam.Map(patient_row)
            | beam.Map(as_tuple)
        )
        assert_that(rows, equal_to(expected_rows))


def test_outcome_counts_cover_labelled_and_unlabelled_predictions_quality_flags_and_empty_maps():
    records = _records()
    # Every fifth image out of focus, every seventh also (or only) low on tissue. Peaks: none
    # (no Grad-CAM) for the first, then empty (0.0) for every third, else evidence.
    for index in range(len(records)):
        flags = [LOW_TISSUE] * (index % 7 == 0) + [OUT_OF_FOCUS] * (index % 5 == 0)
        peak = None if index == 0 else (0.0 if index % 3 == 0 else 0.01 * index)
        records[index] = records[index]._replace(qc_flags=format_flags(flags), heatmap_peak=peak)
    malignant = sum(r.predicted_label == "malignant" for r in records)
    empty = collections.Counter(r.predicted_label for r in records if r.heatmap_peak == 0.0)
    assert sum(empty.values()) > 0
    with test_pipeline.TestPipeline() as pipeline:
        counts = pipeline | beam.Create(records) | beam.CombineGlobally(OutcomeCountsFn())
        assert_that(
            counts,
            equal_to(
                [
                    {
                        "scored": len(records),
                        "labelled": len(records) - 1,
                        "benign": len(records) - malignant,
                        "malignant": malignant,
                        "qc_clean": sum(i % 7 != 0 and i % 5 != 0 for i in range(len(records))),
                        LOW_TISSUE: len(range(0, len(records), 7)),
                        NOT_HE_STAINED: 0,
                        OUT_OF_FOCUS: len(range(0, len(records), 5)),
                        UNEXPECTED_SIZE: 0,
                        "empty_heatmap_benign": empty["benign"],
                        "empty_heatmap_malignant": empty["malignant"],
                    }
                ]
            ),
        )


def test_no_labelled_image_gives_empty_summaries():
    with test_pipeline.TestPipeline() as pipeline:
        outputs = (
            pipeline
            | beam.Create([scored_image("/x/a.png", 0.2, THRESHOLD, "")])
            | ComputeMetrics(THRESHOLD)
            | beam.Map(lambda inputs: (inputs.image_summaries, inputs.patient_rows))
        )
        assert_that(outputs, equal_to([({}, [])]))


def test_metrics_json_has_a_null_qc_clean_block_when_no_labelled_image_is_clean(tmp_path):

    records = [record for record in _records() if record.true_label]
    combiner = ImageSummariesFn(THRESHOLD)
    summaries = combiner.create_accumulator()
    for record in records:
        combiner.add_input(summaries, record)
    rows = patient_rows_from_records(_as_evaluation_records(records), THRESHOLD)
    report = write_metrics(
        MetricsInputs(summaries, rows),
        str(tmp_path),
        THRESHOLD,
        clean_inputs=MetricsInputs({}, []),
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert report["qc_clean"] is None and written["qc_clean"] is None
    assert written["counts"]["images"] == len(records)
