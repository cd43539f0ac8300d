"""The evaluation report of both jobs: metrics pooled and per magnification, per image and per
patient, beside the majority baseline; the pooled reliability bins; and the per-patient table.

The training job builds it exactly from arrays (`evaluate`); the scoring pipeline from streaming
parts (`report_from_summaries`): `model.metrics.StreamingSummary` accumulators and per-patient
tallies. Both give the same structure, so metrics.json means the same thing wherever it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from model.calibration import BINNING, ReliabilityTally
from model.constants import MAGNIFICATIONS
from model.labels import label_name, majority_index, predicted_index, predicted_label
from model.metrics import (
    StreamingSummary,
    binary_metrics,
    majority_baseline,
    majority_baseline_from_counts,
    patient_recognition_rate,
)

logger = logging.getLogger(__name__)


def _magnification_order(magnification: str) -> tuple[int, str]:
    known = magnification in MAGNIFICATIONS
    return (MAGNIFICATIONS.index(magnification) if known else len(MAGNIFICATIONS), magnification)


def _majority_label(labels: Iterable[int], patient_id: str) -> int:
    labels = list(labels)
    n_malignant = sum(1 for label in labels if int(label) == 1)
    if 0 < n_malignant < len(labels):
        logger.warning("patient %s has images of both classes; using the majority", patient_id)
    return majority_index(n_malignant, len(labels))


def patient_rows_from_records(
    records: Iterable[Mapping[str, Any]], threshold: float
) -> list[dict[str, Any]]:
    """The per-patient rows `report_from_summaries` takes: pooled (magnification None) and per
    magnification; the reference for what the pipeline aggregates."""
    groups: dict[tuple[str, str | None], list[Mapping[str, Any]]] = {}
    for record in records:
        pid = str(record["patient_id"])
        groups.setdefault((pid, None), []).append(record)
        groups.setdefault((pid, record["magnification"]), []).append(record)
    rows = []
    for (pid, magnification), members in groups.items():
        labels = [int(r["label"]) for r in members]
        scores = [float(r["p_malignant"]) for r in members]
        calls = [predicted_index(p, threshold) for p in scores]
        correct = sum(int(call == y) for y, call in zip(labels, calls, strict=True))
        rows.append(
            {
                "patient_id": pid,
                "magnification": magnification,
                "label": _majority_label(labels, pid),
                "images": len(members),
                "correct": int(correct),
                "sum_p": float(sum(scores)),
                "predicted_malignant": sum(calls),
            }
        )
    return rows


def _rate_from_rows(rows: Sequence[Mapping[str, Any]]) -> float | None:
    if not rows:
        return None
    return float(np.mean([row["correct"] / row["images"] for row in rows]))


def _patient_level(rows: Sequence[Mapping[str, Any]], threshold: float) -> tuple[dict, dict]:
    """Exact metrics and majority baseline with each patient one sample scored by its mean p."""
    labels = [int(row["label"]) for row in rows]
    scores = [row["sum_p"] / row["images"] for row in rows]
    return binary_metrics(labels, scores, threshold), majority_baseline(labels)


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
    keys = ["pooled", *sorted(present, key=_magnification_order)]
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


def _empty_report(threshold: float) -> dict[str, Any]:
    def section() -> dict[str, Any]:
        return {"pooled": {}, "by_magnification": {}}

    return {
        "threshold": float(threshold),
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


def evaluate(records: Iterable[Mapping[str, Any]], threshold: float) -> dict[str, Any]:
    """Exact image- and patient-level report, pooled and per magnification, with baselines."""
    records = list(records)
    rows = _rows_by_magnification(patient_rows_from_records(records, threshold))
    by_key: dict[str, list[Mapping[str, Any]]] = {"pooled": records}
    for record in records:
        by_key.setdefault(record["magnification"], []).append(record)
    keys = ["pooled", *sorted((k for k in by_key if k != "pooled"), key=_magnification_order)]
    report = _empty_report(threshold)
    for key in keys:
        members = by_key[key]
        labels = [int(r["label"]) for r in members]
        scores = [float(r["p_malignant"]) for r in members]
        image = binary_metrics(labels, scores, threshold)
        predicted = [predicted_index(p, threshold) for p in scores]
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


def patient_table(rows: Sequence[Mapping[str, Any]], threshold: float) -> list[list[Any]]:
    """One row (values in PATIENT_COLUMNS order) per patient, pooled over magnifications,
    sorted by patient id: the per-patient table of both jobs (their files and reports)."""
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
                predicted_label(mean_p, threshold),
                called_both_ways(row),
            ]
        )
    return table
