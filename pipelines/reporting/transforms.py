"""The reporting half of a run, one composite for the scorer and for `python -m pipelines.report`.

    ScoredImages -> ReportScores: ComputeMetrics -> WriteMetrics (metrics.json, patients.csv,
                    plots/) + ReviewQueue (review.csv) -> Summarize -> WriteReports (report.html,
                    then summary.json last)

The scorer feeds it the rows it has just scored (and its errors); the re-report feeds it rows
read back from earlier runs' predictions CSVs. Everything else (what the summary counts, which
other files summary.json must follow) is the caller's, passed in as a transform and as write
results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsList, AsSingleton

from pipelines.reporting.aggregates import ComputeMetrics
from pipelines.reporting.report_html import ERROR_SAMPLE, GalleryFn, write_scoring_report
from pipelines.reporting.report_writer import write_metrics, write_summary
from pipelines.reporting.review import (
    ReviewQueueFn,
    patient_calls,
    review_candidate,
    review_summary,
    write_review_csv,
)
from pipelines.runs.manifest import write_finished_manifest
from pipelines.scoring.rows import is_qc_clean

RECORDS = "records"
ERRORS = "errors"
REVIEW = "review"


@dataclasses.dataclass(frozen=True)
class ReportingConfig:
    """What the reporting half needs: where it writes, the threshold it calls p at, its caps."""

    output_dir: str
    threshold: float
    review_limit: int
    gradcam: bool  # whether the rows link Grad-CAM overlays (the gallery needs them)
    max_bytes: int  # read cap for the originals the gallery shows downsized
    # The run's manifest at launch (pipelines.runs.manifest): the finished manifest, listing
    # every file the run wrote, goes just before summary.json. None: no manifest is written.
    launch_record: Mapping[str, Any] | None = None


class ReviewQueue(beam.PTransform):
    """ScoredImages -> review.csv; returns the queue, its summary entry and the written file.

    Each image's reasons need its patient's call: a side input of one call per patient, made
    from the patient tallies the metrics already combine, so it is bounded by the patients.
    """

    def __init__(self, config: ReportingConfig, metrics_inputs: beam.PCollection):
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


class WriteMetrics(beam.PTransform):
    """ScoredImages -> metrics.json, patients.csv, plots/ and review.csv.

    metrics.json also reports the QC-clean images: the same streaming aggregates applied to the
    records that raised no input quality flag. Returns the write results (the metrics report or
    None, the metrics inputs, the review queue, its summary entry and file) for what follows.
    """

    def __init__(self, config: ReportingConfig):
        super().__init__()
        self._config = config

    def expand(self, records: beam.PCollection) -> dict[str, beam.PCollection]:
        """Combine the metrics and the review queue, and write them."""
        config = self._config
        metrics_inputs = records | "ComputeMetrics" >> ComputeMetrics(config.threshold)
        clean_inputs = (
            records
            | "QcClean" >> beam.Filter(is_qc_clean)
            | "ComputeCleanMetrics" >> ComputeMetrics(config.threshold)
        )
        metrics = metrics_inputs | "Write" >> beam.Map(
            write_metrics,
            config.output_dir,
            config.threshold,
            clean_inputs=AsSingleton(clean_inputs),
        )
        review = records | "ReviewQueue" >> ReviewQueue(config, metrics_inputs)
        return {
            "metrics": metrics,
            "metrics_inputs": metrics_inputs,
            "review_queue": review["queue"],
            "review_summary": review["summary"],
            "review_file": review["file"],
        }


class WriteReports(beam.PTransform):
    """report.html, then summary.json once every other output is final; returns the summary.

    `finished` maps names to the write results summary.json must wait for (every output but
    the report, which it waits for too). Without an `errors` input the report has no error
    table (the re-report reads predictions only).
    """

    def __init__(self, config: ReportingConfig, finished: dict[str, beam.PCollection]):
        super().__init__()
        self._config = config
        self._finished = finished

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        """Pick the gallery and error sample, render the report, write the summary last."""
        config, finished = self._config, self._finished
        summary = inputs["summary"]
        gallery = inputs[RECORDS] | "SelectGallery" >> beam.CombineGlobally(GalleryFn())
        errors = None
        if ERRORS in inputs:
            errors = AsSingleton(
                inputs[ERRORS]
                | "SampleErrors"
                >> beam.combiners.Top.Of(
                    ERROR_SAMPLE, key=lambda error: error.image_path, reverse=True
                )
            )
        report = summary | "WriteReport" >> beam.Map(
            write_scoring_report,
            metrics=AsSingleton(finished["metrics"]),
            metrics_inputs=AsSingleton(finished["metrics_inputs"]),
            gallery=AsSingleton(gallery),
            errors=errors,
            review=AsSingleton(finished["review_queue"]),
            output_dir=config.output_dir,
            threshold=config.threshold,
            gradcam=config.gradcam,
            max_bytes=config.max_bytes,
        )
        written = {name: AsList(files) for name, files in finished.items()}
        if config.launch_record is not None:
            # After every other output, before summary.json: the list of what the run wrote.
            manifest = report | "WriteManifest" >> beam.Map(
                write_finished_manifest,
                output_dir=config.output_dir,
                launch_record=dict(config.launch_record),
                **written,
            )
            written = {"manifest": AsSingleton(manifest)}
        return summary | "WriteSummary" >> beam.Map(
            write_summary,
            output_dir=config.output_dir,
            report=AsSingleton(report),
            **written,
        )


class ReportScores(beam.PTransform):
    """{records[, errors]} -> every report output of a run, summary.json last; returns the
    summary.

    `summarize` turns {records[, errors], review} (review: the queue's summary entry) into the
    summary dict; `finished` are the caller's own write results (e.g. the scorer's predictions
    and errors CSVs) that summary.json must follow.
    """

    def __init__(
        self,
        config: ReportingConfig,
        summarize: beam.PTransform,
        finished: dict[str, beam.PCollection] | None = None,
    ):
        super().__init__()
        self._config = config
        self._summarize = summarize
        self._finished = finished or {}

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        """Write the metrics and review queue, summarize, then write the report and summary."""
        written = inputs[RECORDS] | "WriteMetrics" >> WriteMetrics(self._config)
        summary = {**inputs, REVIEW: written["review_summary"]} | "Summarize" >> self._summarize
        finished = {
            **self._finished,
            "metrics": written["metrics"],
            "metrics_inputs": written["metrics_inputs"],
            "review_queue": written["review_queue"],
            "review": written["review_file"],
        }
        return {**inputs, "summary": summary} | "WriteReports" >> WriteReports(
            self._config, finished
        )
