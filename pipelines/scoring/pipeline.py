"""The scoring job's graph: a few named composite transforms, wired by `build_pipeline`.

    MatchImages [-> SkipScored] -> ScoreImages -> CollectErrors -> WriteOutputs
                -> ReportScores (metrics, review, SummarizeRun, report.html, summary.json last)

ReportProgress counts ScoreImages' and CollectErrors' outputs as they arrive. ReportScores is
the reporting half `python -m pipelines.report` runs too (pipelines/reporting/transforms.py); here
it follows the predictions and errors CSVs: summary.json takes every other output's write result
as a side input, so a summary exists only beside a finished run's outputs. SkipScored (only with
--skip_scored) leaves out the images earlier runs of the same model already scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference, RunInferenceDLQ
from apache_beam.pvalue import AsSingleton

from model import storage
from model.image.quality import SizeRange
from pipelines.ensemble.members import Member
from pipelines.reporting.aggregates import OutcomeCountsFn
from pipelines.reporting.report_writer import RunCounts, build_summary
from pipelines.reporting.review import with_review
from pipelines.reporting.transforms import ERRORS, RECORDS, REVIEW, ReportingConfig, ReportScores
from pipelines.runs.prediction_files import PredictionsFile
from pipelines.runs.skip_scored import ALREADY_SCORED_TAG, TO_SCORE_TAG, SkipScored
from pipelines.scoring.csv_output import ERRORS_NAME, PREDICTIONS_NAME, WriteCsv
from pipelines.scoring.dead_letters import (
    error_for_invalid_name,
    error_for_path,
    error_for_scored,
    errors_for_batch,
)
from pipelines.scoring.heatmaps import DEFAULT_HEATMAP_FORMAT, HEATMAP_DIR
from pipelines.scoring.inputs import (
    EXCLUDED_TAG,
    IMAGES_TAG,
    INVALID_NAMES_TAG,
    SKIPPED_TAG,
    MatchImages,
)
from pipelines.scoring.keyed_handler import keyed_scoring_handler
from pipelines.scoring.progress import ReportProgressFn
from pipelines.scoring.rows import ERROR_COLUMNS, PREDICTION_COLUMNS


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
    tta: int = 1  # test-time views per image (model.network.tta)
    # The maps' display scale (pipelines.ensemble.members.Ensemble.heatmap_scale), None: per image
    heatmap_scale: float | None = None
    heatmap_format: str = DEFAULT_HEATMAP_FORMAT  # pipelines.scoring.heatmaps.HEATMAP_FORMATS
    model_copies: int | None = None  # models per machine shared by its processes; None: per process
    # --skip_scored: the earlier runs' predictions files; their images are not scored again
    skip_scored: tuple[PredictionsFile, ...] = ()
    # The run's manifest at launch (pipelines.runs.manifest); None: no manifest is written
    launch_record: Mapping[str, Any] | None = None

    @property
    def reporting(self) -> ReportingConfig:
        """What the reporting half (metrics, review, report, summary) needs of this run."""
        return ReportingConfig(
            output_dir=self.output_dir,
            threshold=self.threshold,
            review_limit=self.review_limit,
            gradcam=self.gradcam,
            max_bytes=self.max_bytes,
            launch_record=self.launch_record,
        )


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


class WriteOutputs(beam.PTransform):
    """(records, errors) -> the predictions CSV(s) and errors.csv; returns their file names."""

    def __init__(self, config: ScoringConfig):
        super().__init__()
        self._config = config

    def expand(self, rows: tuple[beam.PCollection, beam.PCollection]) -> dict[str, Any]:
        """Write one row per scored image and one per failed input."""
        records, errors = rows
        config = self._config
        return {
            "predictions": records
            | "WritePredictions"
            >> WriteCsv(config.output_dir, PREDICTIONS_NAME, PREDICTION_COLUMNS, config.num_shards),
            "errors": errors
            | "WriteErrors" >> WriteCsv(config.output_dir, ERRORS_NAME, ERROR_COLUMNS),
        }


class SummarizeRun(beam.PTransform):
    """{records, errors, review} -> the one summary dict, once everything is counted; `review`
    is the review queue's summary entry. The match counts come from MatchImages' outputs."""

    def __init__(
        self,
        matched: beam.PCollection,
        unscored: dict[str, beam.PCollection],
        job: dict[str, Any],
        started_at: float,
    ):
        super().__init__()
        self._matched = matched
        self._unscored = unscored  # SKIPPED_TAG, EXCLUDED_TAG, ALREADY_SCORED_TAG: paths
        self._job = job
        self._started_at = started_at

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        """Count each stream with a combiner and build the summary from the counts."""
        counted = [
            AsSingleton(self._matched),
            AsSingleton(
                inputs[RECORDS] | "CountOutcomes" >> beam.CombineGlobally(OutcomeCountsFn())
            ),
        ] + [
            AsSingleton(stream | f"Count{label}" >> beam.combiners.Count.Globally())
            for stream, label in (
                (inputs[ERRORS], "Failed"),
                (self._unscored[SKIPPED_TAG], "Skipped"),
                (self._unscored[EXCLUDED_TAG], "Excluded"),
                (self._unscored[ALREADY_SCORED_TAG], "AlreadyScored"),
            )
        ]
        return (
            inputs[RECORDS].pipeline
            | "Trigger" >> beam.Create([None])
            | "Counts" >> beam.Map(lambda _, *counts: RunCounts(*counts), *counted)
            | "Summary" >> beam.Map(build_summary, job=self._job, started_at=self._started_at)
            | "AddReview" >> beam.Map(with_review, AsSingleton(inputs[REVIEW]))
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
    images = matches[IMAGES_TAG]
    if config.skip_scored:
        split = images | "SkipScored" >> SkipScored(config.skip_scored)
        images, already_scored = split[TO_SCORE_TAG], split[ALREADY_SCORED_TAG]
    else:
        already_scored = pipeline | "NoneAlreadyScored" >> beam.Create([])
    # The images this run tries: the progress lines and the error fraction count these.
    matched = (
        (images, matches[INVALID_NAMES_TAG])
        | "MatchedInputs" >> beam.Flatten()
        | "CountMatched" >> beam.combiners.Count.Globally()
    )
    records, failures = images | "ScoreImages" >> ScoreImages(config, matched)
    errors = matches[INVALID_NAMES_TAG] | "CollectErrors" >> CollectErrors(failures)
    _ = (records, errors) | "ReportProgress" >> ReportProgress(
        config.run_id, config.progress_interval, matched
    )
    written = (records, errors) | "WriteOutputs" >> WriteOutputs(config)
    unscored = {
        SKIPPED_TAG: matches[SKIPPED_TAG],
        EXCLUDED_TAG: matches[EXCLUDED_TAG],
        ALREADY_SCORED_TAG: already_scored,
    }
    _ = {RECORDS: records, ERRORS: errors} | "ReportScores" >> ReportScores(
        config.reporting,
        SummarizeRun(matched, unscored, job, started_at),
        finished=written,
    )
