"""What each headline metric is called and means: one label and one sentence per metric, shared
by the scoring, training and cross-validation reports."""

from __future__ import annotations

from collections.abc import Sequence

# (block in metrics.json / cv_metrics.json, metric) -> (label, meaning).
METRIC_MEANINGS: dict[tuple[str, str], tuple[str, str]] = {
    ("image_level", "accuracy"): ("Accuracy", "share of images called correctly"),
    ("image_level", "balanced_accuracy"): (
        "Balanced accuracy",
        "mean of sensitivity and specificity; 0.5 is chance whatever the class mix",
    ),
    ("image_level", "sensitivity"): (
        "Sensitivity",
        "share of malignant images called malignant",
    ),
    ("image_level", "specificity"): ("Specificity", "share of benign images called benign"),
    ("image_level", "f1"): ("F1", "harmonic mean of precision and sensitivity"),
    ("image_level", "roc_auc"): (
        "ROC AUC",
        "ranking quality over all thresholds; 0.5 is chance",
    ),
    ("image_level", "pr_auc"): (
        "PR AUC",
        "average precision for malignant; chance is prevalence",
    ),
    ("image_level", "brier"): (
        "Brier score",
        "mean squared error of p(malignant); lower is better",
    ),
    ("image_level", "ece"): (
        "ECE (15 bins)",
        "expected calibration error: mean gap between p(malignant) and the observed share of "
        "malignant images, over 15 equal-width bins of p; 0 is perfectly calibrated",
    ),
    ("image_level", "patient_recognition_rate"): (
        "Patient recognition rate",
        "mean over patients of the share of their images called correctly (BreakHis)",
    ),
    ("patient_level", "accuracy"): (
        "Patient-level accuracy",
        "each patient called by the mean p(malignant) of their images",
    ),
    ("patient_level", "balanced_accuracy"): (
        "Patient-level balanced acc.",
        "the same, balanced over the two classes",
    ),
    ("patient_level", "roc_auc"): ("Patient-level ROC AUC", "patients ranked by their mean p"),
}


def headline_rows(metrics: Sequence[tuple[str, str]]) -> tuple[tuple[str, str, str, str], ...]:
    """(label, block, metric, meaning) of each (block, metric), in the order given."""
    return tuple((METRIC_MEANINGS[key][0], *key, METRIC_MEANINGS[key][1]) for key in metrics)
