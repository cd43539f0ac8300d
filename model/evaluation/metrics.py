"""Binary metrics (malignant positive), exact and streaming, and the validation threshold rule.

`binary_metrics` computes them exactly from arrays. The scoring pipeline cannot hold every score
in memory, so it folds images into `StreamingSummary` accumulators (fixed-size score histograms,
exact counts at the threshold and the reliability tally of `model.network.calibration`) whose
`metrics()` has the same keys; `model.evaluation.evaluate` builds the report of both jobs from
either. Undefined values are `None`, never NaN, so reports are valid JSON; every number is a plain
Python int or float.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from model.evaluation.labels import label_name, majority_index, predicted_index
from model.network.calibration import ReliabilityTally

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
    "ece",
)
N_BINS = 40_000
LOGIT_LIMIT = 16.0
_DEFAULT_THRESHOLD = 0.5


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _metrics_from_confusion(tn: int, fp: int, fn: int, tp: int) -> dict[str, Any]:
    """Threshold-dependent metrics and counts; AUCs, Brier and ECE are left None for the caller."""
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
        "ece": None,
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
    y_true: Sequence[int], p_malignant: Sequence[float], threshold: float | np.ndarray
) -> dict[str, Any]:
    """Exact metrics of scores against labels; p >= threshold is predicted malignant (one
    threshold, or one per score)."""
    y, p = _as_arrays(y_true, p_malignant)
    predicted = predicted_index(p, threshold).astype(bool)
    positive = y == 1
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    tn = int(np.sum(~predicted & ~positive))
    result = _metrics_from_confusion(tn, fp, fn, tp)
    if y.size:
        result["brier"] = float(np.mean((p - y) ** 2))
        result["ece"] = ReliabilityTally.from_scores(y, p).ece()
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
    predicts_malignant = bool(majority_index(n_malignant, n_benign + n_malignant))
    if predicts_malignant:
        result = _metrics_from_confusion(tn=0, fp=n_benign, fn=0, tp=n_malignant)
    else:
        result = _metrics_from_confusion(tn=n_benign, fp=0, fn=n_malignant, tp=0)
    n = n_benign + n_malignant
    if n:
        # Score 1.0 is wrong by 1 on every benign image, score 0.0 on every malignant one.
        result["brier"] = (n_benign if predicts_malignant else n_malignant) / n
        # The constant score fills one reliability bin, off by the share of the other class.
        result["ece"] = result["brier"]
    if n_benign and n_malignant:
        # All scores tie: the ROC is the diagonal and the only PR point is (recall 1, prevalence).
        result["roc_auc"] = 0.5
        result["pr_auc"] = n_malignant / n
    result["predicts"] = label_name(int(predicts_malignant))
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
        only = label_name(y[0])
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


def score_bins(p: np.ndarray | Sequence[float]) -> np.ndarray:
    """The histogram bin of each score: bins are uniform in log-odds over +-LOGIT_LIMIT.

    Trained classifiers put most scores within 1e-3 of 0 or 1, where bins uniform in p would
    lump the confident calls together and blur their ranking; in log-odds a bin is about 2e-4
    wide in p at p = 0.5 and far narrower near 0 and 1. Scores within about 1e-7 of 0 or 1
    share the end bins.
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_odds = np.log(p) - np.log1p(-p)
    index = np.floor((log_odds + LOGIT_LIMIT) * (N_BINS / (2.0 * LOGIT_LIMIT)))
    return np.clip(index, 0, N_BINS - 1).astype(np.int64)


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
    reliability: ReliabilityTally = dataclasses.field(default_factory=ReliabilityTally)
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
        """Count one image with label 0/1 and score p in [0, 1]; returns self."""
        label, p = int(label), float(p)
        if label not in (0, 1) or not 0.0 <= p <= 1.0:  # NaN fails the comparison too
            raise ValueError(f"need label 0/1 and a score in [0, 1], got {label}, {p}")
        index = int(score_bins([p])[0])
        predicted = bool(predicted_index(p, self.threshold))
        if label:
            self.positive_counts[index] += 1
            self.tp += predicted
            self.fn += not predicted
        else:
            self.negative_counts[index] += 1
            self.fp += predicted
            self.tn += not predicted
        self.brier_sum += (p - label) ** 2
        self.reliability.add(label, p)
        return self

    def merge(self, other: StreamingSummary) -> StreamingSummary:
        """Add other's counts into this summary (in place) and return it."""
        if other.threshold != self.threshold:
            raise ValueError(f"cannot merge thresholds {self.threshold} and {other.threshold}")
        self.positive_counts += other.positive_counts
        self.negative_counts += other.negative_counts
        self.brier_sum += other.brier_sum
        self.reliability.merge(other.reliability)
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
            result["ece"] = self.reliability.ece()
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
