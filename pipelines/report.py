"""Rebuild a run's reports from scoring runs' predictions, without the model and without rescoring.

    python -m pipelines.report --predictions 'PATTERN' [PATTERN ...] --output_dir DIR \
        [--threshold T] [--review_limit 1000] [--overwrite] [Beam options]

Flow: ReadPredictions (the runs' predictions*.csv, parsed strictly) -> ReportScores, the
scorer's own reporting half (metrics.json, patients.csv, plots/, review.csv, report.html, then
summary.json last; pipelines/reporting/transforms.py). No model is loaded and no image is scored;
the gallery shows the runs' overlays (copied beside the report) and downsized originals, as the
scorer's report does. Patterns are globs of predictions files, local or gs://, or run folders.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import TestOptions
from apache_beam.pvalue import AsSingleton
from apache_beam.runners.runner import PipelineResult

from model import storage
from pipelines.launch.checks import (
    LaunchError,
    check_output_dir,
    check_output_not_protected,
    check_remote_locations,
    check_review_limit,
)
from pipelines.launch.report_checks import (
    check_not_an_input,
    check_rows,
    find_runs,
    report_threshold,
)
from pipelines.launch.worker_packages import pipeline_options
from pipelines.reporting.aggregates import OutcomeCountsFn
from pipelines.reporting.report_writer import (
    REPORT_KIND,
    RunNotFinished,
    build_report_summary,
    finished_summary,
)
from pipelines.reporting.review import add_review_limit_flag, with_review
from pipelines.reporting.transforms import RECORDS, REVIEW, ReportingConfig, ReportScores
from pipelines.runs.manifest import start_run
from pipelines.runs.prediction_files import ReadPredictions
from pipelines.runs.scored_runs import ScoredRun
from pipelines.score import (
    EXIT_LAUNCH_ERROR,
    EXIT_TOO_MANY_ERRORS,
    runner_description,
    runner_name,
)

logger = logging.getLogger(__name__)

EXIT_FAILED = EXIT_TOO_MANY_ERRORS  # the pipeline did not finish, or the summary is not ours
THRESHOLD_FROM_RUNS = "runs"
THRESHOLD_FROM_FLAG = "--threshold"
# Copied from the runs' summaries when every run agrees (the same model, so they should).
_SHARED_RUN_FIELDS = (
    "model_dir",
    "members",
    "threshold_rule",
    "heatmap_scale",
    "heatmap_units",
    "heatmap_format",  # the overlays' file format; null from runs made before the flag existed
    "expected_image_sizes",
)


@dataclasses.dataclass(frozen=True)
class LaunchedReport:
    """A report that was checked, built and run: its config, Beam's result, whether it ran."""

    config: ReportingConfig
    run_id: str
    result: PipelineResult
    dry_run: bool


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The report's own flags, and the rest for Beam."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.report",
        description="Rebuild metrics, patients, review and report.html from scoring runs' "
        "predictions, without rescoring (Apache Beam).",
        epilog="Any other flag (--runner, --direct_num_workers, --project, ...) is passed to Beam.",
    )
    parser.add_argument(
        "--predictions",
        nargs="+",
        required=True,
        metavar="PATTERN",
        help="predictions files of finished scoring runs: globs, local or gs:// "
        "('scores/*/predictions*.csv'), or run folders; every run must be matched whole",
    )
    parser.add_argument("--output_dir", required=True, help="output folder, local or gs://")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="call p at this threshold instead of the runs' own (needed when they differ)",
    )
    add_review_limit_flag(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="remove an earlier report's outputs from --output_dir first (without it, such a "
        "folder is refused)",
    )
    return parser.parse_known_args(argv)


def _shared(runs: Sequence[ScoredRun], key: str) -> Any:
    """A summary field every run has the same value of; None when they differ."""
    values = [run.summary.get(key) for run in runs]
    return values[0] if all(value == values[0] for value in values) else None


def report_job(
    runs: Sequence[ScoredRun],
    threshold: float,
    threshold_given: bool,
    args: argparse.Namespace,
    run_id: str,
    runner: Mapping[str, Any],
) -> dict[str, Any]:
    """summary.json's fields that come from the launch: the runs, the model, the threshold."""
    scoring_thresholds = sorted({run.threshold for run in runs})
    return {
        "kind": REPORT_KIND,
        "run_id": run_id,
        "source_runs": [
            {
                "run_dir": run.run_dir,
                "run_id": run.summary.get("run_id"),
                "scored": run.scored,
                "threshold": run.threshold,
                "tta": run.summary.get("tta"),
                "gradcam": run.summary.get("gradcam"),
                "finished_at": run.summary.get("finished_at"),
            }
            for run in runs
        ],
        "predictions": list(args.predictions),
        "model_id": runs[0].model_id,
        "threshold": threshold,
        "threshold_source": THRESHOLD_FROM_FLAG if threshold_given else THRESHOLD_FROM_RUNS,
        "scoring_thresholds": scoring_thresholds,
        "rethresholded": scoring_thresholds != [threshold],
        "gradcam": any(bool(run.summary.get("gradcam")) for run in runs),
        # p_std is shown when any run scored several views.
        "tta": max(int(run.summary.get("tta") or 1) for run in runs),
        **{key: _shared(runs, key) for key in _SHARED_RUN_FIELDS},
        "review_limit": args.review_limit,
        "output_dir": args.output_dir,
        **runner,
    }


class SummarizeReport(beam.PTransform):
    """{records, review} -> the report's summary dict, once every row is counted."""

    def __init__(self, job: dict[str, Any], started_at: float):
        super().__init__()
        self._job = job
        self._started_at = started_at

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        """Count the rows as the scorer counts its own, and add the review entry."""
        return (
            inputs[RECORDS]
            | "CountOutcomes" >> beam.CombineGlobally(OutcomeCountsFn())
            | "Summary"
            >> beam.Map(build_report_summary, job=self._job, started_at=self._started_at)
            | "AddReview" >> beam.Map(with_review, AsSingleton(inputs[REVIEW]))
        )


def launch(
    argv: Sequence[str] | None = None,
    save_main_session: bool = True,
    test_pipeline: beam.Pipeline | None = None,
) -> LaunchedReport:
    """Check the launch, clear an earlier report's files (--overwrite), build, run and wait.

    Raises LaunchError, before anything runs or is removed, for unusable patterns, runs,
    rows, threshold or output location.
    """
    started_at = time.time()
    args, beam_args = parse_args(argv)
    check_review_limit(args.review_limit)
    options = pipeline_options(beam_args, save_main_session)
    check_remote_locations(
        runner_name(options, test_pipeline), [*args.predictions, args.output_dir]
    )
    runs = find_runs(args.predictions)
    threshold = report_threshold(runs, args.threshold)
    check_not_an_input(args.output_dir, runs)
    check_output_not_protected(args.output_dir, {})
    earlier = check_output_dir(args.output_dir, args.overwrite)
    rows = check_rows(runs)  # last: it reads every row
    config = ReportingConfig(
        output_dir=args.output_dir,
        threshold=threshold,
        review_limit=args.review_limit,
        gradcam=any(bool(run.summary.get("gradcam")) for run in runs),
        max_bytes=storage.DEFAULT_MAX_BYTES,
    )
    pipeline = test_pipeline or beam.Pipeline(options=options)
    runner = runner_description(pipeline)
    dry_run = bool(pipeline.options.view_as(TestOptions).dry_run)
    run_id = uuid.uuid4().hex
    record = start_run(config.output_dir, earlier, run_id, "report", dry_run)
    config = dataclasses.replace(config, launch_record=record)
    job = report_job(runs, threshold, args.threshold is not None, args, run_id, runner)
    logger.info(
        "Report %s: %d rows of %d run(s) of model %s at threshold %.4f (%s); outputs in %s",
        run_id,
        rows,
        len(runs),
        job["model_id"],
        threshold,
        "--threshold" if args.threshold is not None else "the runs' own",
        config.output_dir,
    )
    sources = [source for run in runs for source in run.sources()]
    records = pipeline | "ReadPredictions" >> ReadPredictions(sources, threshold)
    _ = {RECORDS: records} | "ReportScores" >> ReportScores(
        config, SummarizeReport(job, started_at)
    )
    result = pipeline.run()
    result.wait_until_finish()
    return LaunchedReport(config=config, run_id=run_id, result=result, dry_run=dry_run)


def run(
    argv: Sequence[str] | None = None,
    save_main_session: bool = True,
    test_pipeline: beam.Pipeline | None = None,
) -> PipelineResult:
    """Beam's entry-point contract: launch the report and return Beam's result."""
    return launch(argv, save_main_session, test_pipeline).result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, then exit 2 on launch errors and 1 when the pipeline did not finish."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(logging.WARNING)
    try:
        launched = launch(argv)
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_LAUNCH_ERROR
    if launched.dry_run:
        logger.info("Dry run: the job graph was built and not run")
        return 0
    try:
        finished_summary(launched.result, launched.config.output_dir, launched.run_id, "report")
    except RunNotFinished as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
