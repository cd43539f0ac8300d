"""The evaluation report of both jobs: metrics pooled and per magnification, per image and per
patient, beside the majority baseline; the pooled reliability bins; and the per-patient table.

A record may carry its own "threshold": the out-of-fold predictions of cross-validation call each
image at the threshold of the fold model that scored it (a patient lies in one fold, so all its
images share one).

The training job builds it exactly from arrays (`evaluate`); the scoring pipeline from streaming
parts (`report_from_summaries`): `model.evaluation.metrics.StreamingSummary` accumulators and
per-patient tallies. Both give the same structure, so metrics.json means the same thing
wherever it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from model.constants import MAGNIFICATIONS
from model.evaluation.labels import label_name, majority_index, predicted_index, predicted_label
from model.evaluation.metrics import (
    StreamingSummary,
    binary_metrics,
    majority_baseline,
    majority_baseline_from_counts,
    patient_recognition_rate,
)
from model.network.calibration import BINNING, ReliabilityTally

logger = logging.getLogger(__name__)


def magnification_order(magnification: str) -> tuple[int, str]:
    """Sort key of magnifications: 40X, 100X, 200X, 400X, then any other by name."""
    known = magnification in MAGNIFICATIONS
    return (MAGNIFICATIONS.index(magnification) if known else len(MAGNIFICATIONS), magnification)


def _majority_label(labels: Iterable[int], patient_id: str) -> int:
    labels = list(labels)
    n_malignant = sum(1 for label in labels if int(label) == 1)
    if 0 < n_malignant < len(labels):
        logger.warning("patient %s has images of both classes; using the majority", patient_id)
    return majority_index(n_malignant, len(labels))


def _threshold_of(record: Mapping[str, Any], threshold: float | None) -> float:
    """The threshold a record is called at: its own, else the report's."""
    own = record.get("threshold")
    if own is None and threshold is None:
        raise ValueError("a record without its own threshold needs the report's threshold")
    return float(threshold if own is None else own)


def _patient_threshold(pid: str, members: Sequence[Mapping[str, Any]], threshold) -> float:
    thresholds = {_threshold_of(record, threshold) for record in members}
    if len(thresholds) > 1:
        raise ValueError(f"patient {pid}'s images carry different thresholds {sorted(thresholds)}")
    return thresholds.pop()


def patient_rows_from_records(
    records: Iterable[Mapping[str, Any]], threshold: float | None
) -> list[dict[str, Any]]:
    """The per-patient rows `report_from_summaries` takes: pooled (magnification None) and per
    magnification; the reference for what the pipeline aggregates. A row of records that carry
    their own threshold has that "threshold" too."""
    groups: dict[tuple[str, str | None], list[Mapping[str, Any]]] = {}
    for record in records:
        pid = str(record["patient_id"])
        groups.setdefault((pid, None), []).append(record)
        groups.setdefault((pid, record["magnification"]), []).append(record)
    rows = []
    for (pid, magnification), members in groups.items():
        labels = [int(r["label"]) for r in members]
        scores = [float(r["p_malignant"]) for r in members]
        calls = [
            predicted_index(float(r["p_malignant"]), _threshold_of(r, threshold)) for r in members
        ]
        correct = sum(int(call == y) for y, call in zip(labels, calls, strict=True))
        row = {
            "patient_id": pid,
            "magnification": magnification,
            "label": _majority_label(labels, pid),
            "images": len(members),
            "correct": int(correct),
            "sum_p": float(sum(scores)),
            "predicted_malignant": sum(calls),
        }
        if any(record.get("threshold") is not None for record in members):
            row["threshold"] = _patient_threshold(pid, members, threshold)
        rows.append(row)
    return rows


def _rate_from_rows(rows: Sequence[Mapping[str, Any]]) -> float | None:
    if not rows:
        return None
    return float(np.mean([row["correct"] / row["images"] for row in rows]))


def _patient_level(rows: Sequence[Mapping[str, Any]], threshold: float | None) -> tuple[dict, dict]:
    """Exact metrics and majority baseline with each patient one sample scored by its mean p
    (called at the row's own threshold where it has one)."""
    labels = [int(row["label"]) for row in rows]
    scores = [row["sum_p"] / row["images"] for row in rows]
    thresholds = np.array([_threshold_of(row, threshold) for row in rows], dtype=np.float64)
    return binary_metrics(labels, scores, thresholds), majority_baseline(labels)


def _rows_by_magnification(rows: Iterable[Mapping[str, Any]]) -> dict[str | None, list]:
    grouped: dict[str | None, list] = {}
    for row in rows:
        grouped.setdefault(row["magnification"], []).append(row)
    return grouped


def report_from_summaries(
    image_summaries: Mapping[str, StreamingSummary],
    patient_rows: Sequence[Mapping[str, Any]],
    threshold: float,
) -> dict[str, Any]:
    """The `evaluate` report from streaming parts: image summaries ("pooled" and per
    magnification) and per-patient rows."""
    for key, summary in image_summaries.items():
        if summary.threshold != threshold:
            raise ValueError(f"summary {key!r} used threshold {summary.threshold}, not {threshold}")
    rows = _rows_by_magnification(patient_rows)
    present = {key for key, s in image_summaries.items() if key != "pooled" and s.n} | {
        key for key in rows if key is not None
    }
    keys = ["pooled", *sorted(present, key=magnification_order)]
    report = _empty_report(threshold)
    for key in keys:
        summary = image_summaries.get(key) or StreamingSummary(threshold)
        key_rows = rows.get(None if key == "pooled" else key, [])
        image = summary.metrics()
        image["patient_recognition_rate"] = _rate_from_rows(key_rows)
        patient, patient_baseline = _patient_level(key_rows, threshold)
        image_baseline = majority_baseline_from_counts(image["n_benign"], image["n_malignant"])
        counts = {"images": image["n"], "patients": len(key_rows)}
        _place(report, key, image, patient, image_baseline, patient_baseline, counts)
    pooled = image_summaries.get("pooled") or StreamingSummary(threshold)
    report["reliability"]["pooled"] = pooled.reliability.bins()
    return report


def _empty_report(threshold: float | None) -> dict[str, Any]:
    def section() -> dict[str, Any]:
        return {"pooled": {}, "by_magnification": {}}

    return {
        # None: each record was called at its own threshold.
        "threshold": None if threshold is None else float(threshold),
        "image_level": section(),
        "patient_level": section(),
        "baseline": {"image_level": section(), "patient_level": section()},
        "counts": {"images": 0, "patients": 0, "by_magnification": {}},
        # Per bin of P(malignant): images, mean p and fraction malignant (image level, pooled).
        "reliability": {"binning": BINNING, "pooled": ReliabilityTally().bins()},
    }


def _place(
    report: dict,
    key: str,
    image: dict,
    patient: dict,
    image_baseline: dict,
    patient_baseline: dict,
    counts: dict,
) -> None:
    """Put one group's results under "pooled" or "by_magnification"[key] of every section."""
    sections = (
        (report["image_level"], image),
        (report["patient_level"], patient),
        (report["baseline"]["image_level"], image_baseline),
        (report["baseline"]["patient_level"], patient_baseline),
    )
    for section, value in sections:
        if key == "pooled":
            section["pooled"] = value
        else:
            section["by_magnification"][key] = value
    if key == "pooled":
        report["counts"].update(counts)
    else:
        report["counts"]["by_magnification"][key] = counts


def evaluate(records: Iterable[Mapping[str, Any]], threshold: float | None) -> dict[str, Any]:
    """Exact image- and patient-level report, pooled and per magnification, with baselines.

    threshold None: every record carries its own "threshold" (out-of-fold predictions)."""
    records = list(records)
    rows = _rows_by_magnification(patient_rows_from_records(records, threshold))
    by_key: dict[str, list[Mapping[str, Any]]] = {"pooled": records}
    for record in records:
        by_key.setdefault(record["magnification"], []).append(record)
    keys = ["pooled", *sorted((k for k in by_key if k != "pooled"), key=magnification_order)]
    report = _empty_report(threshold)
    for key in keys:
        members = by_key[key]
        labels = [int(r["label"]) for r in members]
        scores = [float(r["p_malignant"]) for r in members]
        thresholds = np.array([_threshold_of(r, threshold) for r in members], dtype=np.float64)
        image = binary_metrics(labels, scores, thresholds)
        predicted = [predicted_index(p, t) for p, t in zip(scores, thresholds, strict=True)]
        ids = [str(r["patient_id"]) for r in members]
        image["patient_recognition_rate"] = patient_recognition_rate(ids, labels, predicted)
        key_rows = rows.get(None if key == "pooled" else key, [])
        patient, patient_baseline = _patient_level(key_rows, threshold)
        counts = {"images": len(members), "patients": len(set(ids))}
        _place(report, key, image, patient, majority_baseline(labels), patient_baseline, counts)
    labels = [int(r["label"]) for r in records]
    scores = [float(r["p_malignant"]) for r in records]
    report["reliability"]["pooled"] = ReliabilityTally.from_scores(labels, scores).bins()
    return report


PATIENT_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "true_label",
    "images",
    "correct",
    "accuracy",
    "mean_p_malignant",
    "predicted_malignant_images",
    "majority_prediction",
    "mean_p_prediction",
    "called_both_ways",
)


def patient_call(row: Mapping[str, Any]) -> str:
    """A patient's call from a patient row: the majority of its image calls (ties malignant)."""
    return label_name(majority_index(row["predicted_malignant"], row["images"]))


def called_both_ways(row: Mapping[str, Any]) -> bool:
    """Whether a patient row's images are called benign and malignant, some each way."""
    return 0 < row["predicted_malignant"] < row["images"]


def patient_table(rows: Sequence[Mapping[str, Any]], threshold: float | None) -> list[list[Any]]:
    """One row (values in PATIENT_COLUMNS order) per patient, pooled over magnifications,
    sorted by patient id: the per-patient table of both jobs (their files and reports); a row
    with its own "threshold" is called at it."""
    table = []
    for row in sorted(rows, key=lambda r: r["patient_id"]):
        if row["magnification"] is not None:
            continue
        images = row["images"]
        mean_p = round(row["sum_p"] / images, 6)
        table.append(
            [
                row["patient_id"],
                label_name(row["label"]),
                images,
                row["correct"],
                round(row["correct"] / images, 6),
                mean_p,
                row["predicted_malignant"],
                patient_call(row),
                # The patient-level metrics in metrics.json score a patient by its mean p.
                predicted_label(mean_p, _threshold_of(row, threshold)),
                called_both_ways(row),
            ]
        )
    return table
