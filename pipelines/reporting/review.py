"""The review queue: which scored images a pathologist should look at first, and why.

Every scored image gets its reasons for review:
- each of its input quality flags (`qc_flags`), as they are;
- `patient_disagreement`: its call differs from its patient's call (the majority of the
  patient's image calls, `model.evaluation.evaluate.patient_call`, as in patients.csv); only
  labelled images have a patient;
- `uncertain`: `p_std`, the spread of P(malignant) over the test-time augmentation views, or
  `member_std`, its spread over an ensemble's members, is above the image's distance from the
  threshold, `is_uncertain` (never for one model at --tta 1, where p_std is 0 and member_std
  empty);
- `near_threshold`: P(malignant) is within the band NEAR_THRESHOLD_ODDS_RATIO defines around the
  model card's threshold.

`ReviewQueueFn` keeps the first `limit` images with a reason, in `review_priority` order, in a
list that never holds more than `limit` rows, and counts every reason over all images; review.csv
lists the kept images ranked.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import apache_beam as beam

from model import storage
from model.evaluation.evaluate import patient_call
from model.image.quality import parse_flags
from pipelines.reporting.aggregates import MetricsInputs
from pipelines.scoring.csv_output import CSV_SUFFIX, csv_line
from pipelines.scoring.rows import ScoredImage

REVIEW_NAME = "review"
REVIEW_FILE = REVIEW_NAME + CSV_SUFFIX
DEFAULT_REVIEW_LIMIT = 1000

PATIENT_DISAGREEMENT = "patient_disagreement"
UNCERTAIN = "uncertain"
NEAR_THRESHOLD = "near_threshold"
# The reasons this module finds (QC flags come with the row), in priority order.
MODEL_REASONS = (PATIENT_DISAGREEMENT, UNCERTAIN, NEAR_THRESHOLD)

# An image is near the threshold when its odds of malignancy are within this factor of the
# threshold's odds (|logit p - logit t| <= ln 1.5). At t = 0.5 that is p in [0.4, 0.6]: with a
# calibrated p, every such call is wrong at least 40% of the time, little better than a coin.
# Odds rather than a fixed +-0.1 in p so the band keeps the same meaning at any threshold (at
# t = 0.1 a +-0.1 band would reach p = 0, calls that are wrong almost never).
NEAR_THRESHOLD_ODDS_RATIO = 1.5
# `is_uncertain`, as summary.json says it (member_std: ensembles only)
UNCERTAIN_RULE = "max(p_std, member_std) > |p_malignant - threshold|"
# p is clipped to [P_CLIP, 1 - P_CLIP] before taking log-odds, so p = 0 or 1 (written with 6
# decimals) has a finite distance from the threshold, still beyond every written p in between.
P_CLIP = 1e-7


def add_review_limit_flag(parser: argparse.ArgumentParser) -> None:
    """--review_limit, as the scorer and the re-report both take it."""
    parser.add_argument(
        "--review_limit",
        type=int,
        default=DEFAULT_REVIEW_LIMIT,
        help=f"list at most this many images in {REVIEW_FILE}, first to review first; 0 writes "
        "no review file (summary.json still counts every reason) (default %(default)s)",
    )


def near_threshold_band(threshold: float) -> tuple[float, float]:
    """The (lowest, highest) p that is `near_threshold` at this threshold, both included."""
    ratio = NEAR_THRESHOLD_ODDS_RATIO
    low = threshold / (threshold + ratio * (1.0 - threshold))
    high = ratio * threshold / (ratio * threshold + (1.0 - threshold))
    return low, high


def is_uncertain(
    p_malignant: float, p_std: float, threshold: float, member_std: float | None = None
) -> bool:
    """Whether the views' or the members' spread reaches the threshold:
    max(p_std, member_std) > |p - threshold|.

    One standard deviation of view-to-view spread then carries the call across the threshold:
    it depends on the orientation the field happened to be scanned in. The level is the image's
    own distance from the threshold, not a fixed spread, because p spreads least near 0 and 1:
    with the real-sample model (t = 0.078) the largest 8-view spread over the 345 sample images
    was 0.084, so a fixed 0.1 would flag none, while this rule flags 9 (4 of them misclassified).
    An ensemble's member_std is held to the same level: one standard deviation of disagreement
    between models trained on other patients carries the call across the threshold. Never true
    for one model at --tta 1, where p_std is 0 and member_std is None.
    """
    return largest_spread(p_std, member_std) > abs(p_malignant - threshold)


def largest_spread(p_std: float, member_std: float | None) -> float:
    """The larger of the views' and the members' spread (member_std None: one model)."""
    return p_std if member_std is None else max(p_std, member_std)


def _log_odds(p: float) -> float:
    p = min(max(p, P_CLIP), 1.0 - P_CLIP)
    return math.log(p / (1.0 - p))


def log_odds_distance(p_malignant: float, threshold: float) -> float:
    """How far a score is from the threshold in log-odds: how confident its call is."""
    if math.isnan(p_malignant):
        return math.inf
    return abs(_log_odds(p_malignant) - _log_odds(threshold))


class ReviewCandidate(NamedTuple):
    """A scored image with its reasons for review (none when it needs no second look)."""

    image_path: str
    reasons: tuple[str, ...]
    p_malignant: float
    p_std: float
    predicted_label: str
    patient_id: str
    patient_call: str  # empty for an image without a patient (unlabelled)
    magnification: str
    true_label: str
    qc_flags: str
    heatmap_path: str
    member_std: float | None = None  # ensembles only


class ReviewItem(NamedTuple):
    """One row of review.csv: a candidate with its rank (1 = look first) and reasons joined."""

    rank: int
    image_path: str
    reasons: str  # ";"-separated, QC flags first, then MODEL_REASONS in priority order
    p_malignant: float
    p_std: float
    predicted_label: str
    patient_id: str
    patient_call: str
    magnification: str
    true_label: str
    qc_flags: str
    heatmap_path: str
    member_std: float | None = None  # ensembles only; empty for one model


REVIEW_COLUMNS: tuple[str, ...] = ReviewItem._fields


def patient_calls(inputs: MetricsInputs) -> dict[str, str]:
    """Each labelled patient's call, from the run's per-patient tallies (pooled rows)."""
    return {
        row["patient_id"]: patient_call(row)
        for row in inputs.patient_rows
        if row["magnification"] is None
    }


def review_candidate(
    record: ScoredImage, threshold: float, calls: Mapping[str, str]
) -> ReviewCandidate:
    """The image's reasons for review; `calls` maps patient ids to their calls."""
    call = calls.get(record.patient_id, "") if record.patient_id else ""
    low, high = near_threshold_band(threshold)
    found = {
        PATIENT_DISAGREEMENT: bool(call) and record.predicted_label != call,
        UNCERTAIN: is_uncertain(record.p_malignant, record.p_std, threshold, record.member_std),
        NEAR_THRESHOLD: low <= record.p_malignant <= high,
    }
    reasons = [*parse_flags(record.qc_flags), *[name for name in MODEL_REASONS if found[name]]]
    return ReviewCandidate(
        image_path=record.image_path,
        reasons=tuple(reasons),
        p_malignant=record.p_malignant,
        p_std=record.p_std,
        predicted_label=record.predicted_label,
        patient_id=record.patient_id,
        patient_call=call,
        magnification=record.magnification,
        true_label=record.true_label,
        qc_flags=record.qc_flags,
        heatmap_path=record.heatmap_path,
        member_std=record.member_std,
    )


def review_priority(candidate: ReviewCandidate, threshold: float) -> tuple[int, float, str]:
    """The queue's sort key (smallest first): (tier, order within the tier, image path).

    Tiers, each image in the first that applies:
      0. any QC flag: the score of an unfit input means nothing, so the input itself must be
         judged (rescanned or excluded) before any call counts; most flags first.
      1. patient_disagreement: it questions the patient's diagnosis, the decision that matters;
         the most confident dissenting call first (largest log-odds distance from the
         threshold), since a clearly malignant image in a patient called benign is the one most
         likely to change a diagnosis.
      2. uncertain: the views of one field, or an ensemble's members, disagree; largest spread
         (`largest_spread`) first.
      3. near_threshold: closest to the threshold first (the calls nearest a coin flip).
    The image path breaks the remaining ties, so the order is total and the same on any runner.
    """
    distance = log_odds_distance(candidate.p_malignant, threshold)
    flags = parse_flags(candidate.qc_flags)
    if flags:
        return 0, -float(len(flags)), candidate.image_path
    if PATIENT_DISAGREEMENT in candidate.reasons:
        return 1, -distance, candidate.image_path
    if UNCERTAIN in candidate.reasons:
        return 2, -largest_spread(candidate.p_std, candidate.member_std), candidate.image_path
    return 3, distance, candidate.image_path


class ReviewQueue(NamedTuple):
    """The first images to review, in priority order, and the counts over every image."""

    candidates: list[ReviewCandidate]  # at most the limit, first to review first
    reason_counts: dict[str, int]  # images per reason (an image counts once per reason)
    images: int  # every scored image
    needing_review: int  # images with at least one reason


@dataclasses.dataclass
class _QueueAccumulator:
    kept: list[tuple[tuple[int, float, str], ReviewCandidate]]  # sorted by key, <= limit
    reason_counts: collections.Counter
    images: int = 0
    needing_review: int = 0


def _key(entry: tuple[tuple[int, float, str], ReviewCandidate]) -> tuple[int, float, str]:
    return entry[0]


class ReviewQueueFn(beam.CombineFn):
    """ReviewCandidates -> ReviewQueue, holding at most `limit` candidates at any time.

    Each accumulator keeps its first `limit` candidates sorted by `review_priority`; a candidate
    that would come after all of them in a full list is dropped on arrival. As the key is a
    total order, the result is exactly the first `limit` rows of a full sort, on any runner.
    """

    def __init__(self, limit: int, threshold: float):
        if limit < 0:
            raise ValueError(f"review limit must be 0 or more, got {limit}")
        self._limit = limit
        self._threshold = threshold

    def create_accumulator(self) -> _QueueAccumulator:
        """Nothing kept, nothing counted."""
        return _QueueAccumulator(kept=[], reason_counts=collections.Counter())

    def _keep(self, accumulator: _QueueAccumulator, key: tuple, candidate: ReviewCandidate):
        kept = accumulator.kept
        if len(kept) >= self._limit:
            if not kept or key >= kept[-1][0]:
                return
            kept.pop()  # make room first, so the list never exceeds the limit
        bisect.insort(kept, (key, candidate), key=_key)

    def add_input(
        self, accumulator: _QueueAccumulator, candidate: ReviewCandidate
    ) -> _QueueAccumulator:
        """Count the image and its reasons; keep it if it is among the first `limit`."""
        accumulator.images += 1
        if candidate.reasons:
            accumulator.needing_review += 1
            accumulator.reason_counts.update(candidate.reasons)
            self._keep(accumulator, review_priority(candidate, self._threshold), candidate)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_QueueAccumulator]) -> _QueueAccumulator:
        """Add the counts and keep the first `limit` of all kept candidates, into the first."""
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            merged.images += accumulator.images
            merged.needing_review += accumulator.needing_review
            merged.reason_counts.update(accumulator.reason_counts)
            for key, candidate in accumulator.kept:
                self._keep(merged, key, candidate)
        return merged

    def extract_output(self, accumulator: _QueueAccumulator) -> ReviewQueue:
        """The kept candidates in order, and the counts (every model reason, even at 0)."""
        counts = {reason: 0 for reason in MODEL_REASONS}
        counts.update(accumulator.reason_counts)
        return ReviewQueue(
            candidates=[candidate for _, candidate in accumulator.kept],
            reason_counts=dict(sorted(counts.items())),
            images=accumulator.images,
            needing_review=accumulator.needing_review,
        )


def review_items(queue: ReviewQueue) -> list[ReviewItem]:
    """review.csv's rows: the queue's candidates ranked from 1."""
    return [
        ReviewItem(rank, **{**candidate._asdict(), "reasons": ";".join(candidate.reasons)})
        for rank, candidate in enumerate(queue.candidates, start=1)
    ]


def write_review_csv(queue: ReviewQueue, output_dir: str, limit: int) -> str | None:
    """Write review.csv (header only when no image needs review); its path, None at limit 0."""
    if limit == 0:
        return None
    path = storage.join(output_dir, REVIEW_FILE)
    lines = [",".join(REVIEW_COLUMNS)] + [csv_line(item) for item in review_items(queue)]
    storage.write_text(path, "\n".join(lines) + "\n")
    return path


def review_summary(queue: ReviewQueue, limit: int, threshold: float) -> dict[str, Any]:
    """summary.json's "review" entry: the counts over all images and the rules applied."""
    low, high = near_threshold_band(threshold)
    return {
        "images_needing_review": queue.needing_review,
        "reasons": queue.reason_counts,
        "listed": len(queue.candidates),
        "limit": limit,
        "file": REVIEW_FILE if limit else None,
        "near_threshold_band": [round(low, 6), round(high, 6)],
        "uncertain_rule": UNCERTAIN_RULE,
    }


def with_review(summary: Mapping[str, Any], review: Mapping[str, Any]) -> dict[str, Any]:
    """The run's summary with its "review" entry added."""
    return {**summary, "review": dict(review)}
