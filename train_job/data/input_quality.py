"""Input quality control in training: what the card records for the scorer's size check, and how
many images of each split every quality flag would have caught.

The measures come from the data discovery's one decode of every image (`data.inspect_images`);
nothing here decodes. The size range is the training split's, the one a scorer checks against,
so the validation and test counts show what scoring those images would flag.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from model.image.quality import (
    QC_FLAGS,
    QualityMeasures,
    SizeRange,
    count_flags,
    quality_flags,
    size_range,
    thresholds,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """The training images' size range (None when none was measured) and per-split flag counts."""

    sizes: SizeRange | None
    by_split: dict[str, dict[str, Any]]  # split -> model.image.quality.count_flags(...)

    def card_sizes(self) -> dict[str, Any]:
        """The card's `training_image_sizes` ({} when no training image was measured)."""
        return self.sizes.to_card() if self.sizes is not None else {}

    def card_summary(self) -> dict[str, Any]:
        """The card's `data_summary["quality_control"]`: thresholds and counts by split."""
        return {"thresholds": thresholds(), "by_split": self.by_split}


def quality_report(
    by_split: Mapping[str, Sequence[Mapping[str, Any]]],
    measures: Mapping[str, QualityMeasures],
) -> QualityReport:
    """The size range of the measured training images and every split's flag counts.

    Images without measures (discovery run without its decoding check) are left out of both.
    """
    measured = {
        split: [measures[row["image_path"]] for row in rows if row["image_path"] in measures]
        for split, rows in by_split.items()
    }
    sizes = size_range((m.width, m.height) for m in measured.get("train", []))
    counts = {
        split: count_flags(quality_flags(m, sizes) for m in split_measures)
        for split, split_measures in measured.items()
    }
    for split, split_counts in counts.items():
        logger.info(
            "Input quality, %s split: %d of %d images clean; %s",
            split,
            split_counts["clean"],
            split_counts["images"],
            ", ".join(f"{flag} {split_counts['flags'][flag]}" for flag in QC_FLAGS),
        )
    return QualityReport(sizes, counts)
