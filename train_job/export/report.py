"""report.html of a training export: test-split metrics, plots, patients and a Grad-CAM gallery."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np

from model import storage
from model.constants import CALIBRATED_LOGIT_LAYER
from model.evaluation.evaluate import PATIENT_COLUMNS, patient_rows_from_records, patient_table
from model.evaluation.labels import predicted_label
from model.image.overlay import scale_heatmap
from model.image.preprocessing import prepare_image
from model.network.gradcam import gradcam_model, predict_with_gradcam
from model.network.tta import pass_chunks
from model.reports.assets import REPORT_ASSETS_DIR, gallery_pair
from model.reports.calibration_section import calibration_section
from model.reports.html_report import GalleryItem, render_report, select_gallery, write_report
from model.reports.plots import EVALUATION_PLOTS, TRAINING_CURVES_PLOT
from model.reports.sections import Section
from train_job.data.discovery import Discovery
from train_job.export.evaluation import evaluation_records

logger = logging.getLogger(__name__)

PLOTS = {**EVALUATION_PLOTS, "Training curves": TRAINING_CURVES_PLOT}


def prediction_rows(split_rows: Sequence[dict], p_malignant: np.ndarray, threshold: float):
    """Rows in the scoring pipeline's predictions.csv shape, for the gallery."""
    return [
        {
            "image_path": row["image_path"],
            "p_malignant": float(p),
            "predicted_label": predicted_label(p, threshold),
            "true_label": row["label"],
        }
        for row, p in zip(split_rows, p_malignant, strict=True)
    ]


def patient_table_rows(
    split_rows: Sequence[dict], p_malignant: np.ndarray, threshold: float
) -> list[dict]:
    """The report's per-patient table, computed as the scoring pipeline's patients.csv is."""
    records = evaluation_records(split_rows, p_malignant)
    patient_rows = patient_rows_from_records(records, threshold)
    return [
        dict(zip(PATIENT_COLUMNS, values, strict=True))
        for values in patient_table(patient_rows, threshold)
    ]


class GalleryPicture(NamedTuple):
    """One gallery image: PNG bytes of the downsized original and its overlay, and the map's
    numbers."""

    original_png: bytes
    overlay_png: bytes
    p_std: float
    heatmap_peak: float


def gallery_pictures(
    model: keras.Model,
    prepared: Sequence[tuple[np.ndarray, np.ndarray]],
    logit_layer: str,
    tta: int,
    heatmap_scale: float | None,
) -> list[GalleryPicture]:
    """The gallery pictures of `prepare_image` results: Grad-CAM of the model's `logit_layer`
    (the malignant evidence) over `tta` views, drawn on `heatmap_scale` as the scorer draws it."""
    if not prepared:
        return []
    batch = np.stack([model_input for model_input, _ in prepared])
    grad_model = gradcam_model(model, logit_layer=logit_layer)
    results = [predict_with_gradcam(grad_model, chunk, tta) for chunk in pass_chunks([batch], tta)]
    heatmaps = np.concatenate([result.heatmaps for result in results])
    spreads = np.concatenate([result.p_std for result in results])
    pictures = []
    for (_, original), heatmap, spread in zip(prepared, heatmaps, spreads, strict=True):
        original_png, overlay_png = gallery_pair(original, scale_heatmap(heatmap, heatmap_scale))
        pictures.append(
            GalleryPicture(
                original_png, overlay_png, float(spread), float(heatmap.max(initial=0.0))
            )
        )
    return pictures


def gallery_item(
    output_dir: str,
    number: int,
    row: Mapping[str, Any],
    picture: GalleryPicture,
    category: str,
    tta: int,
    fold: int | None = None,
) -> GalleryItem:
    """Write one picture's original and overlay PNGs as report_assets/<number> under
    output_dir (local or gs://) and return its gallery item for `row` (a predictions row)."""
    stem = f"{REPORT_ASSETS_DIR}/{number:03d}"
    storage.write_bytes(storage.join(output_dir, f"{stem}_original.png"), picture.original_png)
    storage.write_bytes(storage.join(output_dir, f"{stem}_overlay.png"), picture.overlay_png)
    return GalleryItem(
        image_path=row["image_path"],
        original_href=f"{stem}_original.png",
        overlay_href=f"{stem}_overlay.png",
        p_malignant=row["p_malignant"],
        predicted_label=row["predicted_label"],
        true_label=row["true_label"],
        category=category,
        p_std=picture.p_std if tta > 1 else None,
        heatmap_peak=picture.heatmap_peak,
        fold=fold,
    )


def write_training_report(
    work_dir: str,
    model: keras.Model,
    image_size: int,
    threshold: float,
    split_rows: Sequence[dict],
    p_malignant: np.ndarray,
    metrics: dict,
    discovery: Discovery,
    summary: dict,
    notes: Sequence[str] = (),
    max_bytes: int = storage.DEFAULT_MAX_BYTES,
    logit_layer: str = CALIBRATED_LOGIT_LAYER,
    calibration: Mapping[str, Any] | None = None,
    tta: int = 1,
    heatmap_scale: float | None = None,
) -> str:
    """Compute Grad-CAM for the gallery's test images and write report.html into work_dir.

    The maps are the scorer's: the malignant evidence (Grad-CAM of the card's logit_layer) over
    `tta` views, on the shared heatmap_scale (None: each on its own peak).
    """
    rows = prediction_rows(split_rows, p_malignant, threshold)
    selected = select_gallery(rows)
    chosen = [(category, row) for category, picks in selected.items() for row in picks]
    gallery: list[GalleryItem] = []
    if chosen:
        images = [
            prepare_image(storage.read_bytes(row["image_path"], max_bytes=max_bytes), image_size)
            for _, row in chosen
        ]
        pictures = gallery_pictures(model, images, logit_layer, tta, heatmap_scale)
        gallery = [
            gallery_item(work_dir, number, row, picture, category, tta)
            for number, ((category, row), picture) in enumerate(zip(chosen, pictures, strict=True))
        ]
    errors = [
        {
            "image_path": path,
            "error_type": "UnparsableName",
            "message": "name does not follow SOB_<B|M>_<CODE>-<YEAR>-<SLIDE>-<MAG>-<SEQ>; not used",
        }
        for path in discovery.unparsed
    ]
    errors += [
        {"image_path": path, "error_type": "UnreadableImage", "message": f"{reason}; not used"}
        for path, reason in discovery.unreadable.items()
    ]
    html = render_report(
        title="BreakHis classifier: training export (test split)",
        metrics=metrics,
        plots=PLOTS,
        gallery=gallery,
        patients=patient_table_rows(split_rows, p_malignant, threshold),
        errors=errors,
        summary=summary,
        notes=notes,
        extra_sections=_extra_sections(calibration),
        heatmap_scale=heatmap_scale,
    )
    path = write_report(work_dir, html)
    logger.info("Wrote %s (%d gallery images)", path, len(gallery))
    return path


def _extra_sections(calibration: Mapping[str, Any] | None) -> dict[str, list[Section]]:
    """The training report's own sections, by the standard section they follow."""
    section = calibration_section(calibration)
    return {"headline": [section]} if section is not None else {}
