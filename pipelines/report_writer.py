"""Job-level outputs: metrics.json, patients.csv, plots/ and summary.json, via `model.storage`."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from model import storage
from model.constants import CLASS_NAMES
from model.evaluation import PATIENT_COLUMNS, patient_table, report_from_summaries
from pipelines.aggregates import POOLED, MetricsInputs
from pipelines.outputs import csv_line

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PATIENTS_FILE = "patients.csv"
SUMMARY_FILE = "summary.json"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, allow_nan=False) + "\n"


def _curves(inputs: MetricsInputs, report: Mapping[str, Any]) -> tuple[dict, dict]:
    """ROC and PR curves (pooled first, then by magnification) with their areas."""
    image_level = report["image_level"]
    roc, pr = {}, {}
    for key in [POOLED, *image_level["by_magnification"]]:
        summary = inputs.image_summaries[key]
        metrics = image_level[POOLED] if key == POOLED else image_level["by_magnification"][key]
        roc[key] = (*summary.roc_curve(), metrics["roc_auc"])
        pr[key] = (*summary.pr_curve(), metrics["pr_auc"])
    return roc, pr


def write_metrics(inputs: MetricsInputs, output_dir: str, threshold: float) -> dict | None:
    """Write metrics.json, patients.csv and plots/ when any image was labelled; the report."""
    pooled = inputs.image_summaries.get(POOLED)
    if pooled is None or pooled.n == 0:
        logger.info("No input has a BreakHis name with ground truth: no metrics written")
        return None
    from model import plots  # matplotlib is only needed when there is something to plot

    report = report_from_summaries(inputs.image_summaries, inputs.patient_rows, threshold)
    storage.write_text(storage.join(output_dir, METRICS_FILE), _json(report))
    lines = [",".join(PATIENT_COLUMNS)]
    lines += [csv_line(row) for row in patient_table(inputs.patient_rows, threshold)]
    storage.write_text(storage.join(output_dir, PATIENTS_FILE), "\n".join(lines) + "\n")

    roc, pr = _curves(inputs, report)
    pooled_metrics = report["image_level"][POOLED]
    prevalence = pooled_metrics["n_malignant"] / pooled_metrics["n"]
    for relative, png in (
        (plots.ROC_PLOT, plots.roc_png(roc)),
        (plots.PR_PLOT, plots.pr_png(pr, prevalence=prevalence)),
        (
            plots.CONFUSION_MATRIX_PLOT,
            plots.confusion_matrix_png(pooled_metrics["confusion_matrix"]),
        ),
    ):
        storage.write_bytes(storage.join(output_dir, *relative.split("/")), png)
    logger.info(
        "Metrics over %d labelled images: accuracy %s, ROC AUC %s",
        pooled_metrics["n"],
        pooled_metrics["accuracy"],
        pooled_metrics["roc_auc"],
    )
    return report


def build_summary(
    matched: int,
    outcomes: Mapping[str, int],
    failed: int,
    skipped: int,
    job: Mapping[str, Any],
    started_at: float,
) -> dict[str, Any]:
    """summary.json: counts, the model, the runner and the wall time since launch."""
    finished_at = time.time()
    scored = outcomes["scored"]
    if matched != scored + failed:
        # Every matched path leaves the scorer as a prediction or an error; if not, say so loudly.
        logger.error(
            "Accounting mismatch: %d matched but %d scored + %d failed", matched, scored, failed
        )
    return {
        "inputs_matched": matched,
        "scored": scored,
        "failed": failed,
        "failed_fraction": failed / matched if matched else 0.0,
        "predictions_per_class": {name: outcomes[name] for name in CLASS_NAMES},
        "labelled_images": outcomes["labelled"],
        "non_image_files_skipped": skipped,
        **job,
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "wall_time_seconds": round(finished_at - started_at, 3),
    }


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def write_summary(
    _: Any,
    matched: int,
    outcomes: Mapping[str, int],
    failed: int,
    skipped: int,
    output_dir: str,
    job: Mapping[str, Any],
    started_at: float,
) -> dict[str, Any]:
    """Build and write summary.json (a Beam Map over one trigger element); returns it."""
    summary = build_summary(matched, outcomes, failed, skipped, job, started_at)
    storage.write_text(storage.join(output_dir, SUMMARY_FILE), _json(summary))
    logger.info(
        "Scored %d of %d matched images (%d failed) in %.1fs",
        summary["scored"],
        matched,
        failed,
        summary["wall_time_seconds"],
    )
    return summary


def read_summary(output_dir: str) -> dict[str, Any]:
    """The summary.json a finished run wrote."""
    return json.loads(storage.read_text(storage.join(output_dir, SUMMARY_FILE)))
