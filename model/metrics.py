"""Binary metrics (malignant positive), exact and streaming, and the evaluation report of both jobs.

The training job evaluates its test split exactly with `evaluate`. The scoring pipeline cannot hold
every score in memory, so it folds images into `StreamingSummary` accumulators (fixed-size score
histograms plus exact counts at the threshold) and per-patient rows, and `report_from_summaries`
builds the same report from those. Undefined values are `None`, never NaN, so the report is valid
JSON; every number is a plain Python int or float.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from model.constants import CLASS_NAMES, MAGNIFICATIONS

logger = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "roc_auc",
    "pr_auc",
    "brier",
)
N_BINS = 10_000
_DEFAULT_THRESHOLD = 0.5


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _metrics_from_confusion(tn: int, fp: int, fn: int, tp: int) -> dict[str, Any]:
    """Threshold-dependent metrics and counts; AUCs and Brier are left None for the caller."""
    tn, fp, fn, tp = int(tn), int(fp), int(fn), int(tp)
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    balanced = None
    if sensitivity is not None and specificity is not None:
        balanced = (sensitivity + specificity) / 2.0
    result: dict[str, Any] = {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": balanced,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": _ratio(tp, tp + fp),
        # 2tp / (2tp + fp + fn) is the harmonic mean of precision and recall, and stays defined
        # (as 0) when nothing is predicted malignant but malignant images exist.
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": None,
        "pr_auc": None,
        "brier": None,
        "n": tn + fp + fn + tp,
        "n_benign": tn + fp,
        "n_malignant": fn + tp,
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }
    return result


def _as_arrays(y_true: Sequence[int], p_malignant: Sequence[float]) -> tuple[np.ndarray, ...]:
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(p_malignant, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (benign) or 1 (malignant)")
    if np.isnan(p).any():
        raise ValueError("scores contain NaN")
    return y, p


def binary_metrics(
    y_true: Sequence[int], p_malignant: Sequence[float], threshold: float
) -> dict[str, Any]:
    """Exact metrics of scores against labels; p >= threshold is predicted malignant."""
    y, p = _as_arrays(y_true, p_malignant)
    predicted = p >= threshold
    positive = y == 1
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    tn = int(np.sum(~predicted & ~positive))
    result = _metrics_from_confusion(tn, fp, fn, tp)
    if y.size:
        result["brier"] = float(np.mean((p - y) ** 2))
    if tp + fn and tn + fp:
        result["roc_auc"] = float(roc_auc_score(y, p))
        result["pr_auc"] = float(average_precision_score(y, p))
    return result


def patient_recognition_rate(
    patient_ids: Sequence[str], y_true: Sequence[int], y_pred: Sequence[int]
) -> float | None:
    """BreakHis patient-level accuracy: the mean over patients of their images' accuracy."""
    ids = [str(pid) for pid in patient_ids]
    correct = np.asarray(y_true).reshape(-1) == np.asarray(y_pred).reshape(-1)
    if len(ids) != correct.size:
        raise ValueError(f"{len(ids)} patient ids but {correct.size} labels/predictions")
    if not ids:
        return None
    _, patient_index = np.unique(np.asarray(ids), return_inverse=True)
    images = np.bincount(patient_index)
    right = np.bincount(patient_index, weights=correct.astype(np.float64))
    return float(np.mean(right / images))


def majority_baseline_from_counts(n_benign: int, n_malignant: int) -> dict[str, Any]:
    """`majority_baseline` from class counts alone: constant scores need no per-image arrays."""
    n_benign, n_malignant = int(n_benign), int(n_malignant)
    # Ties go to malignant, the positive class, so the baseline's sensitivity is not trivially 0.
    predicts_malignant = n_malignant >= n_benign
    if predicts_malignant:
        result = _metrics_from_confusion(tn=0, fp=n_benign, fn=0, tp=n_malignant)
    else:
        result = _metrics_from_confusion(tn=n_benign, fp=0, fn=n_malignant, tp=0)
    n = n_benign + n_malignant
    if n:
        # Score 1.0 is wrong by 1 on every benign image, score 0.0 on every malignant one.
        result["brier"] = (n_benign if predicts_malignant else n_malignant) / n
    if n_benign and n_malignant:
        # All scores tie: the ROC is the diagonal and the only PR point is (recall 1, prevalence).
        result["roc_auc"] = 0.5
        result["pr_auc"] = n_malignant / n
    result["predicts"] = CLASS_NAMES[1] if predicts_malignant else CLASS_NAMES[0]
    return result


def majority_baseline(y_true: Sequence[int]) -> dict[str, Any]:
    """Metrics of always predicting y_true's majority class with a constant score of 1.0 or 0.0."""
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (benign) or 1 (malignant)")
    n_malignant = int(np.sum(y == 1))
    return majority_baseline_from_counts(y.size - n_malignant, n_malignant)


def choose_threshold(y_true: Sequence[int], p_malignant: Sequence[float]) -> tuple[float, str]:
    """The validation threshold maximising Youden's J, and a one-sentence statement of the rule."""
    y, p = _as_arrays(y_true, p_malignant)
    if not y.size:
        return _DEFAULT_THRESHOLD, "No validation images, so the threshold is the default 0.5."
    if np.unique(y).size < 2:
        only = CLASS_NAMES[int(y[0])]
        return (
            _DEFAULT_THRESHOLD,
            f"The validation split has only {only} images, so Youden's J is undefined and the "
            "threshold is the default 0.5.",
        )
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # the first threshold (+inf) predicts nothing malignant
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    youden = tpr - fpr
    best = youden.max()
    tied = np.flatnonzero(np.isclose(youden, best, rtol=0.0, atol=1e-12))
    # A cut exactly at a validation score sits on the edge of the gap between two scores; its
    # midpoint with the next lower score classifies validation identically and leaves margin
    # on both sides for unseen images.
    distinct = np.unique(p)
    cuts = []
    for index in tied:
        lower = distinct[distinct < thresholds[index]]
        cuts.append((thresholds[index] + lower[-1]) / 2.0 if lower.size else thresholds[index])
    cuts = np.asarray(cuts)
    threshold = float(np.clip(cuts[np.argmin(np.abs(cuts - 0.5))], 0.0, 1.0))
    rule = (
        f"Maximised Youden's J (sensitivity + specificity - 1 = {best:.3f}) on the validation "
        f"split over its {thresholds.size} distinct scores, cutting midway between the two "
        "scores that bound the best cut, ties broken towards 0.5."
    )
    return threshold, rule


def _bin_index(p: np.ndarray) -> np.ndarray:
    # p == 1 would be bin N_BINS; it belongs in the last bin.
    return np.minimum((np.clip(p, 0.0, 1.0) * N_BINS).astype(np.int64), N_BINS - 1)


@dataclasses.dataclass(eq=False)
class StreamingSummary:
    """Mergeable summary of (label, score) pairs in O(N_BINS) memory, for a Beam CombineFn."""

    threshold: float = _DEFAULT_THRESHOLD
    positive_counts: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(N_BINS, dtype=np.int64)
    )
    negative_counts: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(N_BINS, dtype=np.int64)
    )
    brier_sum: float = 0.0
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __post_init__(self) -> None:
        """Check the threshold and histogram shapes."""
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        for name in ("positive_counts", "negative_counts"):
            counts = np.asarray(getattr(self, name), dtype=np.int64)
            if counts.shape != (N_BINS,):
                raise ValueError(f"{name} must have shape ({N_BINS},), got {counts.shape}")
            setattr(self, name, counts)

    def add(self, label: int, p: float) -> StreamingSummary:
        """Count one image with label 0/1 and score p; returns self."""
        # Scalar path: Beam calls this once per element, where array set-up would dominate.
        label, p = int(label), float(p)
        if label not in (0, 1) or p != p:
            raise ValueError(f"need label 0/1 and a numeric score, got {label}, {p}")
        index = min(int(min(max(p, 0.0), 1.0) * N_BINS), N_BINS - 1)
        predicted = p >= self.threshold
        if label:
            self.positive_counts[index] += 1
            self.tp += predicted
            self.fn += not predicted
        else:
            self.negative_counts[index] += 1
            self.fp += predicted
            self.tn += not predicted
        self.brier_sum += (p - label) ** 2
        return self

    def add_batch(self, labels: Sequence[int], p: Sequence[float]) -> StreamingSummary:
        """Count many images at once (e.g. one RunInference batch); returns self."""
        y, scores = _as_arrays(labels, p)
        positive = y == 1
        predicted = scores >= self.threshold
        np.add.at(self.positive_counts, _bin_index(scores[positive]), 1)
        np.add.at(self.negative_counts, _bin_index(scores[~positive]), 1)
        self.brier_sum += float(np.sum((scores - y) ** 2))
        self.tp += int(np.sum(predicted & positive))
        self.fp += int(np.sum(predicted & ~positive))
        self.fn += int(np.sum(~predicted & positive))
        self.tn += int(np.sum(~predicted & ~positive))
        return self

    def merge(self, other: StreamingSummary) -> StreamingSummary:
        """Add other's counts into this summary (in place) and return it."""
        if other.threshold != self.threshold:
            raise ValueError(f"cannot merge thresholds {self.threshold} and {other.threshold}")
        self.positive_counts += other.positive_counts
        self.negative_counts += other.negative_counts
        self.brier_sum += other.brier_sum
        self.tp += other.tp
        self.fp += other.fp
        self.tn += other.tn
        self.fn += other.fn
        return self

    @property
    def n(self) -> int:
        """Number of images added."""
        return self.tp + self.fp + self.tn + self.fn

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per non-empty bin, highest scores first: positives, negatives, and their running sums."""
        pos = self.positive_counts[::-1]
        neg = self.negative_counts[::-1]
        occupied = (pos + neg) > 0
        pos, neg = pos[occupied], neg[occupied]
        return pos, neg, np.cumsum(pos), np.cumsum(neg)

    def metrics(self) -> dict[str, Any]:
        """The same keys as `binary_metrics`; AUCs from the histograms (exact up to bin width)."""
        result = _metrics_from_confusion(self.tn, self.fp, self.fn, self.tp)
        if self.n:
            result["brier"] = self.brier_sum / self.n
        n_pos, n_neg = int(self.positive_counts.sum()), int(self.negative_counts.sum())
        if n_pos and n_neg:
            pos, neg, tp, fp = self._cumulative()
            # Trapezoid rule: each negative is outranked by the positives in higher bins and by
            # half of those sharing its bin.
            result["roc_auc"] = float(np.sum(neg * (tp - pos / 2.0)) / (n_pos * n_neg))
            result["pr_auc"] = float(np.sum(pos * tp / (tp + fp)) / n_pos)
        return result

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) from (0, 0) to (1, 1) over bin thresholds; empty unless both classes seen."""
        n_pos, n_neg = int(self.positive_counts.sum()), int(self.negative_counts.sum())
        if not (n_pos and n_neg):
            return np.array([]), np.array([])
        _, _, tp, fp = self._cumulative()
        return np.concatenate([[0.0], fp / n_neg]), np.concatenate([[0.0], tp / n_pos])

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision), recall ascending from (0, 1); empty when no malignant image seen."""
        n_pos = int(self.positive_counts.sum())
        if not n_pos:
            return np.array([]), np.array([])
        _, _, tp, fp = self._cumulative()
        return np.concatenate([[0.0], tp / n_pos]), np.concatenate([[1.0], tp / (tp + fp)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; histograms stored sparsely as {bin index: count}."""

        def sparse(counts: np.ndarray) -> dict[str, int]:
            return {str(int(i)): int(counts[i]) for i in np.flatnonzero(counts)}

        return {
            "threshold": float(self.threshold),
            "n_bins": N_BINS,
            "positive_counts": sparse(self.positive_counts),
            "negative_counts": sparse(self.negative_counts),
            "brier_sum": float(self.brier_sum),
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamingSummary:
        """Inverse of `to_dict`."""
        if int(data.get("n_bins", N_BINS)) != N_BINS:
            raise ValueError(f"summary has {data['n_bins']} bins, expected {N_BINS}")

        def dense(sparse: Mapping[str, int]) -> np.ndarray:
            counts = np.zeros(N_BINS, dtype=np.int64)
            for index, count in sparse.items():
                counts[int(index)] = int(count)
            return counts

        return cls(
            threshold=float(data["threshold"]),
            positive_counts=dense(data["positive_counts"]),
            negative_counts=dense(data["negative_counts"]),
            brier_sum=float(data["brier_sum"]),
            tp=int(data["tp"]),
            fp=int(data["fp"]),
            tn=int(data["tn"]),
            fn=int(data["fn"]),
        )


def _magnification_order(magnification: str) -> tuple[int, str]:
    known = magnification in MAGNIFICATIONS
    return (MAGNIFICATIONS.index(magnification) if known else len(MAGNIFICATIONS), magnification)


def _majority_label(labels: Iterable[int], patient_id: str) -> int:
    labels = list(labels)
    n_malignant = sum(1 for label in labels if int(label) == 1)
    if 0 < n_malignant < len(labels):
        logger.warning("patient %s has images of both classes; using the majority", patient_id)
    return int(2 * n_malignant >= len(labels))  # ties to malignant, as in the baseline


def records_from_arrays(
    labels: Sequence[int],
    p_malignant: Sequence[float],
    patient_ids: Sequence[str],
    magnifications: Sequence[str],
) -> list[dict[str, Any]]:
    """Zip parallel arrays into the records `evaluate` takes."""
    return [
        {"label": int(y), "p_malignant": float(p), "patient_id": str(pid), "magnification": mag}
        for y, p, pid, mag in zip(labels, p_malignant, patient_ids, magnifications, strict=True)
    ]


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
        correct = sum(int(p >= threshold) == y for y, p in zip(labels, scores, strict=True))
        rows.append(
            {
                "patient_id": pid,
                "magnification": magnification,
                "label": _majority_label(labels, pid),
                "images": len(members),
                "correct": int(correct),
                "sum_p": float(sum(scores)),
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
        predicted = [int(p >= threshold) for p in scores]
        ids = [str(r["patient_id"]) for r in members]
        image["patient_recognition_rate"] = patient_recognition_rate(ids, labels, predicted)
        key_rows = rows.get(None if key == "pooled" else key, [])
        patient, patient_baseline = _patient_level(key_rows, threshold)
        counts = {"images": len(members), "patients": len(set(ids))}
        _place(report, key, image, patient, majority_baseline(labels), patient_baseline, counts)
    return report
