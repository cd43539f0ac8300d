"""The plots and report.html of a cross-validation aggregate (`cross_validation.aggregate`).

Plots: out-of-fold ROC and PR with each fold's curve, the out-of-fold confusion matrix and
reliability diagram, and the metrics per magnification with their spread over the folds. The
report's gallery shows the out-of-fold mistakes with Grad-CAM from the model of the fold that
scored each one (its card's logit layer, views and heatmap scale), as the training report does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model import storage
from model.evaluation.evaluate import PATIENT_COLUMNS, patient_rows_from_records, patient_table
from model.evaluation.fold_predictions import evaluation_records
from model.evaluation.labels import label_index
from model.image.naming import printable_path
from model.image.preprocessing import prepare_image
from model.network.model_card import load_exported_model
from model.reports import plots
from model.reports.cv_sections import (
    cv_folds_section,
    cv_headline_section,
    cv_magnification_section,
)
from model.reports.html_report import render_page, select_gallery, write_report
from model.reports.sections import (
    GalleryItem,
    gallery_section,
    patients_section,
    plots_section,
    run_section,
)
from train_job.cross_validation.aggregate_files import CV_PLOTS, SPREAD_PLOT
from train_job.cross_validation.folds import Fold
from train_job.export.report import gallery_item, gallery_pictures

logger = logging.getLogger(__name__)

OOF_NAME = "out-of-fold (pooled)"
# (panel title, block, metric, the baseline's block) of the per-magnification chart.
_SPREAD_PANELS = (
    ("Image accuracy", "image_level", "accuracy"),
    ("Balanced accuracy", "image_level", "balanced_accuracy"),
    ("ROC AUC", "image_level", "roc_auc"),
    ("Patient-level accuracy", "patient_level", "accuracy"),
)
MAX_MISTAKES = 48


def _curves(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple]:
    labels = [label_index(row["true_label"]) for row in rows]
    return plots.exact_curves(labels, [row["p_malignant"] for row in rows])


def plot_files(
    rows: Sequence[Mapping[str, Any]],
    folds: Sequence[Fold],
    reports: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Any],
) -> dict[str, bytes]:
    """PNG bytes of every plot in CV_PLOTS, by file."""
    oof = metrics["out_of_fold_report"]
    roc, pr = {}, {}
    named = [(OOF_NAME, rows, oof)] + [
        (f"fold {fold.index}", fold.predictions, report)
        for fold, report in zip(folds, reports, strict=True)
    ]
    for name, members, report in named:
        curves = _curves(members)
        pooled = report["image_level"]["pooled"]
        if curves["roc"][0].size:
            roc[name] = (*curves["roc"], pooled["roc_auc"])
        if curves["pr"][0].size:
            pr[name] = (*curves["pr"], pooled["pr_auc"])
    labels = [label_index(row["true_label"]) for row in rows]
    prevalence = float(np.mean(labels)) if labels else None
    k = len(folds)
    return {
        plots.ROC_PLOT: plots.roc_png(roc, title=f"ROC, {k} folds"),
        plots.PR_PLOT: plots.pr_png(pr, prevalence, title=f"Precision-recall, {k} folds"),
        SPREAD_PLOT: plots.metric_spread_png(
            spread_panels(metrics), title=f"Mean ± sd over {k} folds, per magnification"
        ),
        plots.CONFUSION_MATRIX_PLOT: plots.confusion_matrix_png(
            oof["image_level"]["pooled"]["confusion_matrix"], title="Confusion matrix, out-of-fold"
        ),
        plots.RELIABILITY_PLOT: plots.reliability_png(
            oof["reliability"]["pooled"],
            oof["image_level"]["pooled"]["ece"],
            title="Reliability, out-of-fold",
        ),
    }


def spread_panels(metrics: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The per-magnification chart's data: {panel: {group: entry + the baseline's mean}}."""
    panels = {}
    for title, block, key in _SPREAD_PANELS:
        section, baseline = metrics[block], metrics["baseline"][block]
        groups = {"pooled": ("pooled", None)} | {
            name: ("by_magnification", name) for name in section["by_magnification"]
        }
        panel = {}
        for group, (part, name) in groups.items():
            entry = section[part] if name is None else section[part][name]
            base = baseline[part] if name is None else baseline[part].get(name, {})
            if key in entry:
                panel[group] = {**entry[key], "baseline": (base.get(key) or {}).get("mean")}
        panels[title] = panel
    return panels


def oof_patient_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-patient table of the out-of-fold predictions (each patient at its fold's
    threshold), as the training report's and the scorer's patients.csv."""
    patient_rows = patient_rows_from_records(evaluation_records(rows), None)
    return [
        dict(zip(PATIENT_COLUMNS, values, strict=True))
        for values in patient_table(patient_rows, None)
    ]


def mistake_gallery(
    output_dir: str, folds: Sequence[Fold], rows: Sequence[Mapping[str, Any]], max_bytes: int
) -> tuple[list[GalleryItem], int]:
    """Grad-CAM pictures of the most confidently wrong out-of-fold calls, each from its own
    fold's model, written into report_assets/; (gallery items, all mistakes). An image that
    cannot be read any more is left out of the gallery with a warning."""
    picked = select_gallery(rows, per_category=0, max_misclassified=MAX_MISTAKES)["misclassified"]
    total = sum(1 for row in rows if row["predicted_label"] != row["true_label"])
    by_fold = {fold.index: fold for fold in folds}
    items: list[GalleryItem] = []
    for index in sorted({row["fold"] for row in picked}):
        fold = by_fold[index]
        chosen, prepared = [], []
        for row in (row for row in picked if row["fold"] == index):
            try:
                data = storage.read_bytes(row["image_path"], max_bytes=max_bytes)
                prepared.append(prepare_image(data, fold.card.image_size))
                chosen.append(row)
            except Exception as error:  # moved, deleted or unreadable since training
                logger.warning("gallery leaves out %s: %s", row["image_path"], error)
        if not chosen:
            continue
        model, card = load_exported_model(fold.folder)
        pictures = gallery_pictures(
            model, prepared, card.logit_layer, card.eval_tta, card.heatmap_scale
        )
        items += [
            gallery_item(
                output_dir, len(items) + offset, row, picture, "misclassified", card.eval_tta, index
            )
            for offset, (row, picture) in enumerate(zip(chosen, pictures, strict=True))
        ]
    order = {row["image_path"]: rank for rank, row in enumerate(picked)}
    return sorted(items, key=lambda item: order[item.image_path]), total


def _summary(folds: Sequence[Fold], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    config = folds[0].card.training_config
    return {
        "folds": len(folds),
        "fold_exports": [printable_path(fold.folder) for fold in folds],
        "data_dir": printable_path(str(config.get("data_dir"))),
        "images": len(rows),
        "patients": len({row["patient_id"] for row in rows}),
        "seed": config.get("seed"),
        "weights": printable_path(str(config.get("weights"))),
        "thresholds": [round(float(fold.card.threshold), 4) for fold in folds],
        "model_ids": [fold.card.model_id for fold in folds],
    }


def _notes(folds: Sequence[Fold]) -> list[str]:
    return [
        f"{len(folds)}-fold cross-validation by specimen: every image is in the test split of "
        "exactly one fold, and each fold's model never saw its test patients in training or "
        "validation.",
        "Mean ± sd is over the folds' test splits (sample standard deviation, ddof=1); the "
        "out-of-fold value pools every fold's test predictions, each image called at the "
        "threshold of the fold that scored it (thresholds "
        + ", ".join(f"fold {fold.index}: {float(fold.card.threshold):.4f}" for fold in folds)
        + ").",
    ]


def write_plots_and_report(
    output_dir: str,
    folds: Sequence[Fold],
    rows: Sequence[Mapping[str, Any]],
    reports: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    max_bytes: int,
) -> str:
    """Write plots/, report_assets/ and report.html into output_dir; returns the report's path."""
    for name, png in plot_files(rows, folds, reports, metrics).items():
        storage.write_bytes(storage.join(output_dir, *name.split("/")), png)
    gallery, total = mistake_gallery(output_dir, folds, rows, max_bytes)
    sections = [
        run_section(_summary(folds, rows)),
        cv_headline_section(metrics),
        cv_magnification_section(metrics),
        plots_section(CV_PLOTS),
        cv_folds_section(
            [
                {
                    "fold": fold.index,
                    "folder": printable_path(fold.folder),
                    "model_id": fold.card.model_id,
                    "threshold": float(fold.card.threshold),
                    "temperature": float(fold.card.temperature),
                    "report": report,
                }
                for fold, report in zip(folds, reports, strict=True)
            ]
        ),
        patients_section(oof_patient_rows(rows), cap=500, full_list=None),
        gallery_section(
            gallery,
            {"misclassified": total},
            has_ground_truth=True,
            images_list="oof_predictions.csv",
            shown=("misclassified",),
            fold_scales={fold.index: fold.card.heatmap_scale for fold in folds},
        ),
    ]
    html = render_page(
        title=f"BreakHis classifier: {len(folds)}-fold cross-validation",
        sections=[section for section in sections if section is not None],
        notes=_notes(folds),
        threshold=None,
    )
    path = write_report(output_dir, html)
    logger.info(
        "Wrote %s (%d of %d out-of-fold mistakes in the gallery)", path, len(gallery), total
    )
    return path
