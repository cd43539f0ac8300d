"""The scoring report's "Needs review" section: the review queue's counts and first images."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from model.image.naming import basename
from model.reports.quality_section import FLAG_MEANINGS
from model.reports.sections import Section, check_relative_href, format_metric, label_tag
from pipelines.reporting.review import (
    NEAR_THRESHOLD,
    PATIENT_DISAGREEMENT,
    REVIEW_FILE,
    UNCERTAIN,
    UNCERTAIN_RULE,
    ReviewQueue,
    near_threshold_band,
)
from pipelines.scoring.heatmaps import overlay_href

REVIEW_PAGE_ITEMS = 20


def needs_review_section(
    queue: ReviewQueue,
    gradcam: bool,
    page_items: int = REVIEW_PAGE_ITEMS,
    link_overlay: Callable[[str], str | None] = overlay_href,
) -> dict[str, Any]:
    """The "Needs review" section's data: counts per reason over every scored image, and the
    queue's first `page_items` images with their overlay links (None without Grad-CAM);
    `link_overlay` turns a row's heatmap_path into the page's link (None: no overlay)."""
    items = []
    for rank, candidate in enumerate(queue.candidates[:page_items], start=1):
        has_overlay = gradcam and bool(candidate.heatmap_path)
        items.append(
            {
                "rank": rank,
                "image_path": candidate.image_path,
                "reasons": list(candidate.reasons),
                "p_malignant": candidate.p_malignant,
                "p_std": candidate.p_std,
                "predicted_label": candidate.predicted_label,
                "patient_id": candidate.patient_id or None,
                "patient_call": candidate.patient_call or None,
                "true_label": candidate.true_label or None,
                "overlay_href": link_overlay(candidate.heatmap_path) if has_overlay else None,
            }
        )
    return {
        "images": queue.images,
        "needing_review": queue.needing_review,
        "reason_counts": dict(sorted(queue.reason_counts.items(), key=lambda kv: -kv[1])),
        "items": items,
        "listed": len(queue.candidates),
        "full_list": REVIEW_FILE if queue.candidates else None,
    }


def review_section(data: Mapping[str, Any], threshold: float) -> Section:
    """The "Needs review" section: `needs_review_section`'s data, formatted for the page."""
    low, high = near_threshold_band(threshold)
    meanings = {
        PATIENT_DISAGREEMENT: "the image is called differently from its patient's majority call",
        UNCERTAIN: "the spread over the augmented views, or over the ensemble's members, reaches "
        f"the threshold ({UNCERTAIN_RULE})",
        NEAR_THRESHOLD: f"p(malignant) within [{low:.4f}, {high:.4f}] around the threshold",
        **FLAG_MEANINGS,
    }
    items = [
        {
            "rank": item["rank"],
            "name": basename(item["image_path"]),
            "path": item["image_path"],
            "reasons": item["reasons"],
            "p": format_metric(item["p_malignant"]),
            "p_std": format_metric(item["p_std"]),
            "called": label_tag(item["predicted_label"]),
            "patient_id": item["patient_id"],
            "patient_call": label_tag(item["patient_call"]),
            "true": label_tag(item["true_label"]),
            "overlay_href": check_relative_href(item["overlay_href"])
            if item["overlay_href"]
            else None,
        }
        for item in data["items"]
    ]
    limit_note = None
    if data["needing_review"] and not data["full_list"]:
        limit_note = f"Run with --review_limit 0: no {REVIEW_FILE} was written."
    return Section(
        "review",
        "Needs review",
        {
            "images": data["images"],
            "needing_review": data["needing_review"],
            "listed": data["listed"],
            "full_list": data["full_list"],
            "limit_note": limit_note,
            "reasons": [
                {"reason": reason, "count": count, "meaning": meanings.get(reason, "")}
                for reason, count in data["reason_counts"].items()
            ],
            "items": items,
        },
    )
