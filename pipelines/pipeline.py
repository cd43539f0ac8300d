"""The scoring job's graph: a few named composite transforms, wired by `build_pipeline`.

    MatchImages -> ScoreImages -> CollectErrors -> WriteOutputs + SummarizeRun -> WriteReports

ReportProgress counts ScoreImages' and CollectErrors' outputs as they arrive. WriteOutputs
includes ReviewQueue (review.csv), which needs each patient's call from the patient tallies.

WriteReports writes report.html and then summary.json, the run's last file: it takes every other
output's write result as a side input, so a summary exists only beside a finished run's outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference, RunInferenceDLQ
from apache_beam.pvalue import AsList, AsSingleton

from model import storage
from model.quality import SizeRange
from pipelines.aggregates import ComputeMetrics, OutcomeCountsFn
from pipelines.csv_output import ERRORS_NAME, PREDICTIONS_NAME, WriteCsv
from pipelines.dead_letters import (
    error_for_invalid_name,
    error_for_path,
    error_for_scored,
    errors_for_batch,
)
from pipelines.ensemble import Member
from pipelines.heatmaps import DEFAULT_HEATMAP_FORMAT, HEATMAP_DIR
from pipelines.inputs import EXCLUDED_TAG, IMAGES_TAG, INVALID_NAMES_TAG, SKIPPED_TAG, MatchImages
from pipelines.model_handler import keyed_scoring_handler
from pipelines.progress import ReportProgressFn
from pipelines.report import ERROR_SAMPLE, GalleryFn, write_scoring_report
from pipelines.report_writer import RunCounts, build_summary, write_metrics, write_summary
from pipelines.review import (
    ReviewQueueFn,
    patient_calls,
    review_candidate,
    review_summary,
    with_review,
    write_review_csv,
)
from pipelines.rows import ERROR_COLUMNS, PREDICTION_COLUMNS, is_qc_clean


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """Everything the pipeline's transforms need, checked and resolved before it is built."""

    run_id: str
    patterns: tuple[str, ...]
    members: tuple[Member, ...]  # the exports scored with (one, or an ensemble's)
    output_dir: str
    gradcam: bool
    batch_size: int
    num_shards: int
    max_bytes: int
    image_size: int
    threshold: float
    model_id: str
    progress_interval: float
    review_limit: int
    expected_sizes: SizeRange | None = None  # training image sizes from the card; None: no check
    tta: int = 1  # test-time views per image (model.tta)
    # The maps' display scale (pipelines.ensemble.Ensemble.heatmap_scale), None: per image
    heatmap_scale: float | None = None
    heatmap_format: str = DEFAULT_HEATMAP_FORMAT  # pipelines.heatmaps.HEATMAP_FORMATS
    model_copies: int | None = None  # models per machine shared by its processes; None: per process


class ScoreImages(beam.PTransform):
    """Image paths -> (ScoredImages, RunInference's dead letters); overlays written on the way.

    Scoring waits for the match count (paths are small; matching is quick next to scoring), so
    the progress step can take the count as a side input and still run fused with the scoring,
    reporting while images are scored rather than after.
    """

    def __init__(self, config: ScoringConfig, matched: beam.PCollection):
        super().__init__()
        self._config = config
        self._matched = matched

    def expand(self, paths: beam.PCollection):
        """Read, decode, score, explain and write each image's overlay."""
        config = self._config
        handler = keyed_scoring_handler(
            config.members,
            image_size=config.image_size,
            threshold=config.threshold,
            heatmap_dir=storage.join(config.output_dir, HEATMAP_DIR),
            gradcam=config.gradcam,
            batch_size=config.batch_size,
            max_bytes=config.max_bytes,
            expected_sizes=config.expected_sizes,
            tta=config.tta,
            heatmap_scale=config.heatmap_scale,
            heatmap_format=config.heatmap_format,
            model_copies=config.model_copies,
        )
        waiting = paths | "AwaitMatchCount" >> beam.Map(
            lambda path, _: path, AsSingleton(self._matched)
        )
        return waiting | "RunInference" >> RunInference(handler).with_exception_handling()


class CollectErrors(beam.PTransform):
    """Invalid names + RunInference's dead letters -> one ScoringError per failed input."""

    def __init__(self, failures: RunInferenceDLQ):
        super().__init__()
        self._failures = failures

    def expand(self, invalid_names: beam.PCollection) -> beam.PCollection:
        """Turn each kind of failure into rows and flatten them."""
        failures = self._failures
        parts = [invalid_names | "InvalidNames" >> beam.Map(error_for_invalid_name)]
        parts += [
            failed | f"ReadErrors{index}" >> beam.Map(error_for_path)
            for index, failed in enumerate(failures.failed_preprocessing)
        ]
        parts.append(
            failures.failed_inferences | "InferenceErrors" >> beam.FlatMap(errors_for_batch)
        )
        parts += [
            failed | f"HeatmapErrors{index}" >> beam.Map(error_for_scored)
            for index, failed in enumerate(failures.failed_postprocessing)
        ]
        return parts | "Flatten" >> beam.Flatten()


class ReviewQueue(beam.PTransform):
    """ScoredImages -> review.csv; returns the queue, its summary entry and the written file.

    Each image's reasons need its patient's call: a side input of one call per patient, made
    from the patient tallies the metrics already combine, so it is bounded by the patients.
    """

    def __init__(self, config: ScoringConfig, metrics_inputs: beam.PCollection):
        super().__init__()
        self._config = config
        self._metrics_inputs = metrics_inputs

    def expand(self, records: beam.PCollection) -> dict[str, beam.PCollection]:
        """Find each image's reasons, keep the first --review_limit, write them."""
        config = self._config
        calls = self._metrics_inputs | "PatientCalls" >> beam.Map(patient_calls)
        queue = (
            records
            | "FindReasons"
            >> beam.Map(review_candidate, threshold=config.threshold, calls=AsSingleton(calls))
            | "Rank" >> beam.CombineGlobally(ReviewQueueFn(config.review_limit, config.threshold))
        )
        return {
            "queue": queue,
            "summary": queue
            | "Summarize"
            >> beam.Map(review_summary, limit=config.review_limit, threshold=config.threshold),
            "file": queue
            | "Write" >> beam.Map(write_review_csv, config.output_dir, config.review_limit),
        }


class WriteOutputs(beam.PTransform):
    """(records, errors) -> predictions and errors CSVs, metrics.json, patients.csv, plots,
    review.csv.

    metrics.json also reports the QC-clean images: the same streaming aggregates applied to the
    records that raised no input quality flag.

    Returns the write results (final file names, the metrics report or None, the metrics
    inputs, the review queue and its summary entry) for the steps that must follow them.
    """

    def __init__(self, config: ScoringConfig):
        super().__init__()
        self._config = config

    def expand(self, rows: tuple[beam.PCollection, beam.PCollection]) -> dict[str, Any]:
        """Write every per-image and metrics output."""
        records, errors = rows
        config = self._config
        predictions = records | "WritePredictions" >> WriteCsv(
            config.output_dir, PREDICTIONS_NAME, PREDICTION_COLUMNS, config.num_shards
        )
        error_files = errors | "WriteErrors" >> WriteCsv(
            config.output_dir, ERRORS_NAME, ERROR_COLUMNS
        )
        metrics_inputs = records | "ComputeMetrics" >> ComputeMetrics(config.threshold)
        clean_inputs = (
            records
            | "QcClean" >> beam.Filter(is_qc_clean)
            | "ComputeCleanMetrics" >> ComputeMetrics(config.threshold)
        )
        metrics = metrics_inputs | "WriteMetrics" >> beam.Map(
            write_metrics,
            config.output_dir,
            config.threshold,
            clean_inputs=AsSingleton(clean_inputs),
        )
        review = records | "ReviewQueue" >> ReviewQueue(config, metrics_inputs)
        return {
            "predictions": predictions,
            "errors": error_files,
            "metrics": metrics,
            "metrics_inputs": metrics_inputs,
            "review_queue": review["queue"],
            "review_summary": review["summary"],
            "review_file": review["file"],
        }


class SummarizeRun(beam.PTransform):
    """{records, errors, skipped, excluded, review} -> the one summary dict, once everything is
    counted; `review` is the review queue's summary entry."""

    def __init__(self, matched: beam.PCollection, job: dict[str, Any], started_at: float):
        super().__init__()
        self._matched = matched
        self._job = job
        self._started_at = started_at

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        """Count each stream with a combiner and build the summary from the counts."""
        counted = [
            AsSingleton(self._matched),
            AsSingleton(
                inputs["records"] | "CountOutcomes" >> beam.CombineGlobally(OutcomeCountsFn())
            ),
        ] + [
            AsSingleton(inputs[key] | f"Count{label}" >> beam.combiners.Count.Globally())
            for key, label in (
                ("errors", "Failed"),
                (SKIPPED_TAG, "Skipped"),
                (EXCLUDED_TAG, "Excluded"),
            )
        ]
        return (
            inputs["records"].pipeline
            | "Trigger" >> beam.Create([None])
            | "Counts" >> beam.Map(lambda _, *counts: RunCounts(*counts), *counted)
            | "Summary" >> beam.Map(build_summary, job=self._job, started_at=self._started_at)
            | "AddReview" >> beam.Map(with_review, AsSingleton(inputs["review"]))
        )


class WriteReports(beam.PTransform):
    """report.html, then summary.json once every other output is final; returns the summary."""

    def __init__(self, config: ScoringConfig, written: dict[str, beam.PCollection]):
        super().__init__()
        self._config = config
        self._written = written

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        """Pick the gallery and error sample, render the report, write the summary last."""
        config, written = self._config, self._written
        summary = inputs["summary"]
        gallery = inputs["records"] | "SelectGallery" >> beam.CombineGlobally(GalleryFn())
        error_sample = inputs["errors"] | "SampleErrors" >> beam.combiners.Top.Of(
            ERROR_SAMPLE, key=lambda error: error.image_path, reverse=True
        )
        report = summary | "WriteReport" >> beam.Map(
            write_scoring_report,
            metrics=AsSingleton(written["metrics"]),
            metrics_inputs=AsSingleton(written["metrics_inputs"]),
            gallery=AsSingleton(gallery),
            errors=AsSingleton(error_sample),
            review=AsSingleton(written["review_queue"]),
            output_dir=config.output_dir,
            threshold=config.threshold,
            gradcam=config.gradcam,
            max_bytes=config.max_bytes,
        )
        return summary | "WriteSummary" >> beam.Map(
            write_summary,
            output_dir=config.output_dir,
            predictions=AsList(written["predictions"]),
            errors=AsList(written["errors"]),
            metrics=AsSingleton(written["metrics"]),
            review=AsSingleton(written["review_file"]),
            report=AsSingleton(report),
        )


class ReportProgress(beam.PTransform):
    """Log each worker process's finished images (scored or failed) against the match count.

    Counted straight off the scoring step's outputs, so on the DirectRunner the count runs in
    the same fused stage as the scoring and the lines appear while images are scored.
    """

    def __init__(self, run_id: str, interval_seconds: float, matched: beam.PCollection):
        super().__init__()
        self._run_id = run_id
        self._interval = interval_seconds
        self._matched = matched

    def expand(self, finished: tuple[beam.PCollection, ...]) -> beam.pvalue.PDone:
        """One counting step per stream of finished images; emits nothing."""
        for label, stream in zip(("Scored", "Failed"), finished, strict=True):
            _ = stream | label >> beam.ParDo(
                ReportProgressFn(self._run_id, self._interval), AsSingleton(self._matched)
            )
        return beam.pvalue.PDone(self._matched.pipeline)


def build_pipeline(
    pipeline: beam.Pipeline, config: ScoringConfig, job: dict[str, Any], started_at: float
) -> None:
    """Apply the scoring job's composite transforms to the pipeline."""
    matches = pipeline | "MatchImages" >> MatchImages(config.patterns, config.output_dir)
    matched = (
        (matches[IMAGES_TAG], matches[INVALID_NAMES_TAG])
        | "MatchedInputs" >> beam.Flatten()
        | "CountMatched" >> beam.combiners.Count.Globally()
    )
    records, failures = matches[IMAGES_TAG] | "ScoreImages" >> ScoreImages(config, matched)
    errors = matches[INVALID_NAMES_TAG] | "CollectErrors" >> CollectErrors(failures)
    _ = (records, errors) | "ReportProgress" >> ReportProgress(
        config.run_id, config.progress_interval, matched
    )
    written = (records, errors) | "WriteOutputs" >> WriteOutputs(config)
    summary = {
        "records": records,
        "errors": errors,
        SKIPPED_TAG: matches[SKIPPED_TAG],
        EXCLUDED_TAG: matches[EXCLUDED_TAG],
        "review": written["review_summary"],
    } | "SummarizeRun" >> SummarizeRun(matched, job, started_at)
    _ = {"records": records, "errors": errors, "summary": summary} | "WriteReports" >> WriteReports(
        config, written
    )
