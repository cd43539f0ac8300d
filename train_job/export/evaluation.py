"""Calibrate the trained classifier on validation, evaluate it on a split: metrics.json, plots."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from model.constants import CLASS_NAMES, LOGIT_LAYER
from model.evaluation.evaluate import evaluate
from model.evaluation.labels import label_index
from model.evaluation.metrics import choose_threshold
from model.network.architecture import with_temperature
from model.network.calibration import TemperatureFit, calibrated_probability, fit_temperature
from model.network.gradcam import gradcam_model, heatmap_scale
from model.network.tta import logit_model, pass_chunks, predict_mean_logit, predict_with_tta
from model.reports import plots

logger = logging.getLogger(__name__)

MIN_VALIDATION_PATIENTS = 3


def predict(
    model: keras.Model, dataset: tf.data.Dataset, tta: int = 1, logit_layer: str = LOGIT_LAYER
) -> np.ndarray:
    """P(malignant) for every element of an unshuffled dataset, in order.

    With tta > 1, the sigmoid of each image's mean logit over its test-time views
    (`model.network.tta`), as the scorer computes it with the same --tta.
    """
    if tta == 1:
        return np.asarray(model.predict(dataset, verbose=0), dtype=np.float64).reshape(-1)
    logits_of = logit_model(model, logit_layer)
    batches = (images for images, *_ in dataset)
    scores = [predict_with_tta(logits_of, chunk, tta)[0] for chunk in pass_chunks(batches, tta)]
    return np.concatenate(scores).astype(np.float64) if scores else np.zeros(0)


def predict_logits(model: keras.Model, dataset: tf.data.Dataset, tta: int = 1) -> np.ndarray:
    """The trained (uncalibrated) logit of every element of an unshuffled dataset, in order;
    with tta > 1, each image's mean logit over its test-time views."""
    logits_of = logit_model(model, LOGIT_LAYER)
    if tta == 1:
        return np.asarray(logits_of.predict(dataset, verbose=0), dtype=np.float64).reshape(-1)
    batches = (images for images, *_ in dataset)
    logits = [predict_mean_logit(logits_of, chunk, tta) for chunk in pass_chunks(batches, tta)]
    return np.concatenate(logits).astype(np.float64) if logits else np.zeros(0)


def calibrate(
    model: keras.Model,
    rows: Sequence[dict],
    dataset: tf.data.Dataset,
    method: str,
    tta: int = 1,
) -> tuple[keras.Model, TemperatureFit, np.ndarray]:
    """Fit the temperature on the validation split's logits (mean over tta views): (the
    classifier with T built in, the fit, the calibrated validation P(malignant) in split order,
    which is what `predict` gives for the returned model with the same tta)."""
    logits = predict_logits(model, dataset, tta)
    fit = fit_temperature([label_index(row["label"]) for row in rows], logits, method)
    return (
        with_temperature(model, fit.temperature),
        fit,
        calibrated_probability(logits, fit.temperature),
    )


def decision_threshold(rows: Sequence[dict], p_malignant: np.ndarray) -> tuple[float, str]:
    """The threshold chosen on the validation split, and its rule (with a caution if needed)."""
    threshold, rule = choose_threshold([label_index(row["label"]) for row in rows], p_malignant)
    rule += few_validation_patients(rows)
    logger.info("Decision threshold %.4f: %s", threshold, rule)
    return threshold, rule


def few_validation_patients(rows: Sequence[dict]) -> str:
    """A caution for the threshold rule when a class has few validation patients, else ''."""
    patients = {
        name: {row["slide_id"] for row in rows if row["label"] == name} for name in CLASS_NAMES
    }
    few = {name: len(ids) for name, ids in patients.items() if len(ids) < MIN_VALIDATION_PATIENTS}
    if not few:
        return ""
    counts = " and ".join(f"{count} {name}" for name, count in few.items())
    logger.warning(
        "The validation split has only %s patient(s): the threshold is unreliable", counts
    )
    return f" Caution: the validation split has only {counts} patient(s), so this is unreliable."


def evaluation_records(rows: Sequence[dict], p_malignant: np.ndarray) -> list[dict]:
    """split.csv rows and their scores as the records `model.evaluation.evaluate` takes."""
    return [
        {
            "label": label_index(row["label"]),
            "p_malignant": float(p),
            "patient_id": row["slide_id"],
            "magnification": row["magnification"],
        }
        for row, p in zip(rows, p_malignant, strict=True)
    ]


def evaluation_report(rows: Sequence[dict], p_malignant: np.ndarray, threshold: float) -> dict:
    """The metrics.json report for split.csv rows and their scores."""
    return evaluate(evaluation_records(rows, p_malignant), threshold)


def plot_files(rows: Sequence[dict], p_malignant: np.ndarray, report: dict) -> dict[str, bytes]:
    """PNG bytes of the evaluation plots, by their file (`model.reports.plots.EVALUATION_PLOTS`)."""
    labels = np.array([label_index(row["label"]) for row in rows], dtype=int)
    magnifications = np.array([row["magnification"] for row in rows])
    roc_curves, pr_curves = {}, {}
    groups = {"pooled": np.ones(len(rows), bool)}
    groups.update({mag: magnifications == mag for mag in report["image_level"]["by_magnification"]})
    for name, mask in groups.items():
        section = (
            report["image_level"]["pooled"]
            if name == "pooled"
            else report["image_level"]["by_magnification"][name]
        )
        if len(set(labels[mask])) < 2:
            continue
        curves = plots.exact_curves(labels[mask], p_malignant[mask])
        roc_curves[name] = (*curves["roc"], section["roc_auc"])
        pr_curves[name] = (*curves["pr"], section["pr_auc"])
    prevalence = float(labels.mean()) if len(labels) else None
    return {
        plots.ROC_PLOT: plots.roc_png(roc_curves, title="ROC, test split"),
        plots.PR_PLOT: plots.pr_png(pr_curves, prevalence, title="Precision-recall, test split"),
        plots.CONFUSION_MATRIX_PLOT: plots.confusion_matrix_png(
            report["image_level"]["pooled"]["confusion_matrix"],
            title="Confusion matrix, test split",
        ),
        plots.RELIABILITY_PLOT: plots.reliability_png(
            report["reliability"]["pooled"],
            report["image_level"]["pooled"]["ece"],
            title="Reliability, test split",
        ),
    }


def report_json(report: dict) -> str:
    """metrics.json text (strict JSON: undefined values are null)."""
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


def validation_heatmap_scale(
    model: keras.Model, dataset: tf.data.Dataset, tta: int, logit_layer: str = LOGIT_LAYER
) -> float | None:
    """The card's heatmap_scale, from the exported model's malignant maps on a dataset of
    (image, label) batches (the validation split), at the card's eval_tta."""
    grad_model = gradcam_model(model, logit_layer=logit_layer)
    batches = pass_chunks((images for images, *_ in dataset), tta)
    scale = heatmap_scale(grad_model, batches, tta)
    logger.info("Grad-CAM heatmap scale (validation split, %d view(s)): %s", tta, scale)
    return scale
