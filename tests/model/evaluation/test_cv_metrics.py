"""Cross-validation's numbers: spreads over folds, out-of-fold evaluation at each fold's
threshold, and the predictions files that carry them."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from model.evaluation.cv_metrics import SD_RULE, cv_metrics, spread
from model.evaluation.evaluate import evaluate, patient_rows_from_records, patient_table
from model.evaluation.fold_predictions import (
    OOF_COLUMNS,
    PredictionsFileError,
    evaluation_records,
    prediction_rows,
    predictions_csv_text,
    read_predictions,
)


def _records(seed: int, patients: int, threshold: float | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for index in range(patients):
        label = index % 2
        for image in range(4):
            record = {
                "label": label,
                "p_malignant": float(np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0, 1)),
                "patient_id": f"{seed}-{index}",
                "magnification": ("40X", "100X")[image % 2],
            }
            if threshold is not None:
                record["threshold"] = threshold
            records.append(record)
    return records


def test_spread_is_the_mean_and_sample_sd_of_the_defined_folds():
    entry = spread([0.5, None, 0.75, 0.9])
    assert entry["per_fold"] == [0.5, None, 0.75, 0.9]
    assert entry["mean"] == pytest.approx(statistics.mean([0.5, 0.75, 0.9]))
    assert entry["sd"] == pytest.approx(statistics.stdev([0.5, 0.75, 0.9]))  # ddof=1
    assert entry["folds_defined"] == 3
    assert spread([0.4, None])["sd"] is None and spread([0.4, None])["mean"] == 0.4
    assert spread([None, None]) == {
        "per_fold": [None, None],
        "mean": None,
        "sd": None,
        "folds_defined": 0,
    }


def test_out_of_fold_evaluation_calls_each_image_at_its_own_folds_threshold():
    thresholds = (0.3, 0.6, 0.45)
    folds = [_records(seed, 6, threshold) for seed, threshold in enumerate(thresholds)]
    pooled = evaluate([record for fold in folds for record in fold], None)
    reports = [evaluate(fold, threshold) for fold, threshold in zip(folds, thresholds, strict=True)]
    # Threshold-dependent counts add up fold by fold, image and patient level.
    for level in ("image_level", "patient_level"):
        matrix = np.sum([r[level]["pooled"]["confusion_matrix"] for r in reports], axis=0)
        assert pooled[level]["pooled"]["confusion_matrix"] == matrix.tolist()
    # A single shared threshold would call differently: the per-record one is really used.
    shared = [
        {k: v for k, v in record.items() if k != "threshold"} for fold in folds for record in fold
    ]
    assert (
        evaluate(shared, 0.5)["image_level"]["pooled"]["confusion_matrix"]
        != pooled["image_level"]["pooled"]["confusion_matrix"]
    )
    assert pooled["threshold"] is None
    rows = patient_rows_from_records([r for fold in folds for r in fold], None)
    table = patient_table(rows, None)
    assert len(table) == 18


def test_a_record_without_a_threshold_needs_the_reports_threshold():
    records = _records(0, 2)
    with pytest.raises(ValueError, match="needs the report's threshold"):
        evaluate(records, None)


def test_a_patient_split_over_thresholds_is_refused():
    records = _records(0, 2, 0.5)
    records[0]["threshold"] = 0.4
    with pytest.raises(ValueError, match="different thresholds"):
        evaluate(records, None)


def test_cv_metrics_holds_per_fold_mean_sd_and_out_of_fold_values_for_every_block():
    thresholds = (0.3, 0.6, 0.45)
    folds = [_records(seed, 6, threshold) for seed, threshold in enumerate(thresholds)]
    reports = [evaluate(fold, threshold) for fold, threshold in zip(folds, thresholds, strict=True)]
    oof = evaluate([record for fold in folds for record in fold], None)
    result = cv_metrics(reports, oof)
    assert result["sd"] == SD_RULE and result["folds"] == 3
    for path in (("image_level",), ("patient_level",), ("baseline", "image_level")):
        block, oof_block = result, oof
        for key in path:
            block, oof_block = block[key], oof_block[key]
        fold_blocks = [r for r in reports]
        for key in path:
            fold_blocks = [b[key] for b in fold_blocks]
        for group in ("pooled", "by_magnification"):
            assert group in block
        entry = block["pooled"]["accuracy"]
        values = [b["pooled"]["accuracy"] for b in fold_blocks]
        assert entry["per_fold"] == values
        assert entry["mean"] == pytest.approx(np.mean(values))
        assert entry["sd"] == pytest.approx(np.std(values, ddof=1))
        assert entry["oof"] == oof_block["pooled"]["accuracy"]
        assert set(block["by_magnification"]) == {"40X", "100X"}
    assert "confusion_matrix" not in result["image_level"]["pooled"]  # not a number
    assert result["counts"]["oof"]["images"] == 72


def test_a_metric_a_fold_cannot_define_is_none_there_and_left_out_of_its_mean():
    one_class = [r for r in _records(1, 6, 0.5) if r["label"] == 1]
    both = _records(2, 6, 0.5)
    reports = [evaluate(one_class, 0.5), evaluate(both, 0.5)]
    result = cv_metrics(reports, evaluate(one_class + both, None))
    auc = result["image_level"]["pooled"]["roc_auc"]
    assert auc["per_fold"][0] is None and auc["folds_defined"] == 1
    assert auc["mean"] == reports[1]["image_level"]["pooled"]["roc_auc"] and auc["sd"] is None


def test_predictions_files_keep_every_digit_so_metrics_recompute_exactly():
    split_rows = [
        {
            "image_path": f"/d/SOB_M_DC-14-{i}-40-001.png"
            if i % 2
            else f"/d/SOB_B_A-14-{i}-40-001.png",
            "label": "malignant" if i % 2 else "benign",
            "slide_id": f"14-{i}",
            "magnification": "40X",
        }
        for i in range(10)
    ]
    p = np.random.default_rng(3).uniform(size=10)
    threshold = float(np.sort(p)[4])  # a score exactly at the threshold is called malignant
    rows = prediction_rows(split_rows, p, threshold)
    assert rows[1]["subtype"] == "ductal_carcinoma" and rows[0]["subtype"] == "adenosis"
    back = read_predictions(predictions_csv_text(rows), "test")
    assert [row["p_malignant"] for row in back] == p.tolist()
    records = [
        {
            "label": int(r["label"] == "malignant"),
            "p_malignant": float(q),
            "patient_id": r["slide_id"],
            "magnification": "40X",
        }
        for r, q in zip(split_rows, p, strict=True)
    ]
    assert evaluate(evaluation_records(back), threshold) == evaluate(records, threshold)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace("p_malignant", "p"), "has no column p_malignant"),
        (lambda text: text.replace("0.25,", "abc,", 1), "line 2: could not convert"),
        (lambda text: text.replace("0.25,", "nan,", 1), "line 2: p_malignant 'nan' is not"),
        (lambda text: text.replace("0.25,", "1.5,", 1), "is not a number in \\[0, 1\\]"),
        (lambda text: text.replace(",benign,", ",cancer,", 1), "predicted_label 'cancer'"),
        (lambda text: text.replace(",2,", ",two,", 1), "line 2: invalid literal"),
        (lambda text: text.replace(",0.5\n", ",-1\n", 1), "threshold '-1' is not"),
    ],
)
def test_a_broken_out_of_fold_file_names_its_line_and_problem(edit, message):
    row = {
        "image_path": "/d/SOB_B_A-14-1-40-001.png",
        "p_malignant": 0.25,
        "predicted_label": "benign",
        "true_label": "benign",
        "patient_id": "14-1",
        "magnification": "40X",
        "subtype": "adenosis",
        "fold": 2,
        "threshold": 0.5,
    }
    text = predictions_csv_text([row], OOF_COLUMNS)
    assert read_predictions(text, "oof.csv", OOF_COLUMNS)[0]["fold"] == 2
    with pytest.raises(PredictionsFileError, match=message):
        read_predictions(edit(text), "oof.csv", OOF_COLUMNS)
    assert math.isfinite(row["p_malignant"])
