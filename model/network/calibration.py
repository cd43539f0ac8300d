"""Probability calibration: temperature scaling, expected calibration error, reliability bins.

Temperature scaling divides the classifier's logit by one scalar T > 0 fitted on the validation
split to minimise the log-loss of sigmoid(logit / T); T > 1 softens an overconfident model. The
ranking of images, hence ROC AUC, does not change. T is built into the exported network (see
`model.network.architecture.with_temperature`), so every consumer of the model gets calibrated
scores.

Calibration is measured on CALIBRATION_BINS equal-width bins of P(malignant) on [0, 1], right-
closed as scikit-learn's `calibration_curve(strategy="uniform")` bins them: bin k holds
k/15 < p <= (k+1)/15, and bin 0 also holds p = 0. A `ReliabilityTally` (per bin: images, sum of
p, malignant images) is all ECE and the reliability curve need; it is built from arrays by the
training job and image by image, merged across workers, by the scoring pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CALIBRATION_BINS = 15
BIN_EDGES: np.ndarray = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
BINNING = (
    f"{CALIBRATION_BINS} equal-width bins of P(malignant) on [0, 1]; bin k holds "
    f"k/{CALIBRATION_BINS} < p <= (k+1)/{CALIBRATION_BINS}, the first also p = 0 "
    '(scikit-learn calibration_curve, strategy="uniform")'
)

TEMPERATURE = "temperature"
NO_CALIBRATION = "none"
CALIBRATION_METHODS: tuple[str, ...] = (TEMPERATURE, NO_CALIBRATION)
# The search range of T. Wide enough for a near-random network's tiny logits (T well below 1)
# and for a badly overconfident one (T of tens); an optimum on an edge is logged.
TEMPERATURE_BOUNDS: tuple[float, float] = (1e-3, 1e3)
# Below this many validation images the fitted T is logged and recorded as uncertain.
MIN_CALIBRATION_IMAGES = 30


def calibration_bin(p: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """The reliability bin (0 .. CALIBRATION_BINS - 1) of each score in [0, 1]."""
    return np.searchsorted(BIN_EDGES[1:-1], np.asarray(p, dtype=np.float64), side="left")


def _labels_and_scores(y_true, values, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if y.shape != v.shape:
        raise ValueError(f"{y.size} labels but {v.size} {what}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (benign) or 1 (malignant)")
    if not np.isfinite(v).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return y, v


@dataclasses.dataclass(eq=False)
class ReliabilityTally:
    """Per reliability bin: images, sum of their P(malignant), malignant images. Mergeable."""

    counts: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(CALIBRATION_BINS, dtype=np.int64)
    )
    p_sums: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(CALIBRATION_BINS, dtype=np.float64)
    )
    positives: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(CALIBRATION_BINS, dtype=np.int64)
    )

    @classmethod
    def from_scores(cls, y_true: Sequence[int], p_malignant: Sequence[float]) -> ReliabilityTally:
        """The tally of whole label and score arrays at once."""
        y, p = _labels_and_scores(y_true, p_malignant, "scores")
        if ((p < 0.0) | (p > 1.0)).any():
            raise ValueError("scores must be in [0, 1]")
        bins = calibration_bin(p)
        return cls(
            counts=np.bincount(bins, minlength=CALIBRATION_BINS).astype(np.int64),
            p_sums=np.bincount(bins, weights=p, minlength=CALIBRATION_BINS),
            positives=np.bincount(bins, weights=y, minlength=CALIBRATION_BINS).astype(np.int64),
        )

    def add(self, label: int, p: float) -> ReliabilityTally:
        """Count one image with label 0/1 and score p in [0, 1]; returns self."""
        if label not in (0, 1) or not 0.0 <= p <= 1.0:
            raise ValueError(f"need label 0/1 and a score in [0, 1], got {label}, {p}")
        index = int(calibration_bin(p))
        self.counts[index] += 1
        self.p_sums[index] += p
        self.positives[index] += int(label)
        return self

    def merge(self, other: ReliabilityTally) -> ReliabilityTally:
        """Add other's bins into this tally (in place) and return it."""
        self.counts += other.counts
        self.p_sums += other.p_sums
        self.positives += other.positives
        return self

    @property
    def n(self) -> int:
        """Images counted."""
        return int(self.counts.sum())

    def ece(self) -> float | None:
        """Expected calibration error: the image-weighted mean over bins of |mean p - fraction
        malignant|; None without images."""
        if not self.n:
            return None
        gaps = np.abs(self.p_sums - self.positives)  # count x |mean p - fraction malignant|
        return float(gaps.sum() / self.n)

    def bins(self) -> list[dict[str, Any]]:
        """Every bin, empty ones included: its edges, images, mean p and fraction malignant."""
        rows = []
        for index in range(CALIBRATION_BINS):
            count = int(self.counts[index])
            rows.append(
                {
                    "lower": float(BIN_EDGES[index]),
                    "upper": float(BIN_EDGES[index + 1]),
                    "count": count,
                    "mean_p": float(self.p_sums[index] / count) if count else None,
                    "fraction_malignant": float(self.positives[index] / count) if count else None,
                }
            )
        return rows


def expected_calibration_error(y_true: Sequence[int], p_malignant: Sequence[float]) -> float | None:
    """ECE over the reliability bins of exact label and score arrays; None without images."""
    return ReliabilityTally.from_scores(y_true, p_malignant).ece()


def calibrated_probability(logits: np.ndarray | Sequence[float], temperature: float) -> np.ndarray:
    """sigmoid(logit / T) in float64."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    return np.exp(-np.logaddexp(0.0, -scaled))


def log_loss(y_true: Sequence[int], logits: Sequence[float], temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of sigmoid(logit / T), computed from logits (never infinite)."""
    y, z = _labels_and_scores(y_true, logits, "logits")
    if not y.size:
        raise ValueError("log-loss of no images")
    scaled = z / float(temperature)
    return float(np.mean(np.logaddexp(0.0, scaled) - y * scaled))


@dataclasses.dataclass(frozen=True)
class TemperatureFit:
    """The temperature, how it was reached, and the validation split's calibration around it."""

    method: str
    temperature: float
    fitted: bool  # False: T = 1 because of --calibration none or a degenerate validation split
    note: str  # why T was not fitted, or a caution about it; empty otherwise
    validation_images: int
    log_loss_before: float | None
    log_loss_after: float | None
    ece_before: float | None
    ece_after: float | None

    def card_entry(self) -> dict[str, Any]:
        """The model card's `calibration` object (JSON-ready, no NaN)."""
        return {**dataclasses.asdict(self), "bins": CALIBRATION_BINS, "binning": BINNING}


def fit_temperature(
    y_true: Sequence[int], logits: Sequence[float], method: str = TEMPERATURE
) -> TemperatureFit:
    """T minimising the validation log-loss of sigmoid(logit / T), or 1 where that is undefined.

    T stays 1, with a warning, when `method` is "none", the split has no images or one class
    only, every logit is equal, or the logits separate the classes perfectly (every malignant
    image above 0, every benign below: the log-loss then falls towards 0 as T -> 0 and has no
    minimum). Raises ValueError for unknown methods and non-finite logits.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    y, z = _labels_and_scores(y_true, logits, "logits")
    reason = _unfittable(y, z) if method == TEMPERATURE else "--calibration none"
    if reason:
        if method == TEMPERATURE:
            logger.warning("Temperature scaling not fitted, T = 1: %s", reason)
        return _measured(method, y, z, 1.0, fitted=False, note=reason)
    temperature = _minimise_log_loss(y, z)
    notes = []
    low, high = TEMPERATURE_BOUNDS
    if not low * 1.01 < temperature < high / 1.01:
        notes.append(f"T = {temperature:.4g} is at the edge of the searched range [{low}, {high}]")
    if y.size < MIN_CALIBRATION_IMAGES:
        notes.append(f"fitted on only {y.size} validation images, so T is uncertain")
    for note in notes:
        logger.warning("Temperature scaling: %s", note)
    return _measured(method, y, z, temperature, fitted=True, note="; ".join(notes))


def _unfittable(y: np.ndarray, z: np.ndarray) -> str:
    """Why no finite T minimises the log-loss on these logits, or '' when one does."""
    if not y.size:
        return "the validation split has no images"
    if np.unique(y).size < 2:
        only = "malignant" if y[0] else "benign"
        return f"the validation split has only {only} images"
    if np.ptp(z) == 0.0:
        return "every validation image has the same logit"
    if (z[y == 1] > 0.0).all() and (z[y == 0] < 0.0).all():
        return (
            "the validation logits separate the classes perfectly, so the log-loss has no "
            "minimum (it falls as T -> 0)"
        )
    return ""


def _minimise_log_loss(y: np.ndarray, z: np.ndarray) -> float:
    """The bounded minimiser of the log-loss over log T (unimodal: convex in 1/T)."""
    from scipy.optimize import minimize_scalar  # deferred: only training fits T

    low, high = TEMPERATURE_BOUNDS
    result = minimize_scalar(
        lambda log_t: log_loss(y, z, math.exp(log_t)),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def _measured(
    method: str, y: np.ndarray, z: np.ndarray, temperature: float, fitted: bool, note: str
) -> TemperatureFit:
    """The fit with the validation log-loss and ECE at T = 1 and at `temperature`."""
    before = after = (None, None)
    if y.size:
        before = (log_loss(y, z), expected_calibration_error(y, calibrated_probability(z, 1.0)))
        p = calibrated_probability(z, temperature)
        after = (log_loss(y, z, temperature), expected_calibration_error(y, p))
    fit = TemperatureFit(
        method=method,
        temperature=float(temperature),
        fitted=fitted,
        note=note,
        validation_images=int(y.size),
        log_loss_before=before[0],
        log_loss_after=after[0],
        ece_before=before[1],
        ece_after=after[1],
    )
    logger.info(
        "Calibration (%s): T = %.4f; validation log-loss %s -> %s, ECE %s -> %s",
        method,
        fit.temperature,
        *(_shown(value) for value in (before[0], after[0], before[1], after[1])),
    )
    return fit


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
