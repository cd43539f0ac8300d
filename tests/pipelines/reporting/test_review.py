"""The review queue: reasons, priority order, the bounded combiner, review.csv and its page data."""

from __future__ import annotations

import collections
import math
import random
import re

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from model.evaluation.evaluate import PATIENT_COLUMNS, patient_table
from pipelines.reporting.aggregates import MetricsInputs
from pipelines.reporting.review import (
    NEAR_THRESHOLD,
    PATIENT_DISAGREEMENT,
    REVIEW_COLUMNS,
    REVIEW_FILE,
    UNCERTAIN,
    ReviewQueueFn,
    near_threshold_band,
    patient_calls,
    review_candidate,
    review_priority,
    write_review_csv,
)
from pipelines.reporting.review_report import needs_review_section
from pipelines.scoring.rows import ScoredImage
from tests.pipelines.helpers import assert_review_queue, read_csv, read_json

THRESHOLD = 0.5


def _record(
    path: str = "/images/a.png",
    p: float = 0.95,
    *,
    threshold: float = THRESHOLD,
    patient_id: str = "",
    p_std: float = 0.0,
    qc_flags: str = "",
) -> ScoredImage:
    labelled = bool(patient_id)
    return ScoredImage(
        image_path=path,
        p_malignant=p,
        predicted_label="malignant" if p >= threshold else "benign",
        true_label="malignant" if labelled else "",
        patient_id=patient_id,
        magnification="40X" if labelled else "",
        subtype="",
        heatmap_path=f"/out/heatmaps/{path.rsplit('/', 1)[-1]}",
        p_std=p_std,
        qc_flags=qc_flags,
    )


def _reasons(record: ScoredImage, calls=None, threshold: float = THRESHOLD) -> tuple[str, ...]:
    return review_candidate(record, threshold, calls or {}).reasons


# --- reasons -------------------------------------------------------------------------------


def test_the_near_threshold_band_is_odds_within_a_factor_of_one_and_a_half():
    assert near_threshold_band(0.5) == pytest.approx((0.4, 0.6))
    low, high = near_threshold_band(0.2)
    odds = lambda p: p / (1 - p)  # noqa: E731
    assert odds(high) / odds(0.2) == pytest.approx(1.5) and odds(0.2) / odds(low) == (
        pytest.approx(1.5)
    )


@pytest.mark.parametrize("threshold", [0.5, 0.23])
def test_near_threshold_fires_at_both_band_edges_and_not_one_step_outside(threshold):
    low, high = near_threshold_band(threshold)
    inside = [low, high, threshold, (low + threshold) / 2]
    outside = [math.nextafter(low, 0.0), math.nextafter(high, 1.0), 0.0, 1.0]
    for p in inside:
        assert _reasons(_record(p=p, threshold=threshold), threshold=threshold) == (
            NEAR_THRESHOLD,
        ), p
    for p in outside:
        assert _reasons(_record(p=p, threshold=threshold), threshold=threshold) == (), p


@pytest.mark.parametrize(("threshold", "p"), [(0.5, 0.7), (0.5, 0.35), (0.078, 0.1), (0.0, 0.0)])
def test_uncertain_fires_when_the_spread_reaches_the_threshold_and_never_at_tta_1(threshold, p):
    def reasons(p_std):
        found = _reasons(_record(p=p, threshold=threshold, p_std=p_std), threshold=threshold)
        return tuple(reason for reason in found if reason != NEAR_THRESHOLD)

    distance = abs(p - threshold)
    assert reasons(0.0) == ()  # --tta 1: one view, no spread, even at the threshold itself
    assert reasons(distance) == ()
    assert reasons(math.nextafter(distance, 1.0)) == (UNCERTAIN,)
    assert reasons(distance + 0.2) == (UNCERTAIN,)


def test_the_same_spread_is_uncertain_only_near_enough_to_the_threshold():
    # 0.03 is a wide spread for p = 0.1 at t = 0.078, and nothing for a call at p = 0.95.
    assert UNCERTAIN in _reasons(_record(p=0.1, threshold=0.078, p_std=0.03), threshold=0.078)
    assert _reasons(_record(p=0.95, threshold=0.078, p_std=0.03), threshold=0.078) == ()


def test_patient_disagreement_fires_when_the_call_differs_from_the_patients():
    calls = {"P1": "benign", "P2": "malignant"}
    assert _reasons(_record(p=0.9, patient_id="P1"), calls) == (PATIENT_DISAGREEMENT,)
    assert _reasons(_record(p=0.1, patient_id="P2"), calls) == (PATIENT_DISAGREEMENT,)
    assert _reasons(_record(p=0.9, patient_id="P2"), calls) == ()
    assert _reasons(_record(p=0.1, patient_id="P1"), calls) == ()


def test_an_unlabelled_image_never_gets_patient_disagreement():
    # An unlabelled image has no patient id; even a call map with an empty id cannot match it.
    calls = {"": "malignant", "P1": "malignant"}
    record = _record(p=0.1)
    assert record.patient_id == "" and record.true_label == ""
    assert _reasons(record, calls) == ()
    assert review_candidate(record, THRESHOLD, calls).patient_call == ""


def test_every_qc_flag_is_a_reason_as_is_and_comes_first():
    record = _record(p=0.55, patient_id="P1", qc_flags="low_tissue;out_of_focus")
    assert _reasons(record, {"P1": "benign"}) == (
        "low_tissue",
        "out_of_focus",
        PATIENT_DISAGREEMENT,
        NEAR_THRESHOLD,
    )
    assert _reasons(_record(qc_flags="not_he_stained")) == ("not_he_stained",)
    assert _reasons(_record(qc_flags="")) == ()


def test_patient_calls_are_the_majority_of_image_calls_from_the_pooled_tallies():
    def row(patient_id, magnification, images, predicted_malignant):
        return {
            "patient_id": patient_id,
            "magnification": magnification,
            "label": 1,
            "images": images,
            "correct": 0,
            "sum_p": 0.0,
            "predicted_malignant": predicted_malignant,
        }

    rows = [
        row("tie", None, 4, 2),  # ties go to malignant
        row("tie", "40X", 2, 0),  # per-magnification rows do not decide the call
        row("mostly_benign", None, 3, 1),
        row("mostly_malignant", None, 3, 2),
    ]
    calls = patient_calls(MetricsInputs({}, rows))
    assert calls == {"tie": "malignant", "mostly_benign": "benign", "mostly_malignant": "malignant"}
    # The same call patients.csv writes.
    table = [dict(zip(PATIENT_COLUMNS, values, strict=True)) for values in patient_table(rows, 0.5)]
    assert {r["patient_id"]: r["majority_prediction"] for r in table} == calls


def test_patients_csv_marks_patients_whose_images_are_called_both_ways():
    rows = [
        {
            "patient_id": patient_id,
            "magnification": None,
            "label": 0,
            "images": images,
            "correct": 0,
            "sum_p": 0.5 * images,
            "predicted_malignant": malignant,
        }
        for patient_id, images, malignant in (("mixed", 3, 1), ("benign", 3, 0), ("all", 2, 2))
    ]
    table = [dict(zip(PATIENT_COLUMNS, values, strict=True)) for values in patient_table(rows, 0.5)]
    assert {r["patient_id"]: r["called_both_ways"] for r in table} == {
        "mixed": True,
        "benign": False,
        "all": False,
    }


def test_the_training_reports_patient_table_marks_the_same_patients():
    import numpy as np

    from train_job.export.report import patient_table_rows

    split_rows = [
        {
            "image_path": f"/t/{patient}-{index}.png",
            "label": "benign",
            "slide_id": patient,
            "magnification": "40X",
        }
        for patient, count in (("mixed", 3), ("calm", 2))
        for index in range(count)
    ]
    p_malignant = np.array([0.9, 0.1, 0.2, 0.1, 0.3])
    table = patient_table_rows(split_rows, p_malignant, threshold=0.5)
    assert {row["patient_id"]: row["called_both_ways"] for row in table} == {
        "mixed": True,
        "calm": False,
    }


# --- priority order and the bounded combiner ----------------------------------------------


def test_the_priority_order_is_qc_then_disagreement_then_uncertain_then_near_threshold():
    calls = {"P1": "benign"}
    records = [
        _record("/i/near_far.png", 0.41),
        _record("/i/near_close.png", 0.52),
        _record("/i/uncertain_low.png", 0.7, p_std=0.25),
        _record("/i/uncertain_high.png", 0.7, p_std=0.3),
        _record("/i/dissent_weak.png", 0.55, patient_id="P1"),
        _record("/i/dissent_strong.png", 0.99, patient_id="P1"),
        _record("/i/qc_one.png", 0.99, qc_flags="low_tissue"),
        _record("/i/qc_two.png", 0.99, qc_flags="low_tissue;out_of_focus"),
        _record("/i/clean.png", 0.99),
        # Equal tier and equal order within it: the path decides.
        _record("/i/near_tie_b.png", 0.45),
        _record("/i/near_tie_a.png", 0.45),
    ]
    candidates = [review_candidate(record, THRESHOLD, calls) for record in records]
    ranked = sorted(
        (c for c in candidates if c.reasons), key=lambda c: review_priority(c, THRESHOLD)
    )
    assert [c.image_path.rsplit("/", 1)[-1] for c in ranked] == [
        "qc_two.png",
        "qc_one.png",
        "dissent_strong.png",
        "dissent_weak.png",  # also near the threshold: still a dissent, after the strong one
        "uncertain_high.png",
        "uncertain_low.png",
        "near_close.png",
        "near_tie_a.png",
        "near_tie_b.png",
        "near_far.png",
    ]


def _random_candidates(count: int, seed: int):
    """Candidates with many exact ties: few distinct scores, spreads, flags and patients."""
    rng = random.Random(seed)
    calls = {f"P{index}": rng.choice(["benign", "malignant"]) for index in range(5)}
    candidates = []
    for index in range(count):
        record = _record(
            f"/images/{rng.randrange(10**6):06d}-{index}.png",
            rng.choice([0.0, 0.05, 0.38, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.95, 1.0]),
            patient_id=rng.choice(["", "P0", "P1", "P2", "P3", "P4"]),
            p_std=rng.choice([0.0, 0.0, 0.05, 0.15, 0.15, 0.3]),
            qc_flags=rng.choice(["", "", "", "", "low_tissue", "low_tissue;out_of_focus"]),
        )
        candidates.append(review_candidate(record, THRESHOLD, calls))
    return candidates


def _combine(fn: ReviewQueueFn, parts):
    accumulators = []
    for part in parts:
        accumulator = fn.create_accumulator()
        for candidate in part:
            accumulator = fn.add_input(accumulator, candidate)
        accumulators.append(accumulator)
    return fn.extract_output(fn.merge_accumulators(accumulators))


@pytest.mark.parametrize("limit", [0, 1, 7, 50, 10_000])
def test_the_queue_keeps_exactly_the_first_rows_of_a_full_sort_with_ties(limit):
    candidates = _random_candidates(600, seed=limit)
    needing = [c for c in candidates if c.reasons]
    expected = sorted(needing, key=lambda c: review_priority(c, THRESHOLD))[:limit]
    ties = collections.Counter(review_priority(c, THRESHOLD)[:2] for c in needing)
    assert max(ties.values()) > 10  # the tie-break is exercised

    fn = ReviewQueueFn(limit, THRESHOLD)
    for seed in range(3):  # any split into bundles and any arrival order
        shuffled = list(candidates)
        random.Random(seed).shuffle(shuffled)
        cuts = sorted(random.Random(seed).sample(range(1, len(shuffled)), 4))
        parts = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
        queue = _combine(fn, parts)
        assert queue.candidates == expected
        assert queue.images == len(candidates) and queue.needing_review == len(needing)


def test_reason_counts_cover_every_image_not_only_the_kept_ones():
    candidates = _random_candidates(300, seed=1)
    queue = _combine(ReviewQueueFn(3, THRESHOLD), [candidates[:100], candidates[100:]])
    expected = collections.Counter(reason for c in candidates for reason in c.reasons)
    assert len(queue.candidates) == 3
    assert queue.reason_counts == dict(expected)
    assert sum(queue.reason_counts.values()) > 3 * 3
    # Every model reason is counted, even one that never fired.
    empty = ReviewQueueFn(3, THRESHOLD).extract_output(
        ReviewQueueFn(3, THRESHOLD).create_accumulator()
    )
    assert empty.reason_counts == {PATIENT_DISAGREEMENT: 0, UNCERTAIN: 0, NEAR_THRESHOLD: 0}


def test_the_accumulator_never_holds_more_than_the_limit():
    limit = 5
    fn = ReviewQueueFn(limit, THRESHOLD)
    candidates = [c for c in _random_candidates(2000, seed=2) if c.reasons]
    assert len(candidates) > 20 * limit
    accumulators = []
    for start in range(0, len(candidates), 400):
        accumulator = fn.create_accumulator()
        for candidate in candidates[start : start + 400]:
            accumulator = fn.add_input(accumulator, candidate)
            assert len(accumulator.kept) <= limit
        accumulators.append(accumulator)
    merged = fn.merge_accumulators(accumulators)
    assert len(merged.kept) == limit


def test_a_negative_limit_is_refused():
    with pytest.raises(ValueError, match="0 or more"):
        ReviewQueueFn(-1, THRESHOLD)


def test_the_queue_combines_the_same_through_beam():
    candidates = _random_candidates(200, seed=3)
    expected = sorted(
        (c for c in candidates if c.reasons), key=lambda c: review_priority(c, THRESHOLD)
    )[:10]
    with TestPipeline() as pipeline:
        queue = (
            pipeline
            | beam.Create(candidates, reshuffle=True)
            | beam.CombineGlobally(ReviewQueueFn(10, THRESHOLD))
        )
        assert_that(
            queue | beam.Map(lambda q: [c.image_path for c in q.candidates]),
            equal_to([[c.image_path for c in expected]]),
        )


# --- review.csv and the report's section ---------------------------------------------------


def _queue(limit: int, records, calls=None):
    fn = ReviewQueueFn(limit, THRESHOLD)
    candidates = [review_candidate(record, THRESHOLD, calls or {}) for record in records]
    return _combine(fn, [candidates])


def test_review_csv_lists_the_queue_ranked_with_its_columns(tmp_path):
    records = [
        _record("/data/a,b.png", 0.45),  # a comma in the path survives the CSV
        _record("/data/qc.png", 0.9, qc_flags="low_tissue;out_of_focus"),
        _record("/data/clean.png", 0.99),
    ]
    queue = _queue(10, records)
    path = write_review_csv(queue, str(tmp_path), 10)
    assert path == str(tmp_path / REVIEW_FILE)
    rows = read_csv(path)
    assert list(rows[0]) == list(REVIEW_COLUMNS)
    assert [(r["rank"], r["image_path"], r["reasons"]) for r in rows] == [
        ("1", "/data/qc.png", "low_tissue;out_of_focus"),
        ("2", "/data/a,b.png", NEAR_THRESHOLD),
    ]
    assert float(rows[1]["p_malignant"]) == 0.45 and rows[1]["predicted_label"] == "benign"
    assert rows[0]["qc_flags"] == "low_tissue;out_of_focus"
    assert rows[0]["heatmap_path"] == "/out/heatmaps/qc.png"


def test_a_review_limit_of_zero_writes_no_file_but_still_counts(tmp_path):
    queue = _queue(0, [_record(p=0.45), _record("/b.png", p=0.5)])
    assert write_review_csv(queue, str(tmp_path), 0) is None
    assert list(tmp_path.iterdir()) == []
    assert queue.needing_review == 2 and queue.reason_counts[NEAR_THRESHOLD] == 2


def test_no_image_to_review_gives_a_header_only_file(tmp_path):
    path = write_review_csv(_queue(10, [_record(p=0.99)]), str(tmp_path), 10)
    assert (tmp_path / REVIEW_FILE).read_text() == ",".join(REVIEW_COLUMNS) + "\n"
    assert path is not None


def test_the_needs_review_section_has_counts_and_the_first_items_with_overlays():
    records = [_record(f"/data/{index:02d}.png", 0.41 + index / 1000) for index in range(30)]
    records.append(_record("/data/qc.png", 0.99, qc_flags="low_tissue"))
    queue = _queue(25, records)
    section = needs_review_section(queue, gradcam=True, page_items=4)
    assert section["images"] == 31 and section["needing_review"] == 31
    assert section["reason_counts"] == {
        NEAR_THRESHOLD: 30,
        "low_tissue": 1,
        PATIENT_DISAGREEMENT: 0,
        UNCERTAIN: 0,
    }
    assert section["listed"] == 25 and section["full_list"] == REVIEW_FILE
    items = section["items"]
    assert [item["rank"] for item in items] == [1, 2, 3, 4]
    assert items[0]["image_path"] == "/data/qc.png" and items[0]["reasons"] == ["low_tissue"]
    assert items[0]["overlay_href"] == "heatmaps/qc.png"
    # Near-threshold images closest to 0.5 first: 0.439 (index 29), then 0.438 (index 28).
    assert [item["image_path"] for item in items[1:]] == [
        "/data/29.png",
        "/data/28.png",
        "/data/27.png",
    ]
    assert needs_review_section(queue, gradcam=False)["items"][0]["overlay_href"] is None


# --- through the pipeline -----------------------------------------------------------------


def test_an_in_memory_run_writes_the_queue_of_its_own_predictions(in_memory_run):
    output_dir = str(in_memory_run.output_dir)
    review = assert_review_queue(output_dir, limit=1000)
    # The tiny model gives this run images of every kind the test needs.
    assert review["reasons"][NEAR_THRESHOLD] > 0 and review["reasons"][PATIENT_DISAGREEMENT] > 0
    assert review["reasons"][UNCERTAIN] == 0  # --tta 1 on main: p_std is 0
    rows = read_csv(str(in_memory_run.output_dir / REVIEW_FILE))
    unlabelled = [row for row in rows if not row["true_label"]]
    assert unlabelled and all(PATIENT_DISAGREEMENT not in row["reasons"] for row in unlabelled)
    assert all(row["patient_call"] == "" for row in unlabelled)


def test_the_report_opens_with_the_needs_review_counts_and_the_queues_first_images(
    in_memory_run,
):
    html = (in_memory_run.output_dir / "report.html").read_text()
    review = read_json(str(in_memory_run.output_dir / "summary.json"))["review"]
    assert html.index('<section id="review">') < html.index('<section id="run">')
    shown = dict(re.findall(r'data-review-reason="([\w]+)">(\d+)<', html))
    assert shown == {reason: str(count) for reason, count in review["reasons"].items()}
    section = html[html.index('<section id="review">') : html.index("</section>")]
    names = re.findall(r'<td class="break" title="[^"]*">([^<]+)</td>', section)
    queue = read_csv(str(in_memory_run.output_dir / REVIEW_FILE))
    expected = [row["image_path"].rsplit("/", 1)[-1] for row in queue][: len(names)]
    assert names == expected and 0 < len(names) <= 20
    for href in re.findall(r'<img class="thumb" src="([^"]+)"', section):
        assert (in_memory_run.output_dir / href).is_file()
