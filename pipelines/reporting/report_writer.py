"""Job-level outputs: metrics.json, patients.csv, plots/ and summary.json, via `model.storage`.

metrics.json is `model.evaluation.evaluate`'s report over every labelled image, plus one more key,
`qc_clean`: the same report (same keys and shape, without a `qc_clean` of its own) over the
labelled images that raised no input quality flag, or null when none did. summary.json's
`quality_control` block counts the images each flag caught and the clean ones.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from apache_beam.runners.runner import PipelineResult, PipelineState

from model import storage
from model.constants import CLASS_NAMES
from model.evaluation.evaluate import PATIENT_COLUMNS, patient_table, report_from_summaries
from model.image.quality import QC_FLAGS, thresholds
from pipelines.reporting.aggregates import POOLED, QC_CLEAN, MetricsInputs, empty_heatmap_key
from pipelines.scoring.csv_output import csv_line

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
QC_CLEAN_METRICS = "qc_clean"  # metrics.json's block over the QC-clean labelled images
PATIENTS_FILE = "patients.csv"
SUMMARY_FILE = "summary.json"
# summary.json's "kind" for a report rebuilt from earlier runs' predictions (python -m
# pipelines.report); a scoring run's summary has no "kind".
REPORT_KIND = "report"


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


def _labelled_images(inputs: MetricsInputs | None) -> int:
    pooled = inputs.image_summaries.get(POOLED) if inputs is not None else None
    return 0 if pooled is None else pooled.n


def write_metrics(
    inputs: MetricsInputs,
    output_dir: str,
    threshold: float,
    clean_inputs: MetricsInputs | None = None,
) -> dict | None:
    """Write metrics.json, patients.csv and plots/ when any image was labelled; the report.

    clean_inputs: the same aggregates over the QC-clean images, for the `qc_clean` block.
    """
    if _labelled_images(inputs) == 0:
        logger.info("No input has a BreakHis name with ground truth: no metrics written")
        return None
    from model.reports import plots  # matplotlib is only needed when there is something to plot

    report = report_from_summaries(inputs.image_summaries, inputs.patient_rows, threshold)
    report[QC_CLEAN_METRICS] = (
        report_from_summaries(clean_inputs.image_summaries, clean_inputs.patient_rows, threshold)
        if _labelled_images(clean_inputs)
        else None
    )
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
        (
            plots.RELIABILITY_PLOT,
            plots.reliability_png(report["reliability"]["pooled"], pooled_metrics["ece"]),
        ),
    ):
        storage.write_bytes(storage.join(output_dir, *relative.split("/")), png)
    logger.info(
        "Metrics over %d labelled images: accuracy %s, ROC AUC %s, ECE %s",
        pooled_metrics["n"],
        pooled_metrics["accuracy"],
        pooled_metrics["roc_auc"],
        pooled_metrics["ece"],
    )
    return report


class RunCounts(NamedTuple):
    """What happened to the run's inputs, counted by combiners."""

    matched: int  # image inputs this run tried: scored or failed
    outcomes: Mapping[str, int]  # OutcomeCountsFn's counts of the predictions
    failed: int
    skipped: int  # non-image files the patterns matched
    excluded: int  # files inside --output_dir the patterns matched
    already_scored: int = 0  # images matched but left alone: in a --skip_scored run's predictions


def build_summary(counts: RunCounts, job: Mapping[str, Any], started_at: float) -> dict[str, Any]:
    """summary.json's content: counts, the run, the model, the runner and the wall time.

    The wall time runs from launch to the end of scoring and counting (this step); the file
    itself is written later, after every other output (`write_summary`).
    """
    finished_at = time.time()
    scored = counts.outcomes["scored"]
    if counts.matched != scored + counts.failed:
        # Every matched path leaves the scorer as a prediction or an error; if not, say so loudly.
        logger.error(
            "Accounting mismatch: %d matched but %d scored + %d failed",
            counts.matched,
            scored,
            counts.failed,
        )
    return {
        "inputs_matched": counts.matched + counts.already_scored,
        "already_scored": counts.already_scored,
        "scored": scored,
        "failed": counts.failed,
        # Of the images this run tried: the ones left alone cannot fail.
        "failed_fraction": counts.failed / counts.matched if counts.matched else 0.0,
        **_outcome_summary(counts.outcomes, job),
        "non_image_files_skipped": counts.skipped,
        "output_files_excluded": counts.excluded,
        **job,
        **_times(started_at, finished_at),
    }


def build_report_summary(
    outcomes: Mapping[str, int], job: Mapping[str, Any], started_at: float
) -> dict[str, Any]:
    """summary.json's content for a report rebuilt from earlier runs' predictions: the rows'
    counts (as a scoring run counts its own), the job (its runs, model, threshold) and times."""
    return {
        **{key: job[key] for key in ("kind", "run_id") if key in job},  # first, to be seen
        "scored": outcomes["scored"],
        **_outcome_summary(outcomes, job),
        **job,
        **_times(started_at, time.time()),
    }


def _outcome_summary(outcomes: Mapping[str, int], job: Mapping[str, Any]) -> dict[str, Any]:
    """The counts of the prediction rows: per call, labelled, input quality, empty maps."""
    return {
        "predictions_per_class": {name: outcomes[name] for name in CLASS_NAMES},
        "labelled_images": outcomes["labelled"],
        "quality_control": quality_summary(outcomes, job),
        **_empty_heatmaps(outcomes, bool(job.get("gradcam"))),
    }


def _times(started_at: float, finished_at: float) -> dict[str, Any]:
    return {
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "wall_time_seconds": round(finished_at - started_at, 3),
    }


def quality_summary(outcomes: Mapping[str, int], job: Mapping[str, Any]) -> dict[str, Any]:
    """summary.json's `quality_control` block: clean images, images per flag, the rules used.

    An image with several flags counts under each; `size_check` is false when the model card
    records no training image sizes (unexpected_size is then never raised).
    """
    return {
        "clean_images": outcomes[QC_CLEAN],
        "flagged_images": outcomes["scored"] - outcomes[QC_CLEAN],
        "flag_counts": {flag: outcomes[flag] for flag in QC_FLAGS},
        "size_check": job.get("expected_image_sizes") is not None,
        "thresholds": thresholds(),
    }


def _empty_heatmaps(outcomes: Mapping[str, int], gradcam: bool) -> dict[str, Any]:
    """How many Grad-CAM maps had no evidence at all (heatmap_peak 0), overall and per call;
    null without Grad-CAM."""
    if not gradcam:
        return {"empty_heatmaps": None, "empty_heatmaps_per_class": None}
    per_class = {name: outcomes[empty_heatmap_key(name)] for name in CLASS_NAMES}
    return {"empty_heatmaps": sum(per_class.values()), "empty_heatmaps_per_class": per_class}


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def write_summary(
    summary: Mapping[str, Any], output_dir: str, **finished_outputs: Any
) -> Mapping[str, Any]:
    """Write summary.json, the run's last file; returns the summary.

    `finished_outputs` are the write results of every other output (predictions, errors,
    metrics, report), passed as side inputs only so that this step runs after all of them.
    """
    storage.write_text(storage.join(output_dir, SUMMARY_FILE), _json(summary))
    if summary.get("kind") == REPORT_KIND:
        logger.info(
            "Reported %d scored images of %d runs in %.1fs; outputs in %s",
            summary["scored"],
            len(summary["source_runs"]),
            summary["wall_time_seconds"],
            output_dir,
        )
    else:
        logger.info(
            "Scored %d of %d matched images (%d failed, %d already scored) in %.1fs; outputs in %s",
            summary["scored"],
            summary["inputs_matched"],
            summary["failed"],
            summary["already_scored"],
            summary["wall_time_seconds"],
            output_dir,
        )
    return summary


def read_summary(output_dir: str) -> dict[str, Any] | None:
    """The summary.json in output_dir, or None when there is none."""
    path = storage.join(output_dir, SUMMARY_FILE)
    if not storage.exists(path):
        return None
    return json.loads(storage.read_text(path))


class RunNotFinished(Exception):
    """A launched pipeline did not finish as this run; the message says why."""


def finished_summary(
    result: PipelineResult, output_dir: str, run_id: str, noun: str
) -> dict[str, Any]:
    """The summary.json that the run `run_id` wrote into output_dir once `result` finished.

    Raises RunNotFinished when the pipeline ended in another state than DONE, or when the
    summary found is not this run's (another job wrote into the same folder); `noun` names
    the run in that message ("run", "report").
    """
    if result.state != PipelineState.DONE:
        raise RunNotFinished(f"the pipeline ended in state {result.state}")
    summary = read_summary(output_dir)
    if summary is None or summary.get("run_id") != run_id:
        raise RunNotFinished(
            f"{storage.join(output_dir, SUMMARY_FILE)} is not this {noun}'s ({run_id}); "
            "was another job writing to --output_dir?"
        )
    return summary
