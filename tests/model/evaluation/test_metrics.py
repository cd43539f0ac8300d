"""Tests for model.evaluation.metrics: hand-computed values, undefined cases, streaming, reports."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from model.evaluation.evaluate import (
    evaluate,
    patient_rows_from_records,
    report_from_summaries,
)
from model.evaluation.metrics import (
    METRIC_NAMES,
    N_BINS,
    StreamingSummary,
    binary_metrics,
    choose_threshold,
    majority_baseline,
    majority_baseline_from_counts,
    patient_recognition_rate,
    score_bins,
)

# Hand example, threshold 0.5 (p >= 0.5 -> malignant):
#   benign    p = 0.1, 0.4, 0.6    -> predicted B, B, M   => tn = 2, fp = 1
#   malignant p = 0.3, 0.7, 0.8, 0.9 -> predicted B, M, M, M => fn = 1, tp = 3
# accuracy 5/7, sensitivity 3/4, specificity 2/3, balanced (3/4 + 2/3) / 2 = 17/24,
# precision 3/4, f1 = 2*3 / (2*3 + 1 + 1) = 3/4.
# ROC AUC: positive-over-negative pairs: 0.3 beats 1, 0.7/0.8/0.9 beat 3 each -> 10/12 = 5/6.
# AP: ranked 0.9P 0.8P 0.7P 0.6N 0.4N 0.3P 0.1N -> precisions at positives 1, 1, 1, 4/6 -> 11/12.
# Brier: (0.01 + 0.16 + 0.36 + 0.49 + 0.09 + 0.04 + 0.01) / 7 = 1.16 / 7.
HAND_Y = [0, 0, 0, 1, 1, 1, 1]
HAND_P = [0.1, 0.4, 0.6, 0.3, 0.7, 0.8, 0.9]
HAND_KEYS = {*METRIC_NAMES, "n", "n_benign", "n_malignant", "confusion_matrix"}


def summary_of(threshold: float, labels, scores) -> StreamingSummary:
    """A StreamingSummary of parallel label and score arrays, added one image at a time."""
    summary = StreamingSummary(threshold)
    for label, score in zip(labels, scores, strict=True):
        summary.add(label, score)
    return summary


def summary_state(summary: StreamingSummary) -> tuple:
    """Everything a summary holds, comparable with ==."""
    return (
        summary.threshold,
        tuple(summary.positive_counts.tolist()),
        tuple(summary.negative_counts.tolist()),
        summary.brier_sum,
        tuple(summary.reliability.counts.tolist()),
        tuple(summary.reliability.p_sums.tolist()),
        tuple(summary.reliability.positives.tolist()),
        (summary.tp, summary.fp, summary.tn, summary.fn),
    )


def records_from_arrays(labels, p_malignant, patient_ids, magnifications) -> list[dict]:
    """Parallel arrays as the records `model.evaluation.evaluate.evaluate` takes."""
    return [
        {"label": int(y), "p_malignant": float(p), "patient_id": str(pid), "magnification": mag}
        for y, p, pid, mag in zip(labels, p_malignant, patient_ids, magnifications, strict=True)
    ]


def _random_records(seed: int, n_patients: int = 12, images: int = 40) -> list[dict]:
    """Patients with one label each, images at random magnifications, informative scores."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(n_patients):
        label = int(index % 3 != 0)
        for _ in range(rng.integers(5, images)):
            p = float(np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0.0, 1.0))
            magnification = str(rng.choice(["40X", "100X", "200X", "400X"]))
            records.append(
                {
                    "label": label,
                    "p_malignant": p,
                    "patient_id": f"P{index}",
                    "magnification": magnification,
                }
            )
    return records


def _streaming_parts(records: list[dict], threshold: float):
    summaries: dict[str, StreamingSummary] = {}
    for record in records:
        for key in ("pooled", record["magnification"]):
            summary = summaries.setdefault(key, StreamingSummary(threshold))
            summary.add(record["label"], record["p_malignant"])
    return summaries, patient_rows_from_records(records, threshold)


def _assert_close(actual, expected, path="value"):
    """Recursive equality with float tolerance for rounding-order differences only."""
    if isinstance(expected, dict):
        assert list(actual) == list(expected), path
        for key in expected:
            _assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-12, abs=1e-12), path
    else:
        assert actual == expected, path


def _assert_reports_agree(exact, streamed, path="report"):
    assert isinstance(streamed, type(exact)) or exact is None or streamed is None, path
    if isinstance(exact, dict):
        assert list(exact) == list(streamed), path
        for key in exact:
            _assert_reports_agree(exact[key], streamed[key], f"{path}.{key}")
    elif isinstance(exact, list) and exact and isinstance(exact[0], dict):
        assert len(exact) == len(streamed), path
        for index, (one, other) in enumerate(zip(exact, streamed, strict=True)):
            _assert_reports_agree(one, other, f"{path}[{index}]")
    elif path.endswith(("ece", "mean_p")) and exact is not None:
        assert streamed == pytest.approx(exact, rel=1e-12, abs=1e-12), path
    elif path.endswith(("roc_auc", "pr_auc")) and exact is not None:
        assert streamed == pytest.approx(exact, abs=1e-3), path
    elif path.endswith("brier") and exact is not None:
        assert streamed == pytest.approx(exact, abs=1e-9), path
    else:
        assert streamed == exact, path


def test_binary_metrics_match_hand_computed_values():
    result = binary_metrics(HAND_Y, HAND_P, threshold=0.5)
    assert set(result) == HAND_KEYS
    assert result["confusion_matrix"] == [[2, 1], [1, 3]]
    assert (result["n"], result["n_benign"], result["n_malignant"]) == (7, 3, 4)
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["sensitivity"] == pytest.approx(3 / 4)
    assert result["specificity"] == pytest.approx(2 / 3)
    assert result["balanced_accuracy"] == pytest.approx(17 / 24)
    assert result["precision"] == pytest.approx(3 / 4)
    assert result["f1"] == pytest.approx(3 / 4)
    assert result["roc_auc"] == pytest.approx(5 / 6)
    assert result["pr_auc"] == pytest.approx(11 / 12)
    assert result["brier"] == pytest.approx(1.16 / 7)


def test_binary_metrics_values_are_plain_python_numbers():
    result = binary_metrics(np.array(HAND_Y), np.array(HAND_P, dtype=np.float32), 0.5)
    for name in METRIC_NAMES:
        assert type(result[name]) is float, name
    for name in ("n", "n_benign", "n_malignant"):
        assert type(result[name]) is int, name
    assert all(type(v) is int for row in result["confusion_matrix"] for v in row)


def test_score_equal_to_threshold_is_predicted_malignant():
    result = binary_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert result["confusion_matrix"] == [[0, 1], [0, 1]]
    assert result["roc_auc"] == pytest.approx(0.5)  # one tied pair counts half


def test_undefined_metrics_are_none_not_nan():
    only_benign = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], threshold=0.5)
    for name in ("sensitivity", "balanced_accuracy", "precision", "f1", "roc_auc", "pr_auc"):
        assert only_benign[name] is None, name
    assert only_benign["specificity"] == 1.0
    assert only_benign["accuracy"] == 1.0

    nothing_predicted_malignant = binary_metrics([0, 1], [0.1, 0.2], threshold=0.5)
    assert nothing_predicted_malignant["precision"] is None
    assert nothing_predicted_malignant["f1"] == 0.0
    assert nothing_predicted_malignant["roc_auc"] == 1.0

    empty = binary_metrics([], [], threshold=0.5)
    assert all(empty[name] is None for name in METRIC_NAMES)
    assert empty["n"] == 0 and empty["confusion_matrix"] == [[0, 0], [0, 0]]


def test_binary_metrics_rejects_mismatched_or_bad_input():
    with pytest.raises(ValueError, match="labels"):
        binary_metrics([0, 1], [0.5], 0.5)
    with pytest.raises(ValueError, match="0 \\(benign\\)"):
        binary_metrics([0, 2], [0.5, 0.5], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.5, float("nan")], 0.5)


def test_patient_recognition_rate_averages_patients_not_images():
    # Patient A: 3 of 4 images right; patient B: 1 of 2 -> (3/4 + 1/2) / 2 = 0.625,
    # whereas the image accuracy would be 4/6.
    ids = ["A", "A", "A", "A", "B", "B"]
    y_true = [1, 1, 1, 1, 0, 0]
    y_pred = [1, 1, 1, 0, 0, 1]
    assert patient_recognition_rate(ids, y_true, y_pred) == pytest.approx(0.625)
    assert patient_recognition_rate([], [], []) is None


def test_majority_baseline_predicts_the_majority_class_with_constant_score():
    # y = M M M B, always malignant with p = 1.0: cm [[0, 1], [0, 3]], accuracy 3/4,
    # sensitivity 1, specificity 0, precision 3/4, f1 6/7, ROC AUC 0.5 (all tied),
    # AP = prevalence 3/4, Brier: the benign image is off by 1 -> 1/4.
    result = majority_baseline([1, 1, 1, 0])
    assert result["predicts"] == "malignant"
    assert result["confusion_matrix"] == [[0, 1], [0, 3]]
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["sensitivity"] == 1.0 and result["specificity"] == 0.0
    assert result["f1"] == pytest.approx(6 / 7)
    assert result["roc_auc"] == 0.5
    assert result["pr_auc"] == pytest.approx(0.75)
    assert result["brier"] == pytest.approx(0.25)
    assert result["ece"] == pytest.approx(0.25)  # one bin: p = 1 against 3/4 malignant

    benign = majority_baseline([0, 0, 1])
    assert benign["predicts"] == "benign"
    assert benign["confusion_matrix"] == [[2, 0], [1, 0]]
    assert benign["precision"] is None
    assert benign["brier"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("y", [[1, 1, 1, 0], [0, 0, 1], [0, 0], [1], [0, 1, 0, 1, 1, 0, 0]])
def test_majority_baseline_from_counts_equals_exact_metrics_of_constant_scores(y):
    baseline = majority_baseline(y)
    constant = 1.0 if baseline["predicts"] == "malignant" else 0.0
    exact = binary_metrics(y, [constant] * len(y), threshold=0.5)
    _assert_close({k: v for k, v in baseline.items() if k != "predicts"}, exact)
    assert baseline == majority_baseline_from_counts(y.count(0), y.count(1))


def test_choose_threshold_maximises_youden_j_on_separable_scores():
    threshold, rule = choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    # Only cuts between 0.2 and 0.7 give sensitivity 1 and specificity 1; the rule takes the
    # middle of that gap.
    assert threshold == pytest.approx(0.45)
    assert "Youden" in rule
    result = binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], threshold)
    assert result["sensitivity"] == 1.0 and result["specificity"] == 1.0


def test_choose_threshold_leaves_a_margin_below_saturated_malignant_scores():
    # Validation malignant scores all near 1: a cut at the lowest of them would call a test
    # image scored 0.99 benign; the midpoint of the gap does not.
    threshold, _ = choose_threshold([0, 0, 1, 1], [0.05, 0.3, 0.9986, 0.9999])
    assert threshold == pytest.approx((0.3 + 0.9986) / 2)


def test_choose_threshold_breaks_ties_towards_one_half():
    # Cuts between 0.1|0.3 (sens 1, spec 1/2) and 0.8|0.9 (sens 1/2, spec 1) both give J = 1/2;
    # their midpoints are 0.2 and 0.85, and 0.2 is nearer 0.5.
    threshold, _ = choose_threshold([0, 1, 0, 1], [0.1, 0.3, 0.8, 0.9])
    assert threshold == pytest.approx(0.2)


def test_choose_threshold_falls_back_to_one_half_with_one_class_or_no_data():
    threshold, rule = choose_threshold([1, 1, 1], [0.2, 0.6, 0.9])
    assert threshold == 0.5 and "only malignant" in rule
    threshold, rule = choose_threshold([], [])
    assert threshold == 0.5 and "No validation" in rule


def test_choose_threshold_stays_in_unit_interval():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    threshold, _ = choose_threshold(y, rng.random(200))
    assert 0.0 <= threshold <= 1.0


def test_streaming_summary_matches_hand_example_exactly():
    summary = StreamingSummary(0.5)
    for label, p in zip(HAND_Y, HAND_P, strict=True):
        summary.add(label, p)
    result = summary.metrics()
    _assert_close(result, binary_metrics(HAND_Y, HAND_P, 0.5))
    assert result["roc_auc"] == pytest.approx(5 / 6)
    assert result["pr_auc"] == pytest.approx(11 / 12)


def test_streaming_summary_puts_extreme_scores_in_end_bins():
    summary = StreamingSummary(0.5).add(1, 1.0).add(0, 0.0)
    assert summary.positive_counts[N_BINS - 1] == 1 and summary.positive_counts.sum() == 1
    assert summary.negative_counts[0] == 1 and summary.negative_counts.sum() == 1
    assert summary.positive_counts.shape == (N_BINS,) and summary.positive_counts.dtype == np.int64


def test_streaming_metrics_agree_with_exact_metrics_on_random_data():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 3000)
    p = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0.0, 1.0)
    threshold = 0.45
    summary = StreamingSummary(threshold)
    for label, score in zip(y, p, strict=True):
        summary.add(label, score)
    streamed, exact = summary.metrics(), binary_metrics(y, p, threshold)
    assert set(streamed) == set(exact)
    for name in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1"):
        assert streamed[name] == exact[name], name
    assert streamed["confusion_matrix"] == exact["confusion_matrix"]
    assert streamed["roc_auc"] == pytest.approx(exact["roc_auc"], abs=1e-3)
    assert streamed["pr_auc"] == pytest.approx(exact["pr_auc"], abs=1e-3)
    assert streamed["brier"] == pytest.approx(exact["brier"], abs=1e-9)
    assert streamed["ece"] == pytest.approx(exact["ece"], abs=1e-12)


def test_streaming_ece_from_merged_partial_summaries_equals_the_exact_ece():
    from pipelines.scoring.rows import P_DECIMALS
    from tests.pipelines.helpers import sklearn_ece

    # Scores as the scorer writes and aggregates them, rounded to P_DECIMALS; 0.4 and 0.6 sit
    # exactly on bin edges (6/15 and 9/15), 0 and 1 at the ends.
    rng = np.random.default_rng(12)
    p = np.round(np.concatenate([rng.beta(0.6, 0.6, 2000), [0.0, 0.4, 0.6, 1.0]]), P_DECIMALS)
    y = (rng.uniform(size=p.size) < np.clip(1.4 * p - 0.2, 0, 1)).astype(int)
    parts = [summary_of(0.5, y[a:b], p[a:b]) for a, b in ((0, 700), (700, 701), (701, p.size))]
    merged = parts[2].merge(parts[0]).merge(parts[1])  # in any order, as Beam may
    exact = binary_metrics(y, p, 0.5)["ece"]
    assert exact > 0.02  # miscalibrated on purpose: a difference would show
    assert merged.metrics()["ece"] == pytest.approx(exact, abs=1e-12)
    assert exact == pytest.approx(sklearn_ece(y, p), abs=1e-12)


def test_merged_summaries_equal_one_summary_of_everything():
    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 2, 500), rng.random(500)
    whole = summary_of(0.5, y, p)
    parts = [summary_of(0.5, y[a:b], p[a:b]) for a, b in ((0, 120), (120, 121))]
    parts.append(summary_of(0.5, y[121:], p[121:]))
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert np.array_equal(merged.positive_counts, whole.positive_counts)
    assert np.array_equal(merged.negative_counts, whole.negative_counts)
    assert np.array_equal(merged.reliability.counts, whole.reliability.counts)
    assert np.array_equal(merged.reliability.positives, whole.reliability.positives)
    assert (merged.tp, merged.fp, merged.tn, merged.fn) == (whole.tp, whole.fp, whole.tn, whole.fn)
    assert merged.brier_sum == pytest.approx(whole.brier_sum, abs=1e-9)
    _assert_close(merged.metrics(), whole.metrics())


def test_merging_summaries_of_different_thresholds_fails():
    with pytest.raises(ValueError, match="threshold"):
        StreamingSummary(0.5).merge(StreamingSummary(0.4))


def test_streaming_summary_survives_a_pickle_round_trip():
    rng = np.random.default_rng(2)
    summary = summary_of(0.6, rng.integers(0, 2, 50), rng.random(50))
    unpickled = pickle.loads(pickle.dumps(summary))
    assert unpickled.metrics() == summary.metrics()
    assert summary_state(unpickled) == summary_state(summary)


def test_streaming_curves_run_from_origin_to_corner():
    rng = np.random.default_rng(4)
    summary = summary_of(0.5, rng.integers(0, 2, 200), rng.random(200))
    fpr, tpr = summary.roc_curve()
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    recall, precision = summary.pr_curve()
    assert (recall[0], precision[0], recall[-1]) == (0.0, 1.0, 1.0)
    assert precision[-1] == pytest.approx(summary.positive_counts.sum() / 200)
    one_class = StreamingSummary(0.5).add(0, 0.3)
    assert one_class.roc_curve()[0].size == 0 and one_class.pr_curve()[0].size == 0


def test_evaluate_builds_image_and_patient_level_report_by_hand():
    # Patient A (malignant): 40X p 0.9, 0.2; 400X p 0.8, 0.7 -> 3/4 images right, mean p 0.65.
    # Patient B (benign): 40X p 0.6, 0.3 -> 1/2 right, mean p 0.45.
    records = records_from_arrays(
        labels=[1, 1, 1, 1, 0, 0],
        p_malignant=[0.9, 0.2, 0.8, 0.7, 0.6, 0.3],
        patient_ids=["A"] * 4 + ["B"] * 2,
        magnifications=["40X", "40X", "400X", "400X", "40X", "40X"],
    )
    report = evaluate(records, threshold=0.5)
    assert report["threshold"] == 0.5
    image = report["image_level"]
    assert image["pooled"]["confusion_matrix"] == [[1, 1], [1, 3]]
    assert image["pooled"]["patient_recognition_rate"] == pytest.approx(0.625)
    assert list(image["by_magnification"]) == ["40X", "400X"]
    assert image["by_magnification"]["400X"]["confusion_matrix"] == [[0, 0], [0, 2]]
    assert image["by_magnification"]["40X"]["patient_recognition_rate"] == pytest.approx(0.5)
    # Patients as samples: A 0.65 -> malignant (right), B 0.45 -> benign (right).
    patient = report["patient_level"]
    assert patient["pooled"]["confusion_matrix"] == [[1, 0], [0, 1]]
    assert "patient_recognition_rate" not in patient["pooled"]
    # At 40X, A's mean is 0.55 (right) and B's 0.45 (right); at 400X only A.
    assert patient["by_magnification"]["40X"]["confusion_matrix"] == [[1, 0], [0, 1]]
    assert patient["by_magnification"]["400X"]["n"] == 1
    assert patient["by_magnification"]["400X"]["roc_auc"] is None
    baseline = report["baseline"]
    assert baseline["image_level"]["pooled"]["predicts"] == "malignant"
    assert baseline["image_level"]["pooled"]["accuracy"] == pytest.approx(4 / 6)
    assert baseline["patient_level"]["pooled"]["accuracy"] == pytest.approx(0.5)
    assert report["counts"] == {
        "images": 6,
        "patients": 2,
        "by_magnification": {
            "40X": {"images": 4, "patients": 2},
            "400X": {"images": 2, "patients": 1},
        },
    }


def test_evaluate_uses_majority_label_for_a_patient_with_mixed_labels():
    records = records_from_arrays([1, 1, 0], [0.9, 0.8, 0.7], ["A", "A", "A"], ["40X"] * 3)
    report = evaluate(records, threshold=0.5)
    assert report["patient_level"]["pooled"]["n_malignant"] == 1
    assert report["image_level"]["pooled"]["n_benign"] == 1


def test_evaluate_output_is_strict_json():
    records = _random_records(seed=1)
    # A magnification with only benign images leaves AUCs undefined there.
    records.append({"label": 0, "p_malignant": 0.2, "patient_id": "P0", "magnification": "999X"})
    report = evaluate(records, threshold=0.5)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert report["image_level"]["by_magnification"]["999X"]["roc_auc"] is None
    assert list(report["image_level"]["by_magnification"]) == [
        "40X",
        "100X",
        "200X",
        "400X",
        "999X",
    ]


def test_report_from_summaries_agrees_with_evaluate():
    records = _random_records(seed=9)
    threshold = 0.47
    summaries, rows = _streaming_parts(records, threshold)
    exact = evaluate(records, threshold)
    streamed = report_from_summaries(summaries, rows, threshold)
    _assert_reports_agree(exact, streamed)
    json.dumps(streamed, allow_nan=False)
    # The comparison must have had something to compare.
    assert exact["image_level"]["pooled"]["roc_auc"] is not None
    assert len(exact["image_level"]["by_magnification"]) == 4
    assert sum(b["count"] for b in exact["reliability"]["pooled"]) == len(records)


def test_every_image_level_block_has_ece_and_the_report_has_the_pooled_reliability_bins():
    from tests.pipelines.helpers import sklearn_ece

    records = _random_records(seed=10)
    report = evaluate(records, threshold=0.5)
    image = report["image_level"]
    for group in ("40X", "100X", "200X", "400X"):
        members = [r for r in records if r["magnification"] == group]
        expected = sklearn_ece([r["label"] for r in members], [r["p_malignant"] for r in members])
        assert image["by_magnification"][group]["ece"] == pytest.approx(expected, abs=1e-12)
    labels = [r["label"] for r in records]
    scores = [r["p_malignant"] for r in records]
    assert image["pooled"]["ece"] == pytest.approx(sklearn_ece(labels, scores), abs=1e-12)
    assert report["baseline"]["image_level"]["pooled"]["ece"] is not None
    bins = report["reliability"]["pooled"]
    assert len(bins) == 15 and "15 equal-width bins" in report["reliability"]["binning"]
    filled = [b for b in bins if b["count"]]
    gaps = sum(b["count"] * abs(b["mean_p"] - b["fraction_malignant"]) for b in filled)
    assert gaps / len(records) == pytest.approx(image["pooled"]["ece"], abs=1e-12)


def test_report_from_summaries_rejects_a_summary_at_another_threshold():
    with pytest.raises(ValueError, match="threshold"):
        report_from_summaries({"pooled": StreamingSummary(0.4)}, [], threshold=0.5)


def test_streaming_auc_stays_exact_for_saturated_scores():
    # A confident model: every score below 0.01, classes overlapping. Bins uniform in p would
    # put all of them in the first hundred bins and lose most of the ranking.
    rng = np.random.default_rng(11)
    y = np.repeat([0, 1], 1500)
    p = np.concatenate([10 ** rng.uniform(-6, -2.5, 1500), 10 ** rng.uniform(-5, -2, 1500)])
    summary = summary_of(0.001, y, p)
    exact = binary_metrics(y, p, 0.001)
    streamed = summary.metrics()
    assert streamed["roc_auc"] == pytest.approx(exact["roc_auc"], abs=1e-3)
    assert streamed["pr_auc"] == pytest.approx(exact["pr_auc"], abs=1e-3)
    # As many bins uniform in p would have ranked these 3,000 scores far more coarsely.
    linear_bins = np.minimum((p * N_BINS).astype(int), N_BINS - 1)
    assert len(np.unique(linear_bins)) * 5 < len(np.unique(score_bins(p)))
