"""The plain data each standard section of report.html shows, and the pieces sections share.

Each builder returns a `Section` for `templates/sections/<name>.html` (or None when the section
is not shown): strings, numbers, lists and dicts, every number already formatted by
`format_metric`; the templates only lay them out. A metric cell (`metric_cell`) carries its
dotted path into metrics.json so the page can be checked against the file.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from model.constants import CLASS_NAMES, HEATMAP_SCALE_PERCENTILE
from model.image.naming import basename
from model.image.overlay import HEATMAP_MAX_ALPHA, JET_LUT
from model.reports.metric_meanings import headline_rows

GALLERY_CATEGORIES: tuple[str, ...] = ("confident_malignant", "confident_benign", "misclassified")

# The headline rows (labels and meanings: model.reports.metric_meanings), image level unless noted.
_HEADLINE = headline_rows(
    (
        ("image_level", "accuracy"),
        ("image_level", "balanced_accuracy"),
        ("image_level", "sensitivity"),
        ("image_level", "specificity"),
        ("image_level", "roc_auc"),
        ("image_level", "pr_auc"),
        ("image_level", "ece"),
        ("image_level", "patient_recognition_rate"),
        ("patient_level", "accuracy"),
    )
)
_MAGNIFICATION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Accuracy", "image_level", "accuracy"),
    ("Balanced acc.", "image_level", "balanced_accuracy"),
    ("Sensitivity", "image_level", "sensitivity"),
    ("Specificity", "image_level", "specificity"),
    ("ROC AUC", "image_level", "roc_auc"),
    ("PR AUC", "image_level", "pr_auc"),
    ("ECE", "image_level", "ece"),
    ("Patient recog. rate", "image_level", "patient_recognition_rate"),
    ("Patient-level acc.", "patient_level", "accuracy"),
    ("Baseline acc.", "baseline.image_level", "accuracy"),
)
_GALLERY_TEXT = {
    "confident_malignant": (
        "Most confident malignant calls",
        "Highest p(malignant) among images called malignant (correct or unlabelled).",
    ),
    "confident_benign": (
        "Most confident benign calls",
        "Lowest p(malignant) among images called benign (correct or unlabelled).",
    ),
    "misclassified": (
        "Misclassifications",
        "Images whose known label differs from the call, most confidently wrong first.",
    ),
}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclasses.dataclass(frozen=True)
class GalleryItem:
    """One Grad-CAM gallery entry; hrefs are plain relative paths inside the output directory."""

    image_path: str  # the source image's path or name, for the caption
    original_href: str  # e.g. "gallery/originals/SOB_B_A-14-22549AB-40-001.png"
    overlay_href: str  # e.g. "overlays/SOB_B_A-14-22549AB-40-001.png"
    p_malignant: float
    predicted_label: str
    true_label: str | None
    category: str  # one of GALLERY_CATEGORIES
    p_std: float | None = None  # spread over the test-time views; None: not computed
    heatmap_peak: float | None = None  # the raw map's maximum (predictions.csv's heatmap_peak)
    fold: int | None = None  # cross-validation: the fold whose model scored the image


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of a report: templates/sections/<name>.html renders `data`; `nav` links to it."""

    name: str  # the template's name and the section's anchor on the page
    nav: str  # its link text in the page's navigation
    data: Mapping[str, Any]  # plain values (str, numbers, lists, dicts), numbers formatted


def format_metric(value: Any) -> str:
    """How the page shows a number: floats with 4 decimals, ints as is, None/NaN as "n/a"."""
    if value is None or isinstance(value, bool):
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def is_known_label(label: Any) -> bool:
    """Whether a true or predicted label is given: neither None nor empty."""
    return label is not None and str(label) != ""


def check_relative_href(href: str) -> str:
    """The href percent-encoded for HTML; ValueError unless it is a relative path inside the dir."""
    if not href or "\\" in href or href.startswith("/") or _SCHEME.match(href):
        raise ValueError(f"report links must be relative paths inside the output dir: {href!r}")
    if ".." in href.split("/"):
        raise ValueError(f"report links must not leave the output dir: {href!r}")
    return quote(href, safe="/")


def _lookup(metrics: Mapping[str, Any], dotted: str) -> Any:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def metric_cell(metrics: Mapping[str, Any], dotted: str) -> dict[str, str]:
    """A metrics.json number for the `metric_cell` macro: its dotted path and how it is shown."""
    return {"path": dotted, "shown": format_metric(_lookup(metrics, dotted))}


def label_tag(label: Any) -> dict[str, str]:
    """A class label for the `label_tag` macro: its CSS class and text ("unknown" when empty)."""
    if not is_known_label(label):
        return {"css": "unknown", "text": "unknown"}
    return {"css": label if label in CLASS_NAMES else "unknown", "text": str(label)}


def _summary_value(key: str, value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_summary_value(str(k), v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_summary_value(key, v) for v in value)
    if key.endswith("seconds") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.1f} s"
    return format_metric(value)


def run_section(summary: Mapping[str, Any] | None) -> Section | None:
    """The run's facts (summary.json's fields worth a line), or None without a summary."""
    if not summary:
        return None
    rows = [
        {"name": str(key).replace("_", " ").capitalize(), "value": _summary_value(str(key), value)}
        for key, value in summary.items()
    ]
    return Section("run", "Run", {"rows": rows})


def headline_section(metrics: Mapping[str, Any] | None) -> Section:
    """The headline metrics against the majority baseline, or a notice without metrics."""
    if metrics is None:
        return Section("headline", "Headline", {"metrics_computed": False})
    pooled = _lookup(metrics, "image_level.pooled") or {}
    matrix = pooled.get("confusion_matrix")
    confusion = None
    if matrix:
        (tn, fp), (fn, tp) = matrix
        confusion = {
            name: format_metric(n)
            for name, n in zip(("tn", "fp", "fn", "tp"), (tn, fp, fn, tp), strict=True)
        }
    rows = [
        {
            "label": label,
            "model": metric_cell(metrics, f"{section}.pooled.{key}"),
            "baseline": metric_cell(metrics, f"baseline.{section}.pooled.{key}"),
            "meaning": meaning,
        }
        for label, section, key, meaning in _HEADLINE
    ]
    data = {
        "metrics_computed": True,
        "counts": {
            "images": format_metric(pooled.get("n")),
            "benign": format_metric(pooled.get("n_benign")),
            "malignant": format_metric(pooled.get("n_malignant")),
            "patients": format_metric(_lookup(metrics, "counts.patients")),
            "threshold": format_metric(metrics.get("threshold")),
        },
        "confusion": confusion,
        "baseline_predicts": _lookup(metrics, "baseline.image_level.pooled.predicts"),
        "rows": rows,
    }
    return Section("headline", "Headline", data)


def plots_section(plots: Mapping[str, str]) -> Section | None:
    """The plot images by caption, or None without plots."""
    if not plots:
        return None
    figures = [
        {"caption": caption, "href": check_relative_href(href)} for caption, href in plots.items()
    ]
    return Section("plots", "Plots", {"figures": figures})


def magnification_section(metrics: Mapping[str, Any] | None) -> Section | None:
    """The metrics per magnification and pooled, or None without metrics."""
    if metrics is None:
        return None
    groups = ["pooled"] + [
        f"by_magnification.{key}"
        for key in (_lookup(metrics, "image_level.by_magnification") or {})
        # A key holding a "." could not be addressed by a dotted data-metric path.
        if "." not in key
    ]
    rows = []
    for group in groups:
        counts = "counts" if group == "pooled" else f"counts.{group}"
        cells = [
            metric_cell(metrics, f"image_level.{group}.n"),
            metric_cell(metrics, f"{counts}.patients"),
            *(
                metric_cell(metrics, f"{section}.{group}.{key}")
                for _, section, key in _MAGNIFICATION_COLUMNS
            ),
        ]
        name = "All (pooled)" if group == "pooled" else group.split(".", 1)[1]
        rows.append({"name": name, "cells": cells})
    headers = ["Images", "Patients", *(label for label, _, _ in _MAGNIFICATION_COLUMNS)]
    return Section("magnification", "By magnification", {"headers": headers, "rows": rows})


def _patient_row(row: Mapping[str, Any]) -> dict[str, Any]:
    images, correct = row.get("images"), row.get("correct")
    accuracy = row.get("accuracy")
    if accuracy is None and images:
        accuracy = float(correct) / float(images)
    return {
        "patient_id": str(row.get("patient_id")),
        "true": label_tag(row.get("true_label")),
        "images": format_metric(images),
        "correct": format_metric(correct),
        "accuracy": format_metric(accuracy),
        "mean_p": format_metric(row.get("mean_p_malignant")),
        "call": label_tag(row.get("majority_prediction")),
        "wrong": is_known_label(row.get("true_label"))
        and row.get("majority_prediction") != row.get("true_label"),
    }


def patients_section(
    patients: Sequence[Mapping[str, Any]], cap: int, full_list: str | None
) -> Section | None:
    """The per-patient table sorted by id, capped at `cap` rows, or None without patients."""
    if not patients:
        return None
    ordered = sorted(patients, key=lambda r: str(r.get("patient_id", "")))
    data = {
        "total": len(ordered),
        "rows": [_patient_row(row) for row in ordered[:cap]],
        "hidden": max(len(ordered) - cap, 0),
        "full_list": full_list,
    }
    return Section("patients", "Patients", data)


def _gallery_card(item: GalleryItem) -> dict[str, Any]:
    return {
        "name": basename(item.image_path),
        "path": item.image_path,
        "original_href": check_relative_href(item.original_href),
        "overlay_href": check_relative_href(item.overlay_href),
        "misclassified": item.category == "misclassified",
        "p": format_metric(float(item.p_malignant)),
        "p_std": None if item.p_std is None else format_metric(float(item.p_std)),
        "peak": None if item.heatmap_peak is None else f"{float(item.heatmap_peak):.3g}",
        "predicted": label_tag(item.predicted_label),
        "true": label_tag(item.true_label),
        "fold": item.fold,
    }


def gallery_section(
    gallery: Sequence[GalleryItem],
    totals: Mapping[str, int] | None,
    has_ground_truth: bool,
    images_list: str | None,
    heatmap_scale: float | None = None,
    shown: Sequence[str] = GALLERY_CATEGORIES,
    fold_scales: Mapping[int, float | None] | None = None,
) -> Section:
    """The Grad-CAM gallery by category (those in `shown`), with what its maps show on which
    scale: the model card's heatmap_scale (None: each map on its own peak), or with
    `fold_scales` each fold model's own; ValueError for an unknown category."""
    unknown = ({item.category for item in gallery} | set(shown)) - set(GALLERY_CATEGORIES)
    if unknown:
        raise ValueError(f"unknown gallery categories {sorted(unknown)}; use {GALLERY_CATEGORIES}")
    categories = []
    for category in (name for name in GALLERY_CATEGORIES if name in shown):
        heading, blurb = _GALLERY_TEXT[category]
        items = [item for item in gallery if item.category == category]
        total = (totals or {}).get(category, len(items))
        categories.append(
            {
                "name": category,
                "heading": heading,
                "blurb": blurb,
                "count": len(items),
                "total": total,
                "capped": total > len(items),
                "cards": [_gallery_card(item) for item in items],
            }
        )
    data = {
        "has_ground_truth": has_ground_truth,
        "images_list": images_list,
        "categories": categories,
        "heatmap": heatmap_key(heatmap_scale, fold_scales),
    }
    return Section("gallery", "Grad-CAM gallery", data)


def heatmap_key(
    scale: float | None, fold_scales: Mapping[int, float | None] | None = None
) -> dict[str, Any]:
    """The overlays' colour key: their shared scale (or, in cross-validation, each fold's, as
    one line) and CSS gradient stops of the colour and opacity `model.image.overlay.overlay_heatmap`
    gives from no evidence (0) to the scale (1)."""
    stops = []
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        red, green, blue = (int(value) for value in JET_LUT[round(level * 255)])
        stops.append(f"rgba({red},{green},{blue},{HEATMAP_MAX_ALPHA * level:.3f}) {level:.0%}")
    by_fold = None
    if fold_scales is not None:
        by_fold = ", ".join(
            f"fold {fold}: {'its own peak' if value is None else f'{float(value):.4g}'}"
            for fold, value in sorted(fold_scales.items())
        )
    return {
        "scale": None if scale is None else f"{float(scale):.4g}",
        "fold_scales": by_fold,
        "percentile": f"{HEATMAP_SCALE_PERCENTILE:g}",
        "max_opacity": f"{HEATMAP_MAX_ALPHA:.0%}",
        "gradient": ", ".join(stops),
    }


def errors_section(errors: Sequence[Mapping[str, Any]], cap: int, full_list: str | None) -> Section:
    """The inputs that could not be used and why, sorted and capped at `cap` rows."""
    ordered = sorted(errors, key=lambda r: (str(r.get("image_path")), str(r.get("error_type"))))
    rows = [
        {
            "image_path": str(row.get("image_path", "")),
            "error_type": str(row.get("error_type", "")),
            "message": str(row.get("message", "")),
        }
        for row in ordered[:cap]
    ]
    data = {
        "total": len(ordered),
        "rows": rows,
        "hidden": max(len(ordered) - cap, 0),
        "full_list": full_list,
    }
    return Section("errors", "Errors", data)
