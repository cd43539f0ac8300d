"""The report's "Input quality" section: images per QC flag and the QC-clean headline metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.image.quality import (
    LOW_TISSUE,
    MIN_FOCUS_SCORE,
    MIN_STAIN_SCORE,
    MIN_TISSUE_FRACTION,
    NOT_HE_STAINED,
    OUT_OF_FOCUS,
    QC_FLAGS,
    SIZE_TOLERANCE,
    UNEXPECTED_SIZE,
)
from model.reports.sections import Section, metric_cell

FLAG_MEANINGS: Mapping[str, str] = {
    LOW_TISSUE: f"tissue covers less than {MIN_TISSUE_FRACTION:.0%} of the image (tissue_fraction)",
    NOT_HE_STAINED: f"colour does not agree with H&E staining (stain_score < {MIN_STAIN_SCORE})",
    OUT_OF_FOCUS: f"little fine detail: blurred or empty (focus_score < {MIN_FOCUS_SCORE})",
    UNEXPECTED_SIZE: (
        f"width or height more than {SIZE_TOLERANCE}x outside the training images' range"
    ),
}
"""What each flag says, with its threshold, for the page."""

# (label, dotted key under a report) of the metrics shown for all images and QC-clean ones.
_COMPARED: tuple[tuple[str, str], ...] = (
    ("Images", "counts.images"),
    ("Accuracy", "image_level.pooled.accuracy"),
    ("Balanced accuracy", "image_level.pooled.balanced_accuracy"),
    ("Sensitivity", "image_level.pooled.sensitivity"),
    ("Specificity", "image_level.pooled.specificity"),
    ("ROC AUC", "image_level.pooled.roc_auc"),
    ("Patient-level accuracy", "patient_level.pooled.accuracy"),
)


def quality_section(
    quality_control: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None
) -> Section | None:
    """The section from summary.json's `quality_control` and metrics.json (None: not shown)."""
    if not quality_control:
        return None
    counts = quality_control["flag_counts"]
    comparison = []
    if metrics is not None:
        comparison = [
            {
                "label": label,
                "all": metric_cell(metrics, key),
                "clean": metric_cell(metrics, f"qc_clean.{key}"),
            }
            for label, key in _COMPARED
        ]
    return Section(
        "quality",
        "Input quality",
        {
            "clean": quality_control["clean_images"],
            "flagged": quality_control["flagged_images"],
            "flags": [
                {"flag": flag, "count": counts.get(flag, 0), "meaning": FLAG_MEANINGS[flag]}
                for flag in QC_FLAGS
            ],
            "size_check": bool(quality_control.get("size_check")),
            "metrics_computed": metrics is not None,
            "clean_metrics": metrics is not None and metrics.get("qc_clean") is not None,
            "comparison": comparison,
        },
    )
