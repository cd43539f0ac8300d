"""The row schemas of the scorer's CSV outputs: one prediction, one error."""

from __future__ import annotations

from typing import NamedTuple

from model.evaluation.labels import predicted_label
from model.image.naming import parse_breakhis_name
from model.image.quality import QualityMeasures, SizeRange, format_flags, parse_flags, quality_flags

P_DECIMALS = 6
PEAK_DIGITS = 6


class ScoredImage(NamedTuple):
    """One row of predictions.csv; the BreakHis fields are empty when the name does not parse."""

    image_path: str
    p_malignant: float
    predicted_label: str
    true_label: str
    patient_id: str
    magnification: str
    subtype: str
    heatmap_path: str
    # Defaults: not computed (no Grad-CAM, one view, no quality measures).
    heatmap_peak: float | None = None  # the Grad-CAM map's maximum before scaling
    p_std: float = 0.0  # spread of P(malignant) over the test-time augmentation views
    qc_flags: str = ""  # ";"-separated input quality flags, empty when clean
    tissue_fraction: float | None = None
    focus_score: float | None = None
    stain_score: float | None = None
    # Ensembles only: standard deviation of the members' P(malignant); empty for one model.
    member_std: float | None = None


class ScoringError(NamedTuple):
    """One row of errors.csv: an input that could not be scored, and why."""

    image_path: str
    error_type: str
    message: str


PREDICTION_COLUMNS: tuple[str, ...] = ScoredImage._fields
ERROR_COLUMNS: tuple[str, ...] = ScoringError._fields


def scored_image(
    path: str,
    p_malignant: float,
    threshold: float,
    heatmap_path: str,
    p_std: float = 0.0,
    heatmap_peak: float | None = None,
    member_std: float | None = None,
) -> ScoredImage:
    """The prediction row of one image, with ground truth parsed from a BreakHis file name."""
    # The rounded score is the one written, thresholded and aggregated, so predictions.csv,
    # predicted_label and metrics.json always agree with one another.
    p = round(float(p_malignant), P_DECIMALS)
    info = parse_breakhis_name(path)
    return ScoredImage(
        image_path=path,
        p_malignant=p,
        predicted_label=predicted_label(p, threshold),
        true_label=info.label if info else "",
        patient_id=info.slide_id if info else "",
        magnification=info.magnification if info else "",
        subtype=info.subtype if info else "",
        heatmap_path=heatmap_path,
        heatmap_peak=None if heatmap_peak is None else significant(heatmap_peak),
        p_std=round(float(p_std), P_DECIMALS),
        member_std=None if member_std is None else round(float(member_std), P_DECIMALS),
    )


def with_quality(
    row: ScoredImage, measures: QualityMeasures | None, expected_sizes: SizeRange | None
) -> ScoredImage:
    """The row with its input quality measures and qc_flags (unchanged when not measured)."""
    if measures is None:
        return row
    return row._replace(
        qc_flags=format_flags(quality_flags(measures, expected_sizes)),
        tissue_fraction=measures.tissue_fraction,
        focus_score=measures.focus_score,
        stain_score=measures.stain_score,
    )


def is_qc_clean(record: ScoredImage) -> bool:
    """Whether the image raised no input quality flag."""
    return not record.qc_flags


def qc_flags_of(record: ScoredImage) -> tuple[str, ...]:
    """The flags a row's qc_flags lists."""
    return parse_flags(record.qc_flags)


def significant(value: float, digits: int = PEAK_DIGITS) -> float:
    """value to `digits` significant digits: raw map peaks span many orders of magnitude."""
    return float(f"{float(value):.{digits}g}")
