"""The training report's "Calibration" section: the temperature and what it did on validation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.reports.sections import Section, format_metric


def calibration_section(calibration: Mapping[str, Any] | None) -> Section | None:
    """The section from a model card's `calibration` object (None: not shown)."""
    if not calibration:
        return None
    pairs = (
        ("Validation log-loss", "log_loss_before", "log_loss_after"),
        ("Validation ECE", "ece_before", "ece_after"),
    )
    return Section(
        "calibration",
        "Calibration",
        {
            "method": calibration["method"],
            "temperature": format_metric(float(calibration["temperature"])),
            "fitted": bool(calibration["fitted"]),
            "note": calibration.get("note") or "",
            "validation_images": calibration["validation_images"],
            "binning": calibration.get("binning", ""),
            "rows": [
                {
                    "label": label,
                    "before": format_metric(calibration.get(before)),
                    "after": format_metric(calibration.get(after)),
                }
                for label, before, after in pairs
            ],
        },
    )
