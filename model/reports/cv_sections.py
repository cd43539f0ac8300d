"""The sections only the cross-validation report has: the headline "mean ± sd over K folds"
beside the baseline and the pooled out-of-fold value, the same per magnification, and the folds.

Each cell of a spread carries the dotted paths of its mean and sd in cv_metrics.json (as
`report_sections.metric_cell` does for metrics.json), so the page can be checked against the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from model.reports.metric_meanings import headline_rows
from model.reports.sections import Section, format_metric, metric_cell

# The headline rows (labels and meanings: model.reports.metric_meanings), image level unless noted.
CV_HEADLINE = headline_rows(
    (
        ("image_level", "accuracy"),
        ("image_level", "balanced_accuracy"),
        ("image_level", "sensitivity"),
        ("image_level", "specificity"),
        ("image_level", "f1"),
        ("image_level", "roc_auc"),
        ("image_level", "pr_auc"),
        ("image_level", "brier"),
        ("image_level", "ece"),
        ("image_level", "patient_recognition_rate"),
        ("patient_level", "accuracy"),
        ("patient_level", "balanced_accuracy"),
        ("patient_level", "roc_auc"),
    )
)
CV_MAGNIFICATION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Accuracy", "image_level", "accuracy"),
    ("Balanced acc.", "image_level", "balanced_accuracy"),
    ("ROC AUC", "image_level", "roc_auc"),
    ("Patient recog. rate", "image_level", "patient_recognition_rate"),
    ("Patient-level acc.", "patient_level", "accuracy"),
    ("Baseline acc.", "baseline.image_level", "accuracy"),
)


def spread_cell(cv_metrics: Mapping[str, Any], dotted: str) -> dict[str, Any]:
    """A mean ± sd for the `spread_cell` macro: the metric_cells of its mean and sd."""
    return {
        "mean": metric_cell(cv_metrics, f"{dotted}.mean"),
        "sd": metric_cell(cv_metrics, f"{dotted}.sd"),
    }


def cv_headline_section(cv_metrics: Mapping[str, Any]) -> Section:
    """The pooled metrics: mean ± sd over the folds, the baseline's, and the out-of-fold value."""
    rows = [
        {
            "label": label,
            "model": spread_cell(cv_metrics, f"{block}.pooled.{key}"),
            "baseline": spread_cell(cv_metrics, f"baseline.{block}.pooled.{key}"),
            "oof": metric_cell(cv_metrics, f"{block}.pooled.{key}.oof"),
            "meaning": meaning,
        }
        for label, block, key, meaning in CV_HEADLINE
    ]
    counts = (cv_metrics.get("counts") or {}).get("oof") or {}
    data = {
        "folds": format_metric(cv_metrics.get("folds")),
        "images": format_metric(counts.get("images")),
        "patients": format_metric(counts.get("patients")),
        "sd_rule": cv_metrics.get("sd", ""),
        "rows": rows,
    }
    return Section("cv_headline", "Mean ± sd over folds", data)


def cv_magnification_section(cv_metrics: Mapping[str, Any]) -> Section:
    """Per magnification and pooled: mean ± sd over the folds of the main metrics."""
    groups = ["pooled"] + [
        f"by_magnification.{key}"
        for key in ((cv_metrics.get("image_level") or {}).get("by_magnification") or {})
        if "." not in key  # a dotted key could not be addressed by a data-metric path
    ]
    rows = [
        {
            "name": "All (pooled)" if group == "pooled" else group.split(".", 1)[1],
            "cells": [
                spread_cell(cv_metrics, f"{block}.{group}.{key}")
                for _, block, key in CV_MAGNIFICATION_COLUMNS
            ],
        }
        for group in groups
    ]
    headers = [label for label, _, _ in CV_MAGNIFICATION_COLUMNS]
    return Section("cv_magnification", "By magnification", {"headers": headers, "rows": rows})


def cv_folds_section(folds: Sequence[Mapping[str, Any]]) -> Section:
    """One row per fold: its folder, test split, threshold, temperature and headline values.

    folds: {fold, folder, model_id, threshold, temperature, report} with report the fold's
    evaluation report.
    """
    rows = []
    for fold in folds:
        pooled = fold["report"]["image_level"]["pooled"]
        rows.append(
            {
                "fold": str(fold["fold"]),
                "folder": fold["folder"],
                "model_id": fold["model_id"],
                "images": format_metric(pooled.get("n")),
                "patients": format_metric(fold["report"]["counts"].get("patients")),
                "threshold": format_metric(fold["threshold"]),
                "temperature": format_metric(fold["temperature"]),
                "accuracy": format_metric(pooled.get("accuracy")),
                "roc_auc": format_metric(pooled.get("roc_auc")),
            }
        )
    return Section("cv_folds", "Folds", {"rows": rows})
