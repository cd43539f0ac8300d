"""Combiners whose memory does not grow with the number of images.

Image-level metrics come from `model.evaluation.metrics.StreamingSummary` (fixed-size score
histograms per class plus exact counts at the threshold), one per magnification and one pooled;
patient-level metrics from per-patient tallies combined by key; job counts (classes, input quality
flags) from counting combiners. No worker ever holds the list of predictions. The metrics of the
QC-clean images are the same combiners applied to the records that raised no quality flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam

from model.constants import CLASS_NAMES
from model.evaluation.labels import label_index, majority_index
from model.evaluation.metrics import StreamingSummary
from model.image.quality import QC_FLAGS
from pipelines.scoring.rows import ScoredImage, is_qc_clean, qc_flags_of

POOLED = "pooled"
# Patient tallies are keyed (patient_id, magnification); this marks a patient's pooled tally.
ALL_MAGNIFICATIONS = ""


def is_labelled(record: ScoredImage) -> bool:
    """Whether the image's ground truth is known (its name parsed as BreakHis)."""
    return bool(record.true_label)


def _label_index(record: ScoredImage) -> int:
    return label_index(record.true_label)


class ImageSummariesFn(beam.CombineFn):
    """Labelled ScoredImages -> {"pooled": StreamingSummary, "40X": ..., ...}."""

    def __init__(self, threshold: float):
        self._threshold = threshold

    def create_accumulator(self) -> dict[str, StreamingSummary]:
        """No summaries yet; one appears per magnification seen."""
        return {}

    def add_input(
        self, accumulator: dict[str, StreamingSummary], record: ScoredImage
    ) -> dict[str, StreamingSummary]:
        """Count the image in the pooled summary and in its magnification's."""
        label = _label_index(record)
        keys = [POOLED] + ([record.magnification] if record.magnification else [])
        for key in keys:
            if key not in accumulator:
                accumulator[key] = StreamingSummary(self._threshold)
            accumulator[key].add(label, record.p_malignant)
        return accumulator

    def merge_accumulators(
        self, accumulators: Iterable[dict[str, StreamingSummary]]
    ) -> dict[str, StreamingSummary]:
        """Add every accumulator into the first (Beam allows mutating only the first)."""
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            for key, summary in accumulator.items():
                if key not in merged:
                    merged[key] = StreamingSummary(self._threshold)
                merged[key].merge(summary)
        return merged

    def extract_output(self, accumulator: dict[str, StreamingSummary]) -> dict:
        """The summaries as they are."""
        return accumulator


class PatientTally(NamedTuple):
    """Counts of one patient's images (pooled or at one magnification)."""

    images: int
    correct: int
    sum_p: float
    true_malignant: int
    predicted_malignant: int


def patient_keys(record: ScoredImage) -> Iterator[tuple[tuple[str, str], PatientTally]]:
    """One image's contribution to its patient's pooled and per-magnification tallies."""
    truth = _label_index(record)
    predicted = label_index(record.predicted_label)
    tally = PatientTally(1, int(truth == predicted), record.p_malignant, truth, predicted)
    yield (record.patient_id, ALL_MAGNIFICATIONS), tally
    if record.magnification:
        yield (record.patient_id, record.magnification), tally


class PatientTallyFn(beam.CombineFn):
    """Sum PatientTallies: per key, memory is five numbers whatever the image count."""

    def create_accumulator(self) -> PatientTally:
        """The empty tally."""
        return PatientTally(0, 0, 0.0, 0, 0)

    def add_input(self, accumulator: PatientTally, tally: PatientTally) -> PatientTally:
        """Add one image's tally."""
        return PatientTally(*(a + b for a, b in zip(accumulator, tally, strict=True)))

    def merge_accumulators(self, accumulators: Iterable[PatientTally]) -> PatientTally:
        """Sum the partial tallies."""
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged = self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator: PatientTally) -> PatientTally:
        """The tally."""
        return accumulator


def patient_row(keyed: tuple[tuple[str, str], PatientTally]) -> dict[str, Any]:
    """A keyed tally as the row `model.evaluation.evaluate.report_from_summaries` takes."""
    (patient_id, magnification), tally = keyed
    return {
        "patient_id": patient_id,
        "magnification": magnification or None,
        # A patient's label is its images' majority label (BreakHis patients have one).
        "label": majority_index(tally.true_malignant, tally.images),
        "images": tally.images,
        "correct": tally.correct,
        "sum_p": tally.sum_p,
        "predicted_malignant": tally.predicted_malignant,
    }


QC_CLEAN = "qc_clean"


def empty_heatmap_key(predicted_label: str) -> str:
    """OutcomeCountsFn's key counting empty Grad-CAM maps (peak 0) of one predicted class."""
    return f"empty_heatmap_{predicted_label}"


class OutcomeCountsFn(beam.CombineFn):
    """ScoredImages -> {"scored", "labelled", "benign", "malignant", "qc_clean", <each QC flag>}
    counts (an image with several flags counts once under each), and per predicted class the
    Grad-CAM maps with no evidence at all (`empty_heatmap_key`: heatmap_peak == 0)."""

    def create_accumulator(self) -> dict[str, int]:
        """All counts zero."""
        return {
            "scored": 0,
            "labelled": 0,
            **{name: 0 for name in CLASS_NAMES},
            QC_CLEAN: 0,
            **{flag: 0 for flag in QC_FLAGS},
            **{empty_heatmap_key(name): 0 for name in CLASS_NAMES},
        }

    def add_input(self, accumulator: dict[str, int], record: ScoredImage) -> dict[str, int]:
        """Count one prediction."""
        accumulator["scored"] += 1
        accumulator["labelled"] += int(is_labelled(record))
        accumulator[record.predicted_label] += 1
        accumulator[QC_CLEAN] += int(is_qc_clean(record))
        for flag in qc_flags_of(record):
            accumulator[flag] += 1
        accumulator[empty_heatmap_key(record.predicted_label)] += int(record.heatmap_peak == 0)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict[str, int]]) -> dict[str, int]:
        """Sum the counts into the first accumulator."""
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            for key, value in accumulator.items():
                merged[key] += value
        return merged

    def extract_output(self, accumulator: dict[str, int]) -> dict[str, int]:
        """The counts."""
        return accumulator


class MetricsInputs(NamedTuple):
    """Everything the metrics report needs, in memory bounded by magnifications and patients."""

    image_summaries: dict[str, StreamingSummary]
    patient_rows: list[dict[str, Any]]


class ComputeMetrics(beam.PTransform):
    """ScoredImages -> one MetricsInputs (empty summaries when no image is labelled)."""

    def __init__(self, threshold: float):
        super().__init__()
        self._threshold = threshold

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        """Image summaries combined globally; patient tallies combined per patient key."""
        labelled = records | "Labelled" >> beam.Filter(is_labelled)
        summaries = labelled | "ImageSummaries" >> beam.CombineGlobally(
            ImageSummariesFn(self._threshold)
        )
        patient_rows = (
            labelled
            | "PatientKeys" >> beam.FlatMap(patient_keys)
            | "PatientTallies" >> beam.CombinePerKey(PatientTallyFn())
            | "PatientRows" >> beam.Map(patient_row)
            # One row per patient and magnification: bounded by the patients, not the images.
            | "CollectPatients" >> beam.combiners.ToList()
        )
        return summaries | "Join" >> beam.Map(
            lambda image_summaries, rows: MetricsInputs(image_summaries, rows),
            beam.pvalue.AsSingleton(patient_rows),
        )
