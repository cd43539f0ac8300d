"""Batch-score histopathology images with a training export, on any Beam runner.

    python -m pipelines.score --input 'images/**' --model_dir export/ --output_dir scores/ \
        [--no_gradcam] [--batch_size 32] [--max_error_fraction 0.05] [Beam options]

Flow: MatchImages -> ScoreImages (RunInference: read + decode + preprocess, one batched forward
pass giving P(malignant) and Grad-CAM) -> WriteHeatmaps -> WritePredictions / WriteErrors ->
ComputeMetrics (streaming combiners) -> WriteMetrics, WriteSummary. Flags this module does not
know (`--runner`, `--direct_num_workers`, `--project`, ...) go to Beam untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    SetupOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineResult, PipelineState

from model import storage
from pipelines.aggregates import ComputeMetrics, OutcomeCountsFn
from pipelines.inputs import MatchImages
from pipelines.launch_checks import (
    LaunchError,
    check_flags,
    check_inputs,
    check_model_export,
    check_output_dir,
    check_remote_locations,
)
from pipelines.model_handler import keyed_scoring_handler
from pipelines.outputs import (
    ERROR_COLUMNS,
    ERRORS_NAME,
    HEATMAP_DIR,
    PREDICTION_COLUMNS,
    PREDICTIONS_NAME,
    WriteCsv,
    WriteHeatmapFn,
    error_for_path,
    error_for_scored,
    errors_for_batch,
)
from pipelines.progress import DEFAULT_INTERVAL_SECONDS, ReportProgressFn, quiet_worker_logs
from pipelines.report import ERROR_SAMPLE, GalleryFn, write_scoring_report
from pipelines.report_writer import read_summary, write_metrics, write_summary

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
# A few unreadable files in a large folder are reported, not fatal; more than this suggests a
# systematic problem (wrong pattern, corrupt copy, wrong format) and fails the job's exit code.
DEFAULT_MAX_ERROR_FRACTION = 0.05
EXIT_TOO_MANY_ERRORS = 1
EXIT_LAUNCH_ERROR = 2


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """Everything the pipeline's transforms need, checked and resolved before it is built."""

    patterns: tuple[str, ...]
    model_dir: str
    output_dir: str
    gradcam: bool
    batch_size: int
    num_shards: int
    image_size: int
    threshold: float
    model_id: str
    progress_interval: float


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The job's own flags, and the rest for Beam."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.score",
        description="Score images with a trained BreakHis classifier (Apache Beam).",
        epilog="Any other flag (--runner, --direct_num_workers, --project, --region, "
        "--temp_location, --setup_file, --sdk_container_image, ...) is passed to Beam.",
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="glob patterns, local or gs:// (** crosses folders), folders, or CSV manifests "
        "with an image_path column",
    )
    parser.add_argument("--model_dir", required=True, help="training export, local or gs://")
    parser.add_argument("--output_dir", required=True, help="output folder, local or gs://")
    parser.add_argument(
        "--no_gradcam", action="store_true", help="score only; no heatmaps (faster)"
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="images per forward pass (default %(default)s)",
    )
    parser.add_argument(
        "--max_error_fraction",
        type=float,
        default=DEFAULT_MAX_ERROR_FRACTION,
        help="exit with code 1 when more than this fraction of inputs fail (default %(default)s)",
    )
    parser.add_argument(
        "--num_shards",
        type=int,
        default=None,
        help="predictions CSV shards: 1 writes predictions.csv, 0 lets the runner decide; "
        "default 1 on the DirectRunner, 0 elsewhere",
    )
    parser.add_argument(
        "--progress_interval",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        help="seconds between progress lines per worker process (default %(default)s)",
    )
    return parser.parse_known_args(argv)


def runner_description(pipeline: beam.Pipeline) -> dict[str, Any]:
    """The runner's name, and for the DirectRunner how it runs, for logs and summary.json."""
    name = type(pipeline.runner).__name__
    if "Direct" in name:
        direct = pipeline.options.view_as(DirectOptions)
        return {
            "runner": "DirectRunner",
            "direct_running_mode": direct.direct_running_mode,
            "direct_num_workers": direct.direct_num_workers,
        }
    return {"runner": name}


def resolve_config(args: argparse.Namespace, runner: str) -> ScoringConfig:
    """Check flags and locations (raising LaunchError) and read the model card."""
    check_flags(args.batch_size, args.max_error_fraction, args.num_shards)
    check_remote_locations(runner, [*args.input, args.model_dir, args.output_dir])
    patterns = check_inputs(args.input)
    card = check_model_export(args.model_dir)
    check_output_dir(args.output_dir)
    num_shards = args.num_shards
    if num_shards is None:
        num_shards = 1 if runner == "DirectRunner" else 0
    return ScoringConfig(
        patterns=tuple(patterns),
        model_dir=args.model_dir,
        output_dir=args.output_dir,
        gradcam=not args.no_gradcam,
        batch_size=args.batch_size,
        num_shards=num_shards,
        image_size=int(card.image_size),
        threshold=float(card.threshold),
        model_id=card.model_id,
        progress_interval=args.progress_interval,
    )


def build_pipeline(
    pipeline: beam.Pipeline, config: ScoringConfig, job: dict[str, Any], started_at: float
) -> None:
    """Apply every step of the scoring job to the pipeline."""
    images, skipped = pipeline | "MatchImages" >> MatchImages(config.patterns)
    matched = images | "CountMatched" >> beam.combiners.Count.Globally()
    # Scoring waits for the match count (paths are small; matching is quick next to scoring),
    # so the progress step can take the count as a side input and still run fused with the
    # scoring, reporting while images are scored rather than after.
    images = images | "AwaitMatchCount" >> beam.Map(
        lambda path, _: path, beam.pvalue.AsSingleton(matched)
    )

    handler = keyed_scoring_handler(
        config.model_dir,
        image_size=config.image_size,
        threshold=config.threshold,
        gradcam=config.gradcam,
        batch_size=config.batch_size,
    )
    scored, failures = images | "ScoreImages" >> RunInference(handler).with_exception_handling()

    heatmap_dir = storage.join(config.output_dir, HEATMAP_DIR)
    records, write_failures = (
        scored
        | ("WriteHeatmaps" if config.gradcam else "FormatPredictions")
        >> beam.ParDo(WriteHeatmapFn(heatmap_dir, config.threshold)).with_exception_handling()
    )

    error_parts = [
        failed | f"ReadErrors{index}" >> beam.Map(error_for_path)
        for index, failed in enumerate(failures.failed_preprocessing)
    ]
    error_parts.append(
        failures.failed_inferences | "InferenceErrors" >> beam.FlatMap(errors_for_batch)
    )
    error_parts.append(write_failures | "HeatmapErrors" >> beam.Map(error_for_scored))
    errors = error_parts | "CollectErrors" >> beam.Flatten()

    _ = records | "WritePredictions" >> WriteCsv(
        config.output_dir, PREDICTIONS_NAME, PREDICTION_COLUMNS, config.num_shards
    )
    _ = errors | "WriteErrors" >> WriteCsv(config.output_dir, ERRORS_NAME, ERROR_COLUMNS)
    metrics_inputs = records | "ComputeMetrics" >> ComputeMetrics(config.threshold)
    metrics = metrics_inputs | "WriteMetrics" >> beam.Map(
        write_metrics, config.output_dir, config.threshold
    )
    gallery = records | "SelectGallery" >> beam.CombineGlobally(GalleryFn())
    error_sample = errors | "SampleErrors" >> beam.combiners.Top.Of(
        ERROR_SAMPLE, key=lambda error: error.image_path, reverse=True
    )

    failed = errors | "CountFailed" >> beam.combiners.Count.Globally()
    skipped_count = skipped | "CountSkipped" >> beam.combiners.Count.Globally()
    outcomes = records | "CountOutcomes" >> beam.CombineGlobally(OutcomeCountsFn())
    # Counted straight off the scoring step's outputs, so on the DirectRunner the count runs
    # in the same fused stage as the scoring and the lines appear while images are scored.
    job_id = uuid.uuid4().hex
    for label, finished in (("ReportScored", records), ("ReportFailed", errors)):
        _ = finished | label >> beam.ParDo(
            ReportProgressFn(job_id, config.progress_interval), beam.pvalue.AsSingleton(matched)
        )
    summary = (
        pipeline
        | "SummaryTrigger" >> beam.Create([None])
        | "WriteSummary"
        >> beam.Map(
            write_summary,
            matched=beam.pvalue.AsSingleton(matched),
            outcomes=beam.pvalue.AsSingleton(outcomes),
            failed=beam.pvalue.AsSingleton(failed),
            skipped=beam.pvalue.AsSingleton(skipped_count),
            output_dir=config.output_dir,
            job=job,
            started_at=started_at,
        )
    )
    _ = summary | "WriteReport" >> beam.Map(
        write_scoring_report,
        metrics=beam.pvalue.AsSingleton(metrics),
        metrics_inputs=beam.pvalue.AsSingleton(metrics_inputs),
        gallery=beam.pvalue.AsSingleton(gallery),
        errors=beam.pvalue.AsSingleton(error_sample),
        output_dir=config.output_dir,
        threshold=config.threshold,
        gradcam=config.gradcam,
    )


def run(
    argv: Sequence[str] | None = None,
    save_main_session: bool = True,
    test_pipeline: beam.Pipeline | None = None,
) -> PipelineResult:
    """Check the launch, build and run the pipeline, and wait for it; returns Beam's result.

    Raises LaunchError, before anything runs, for unusable inputs, model or output location.
    """
    started_at = time.time()
    args, beam_args = parse_args(argv)
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    pipeline = test_pipeline or beam.Pipeline(options=options)
    runner = runner_description(pipeline)
    config = resolve_config(args, runner["runner"])
    job = {
        "model_id": config.model_id,
        "model_dir": config.model_dir,
        "threshold": config.threshold,
        "image_size": config.image_size,
        "gradcam": config.gradcam,
        "input": list(args.input),
        "output_dir": config.output_dir,
        "batch_size": config.batch_size,
        "max_error_fraction": args.max_error_fraction,
        **runner,
    }
    logger.info(
        "Scoring %s with model %s (image size %d, threshold %.3f, Grad-CAM %s) on the %s; "
        "outputs in %s",
        " ".join(config.patterns),
        config.model_id,
        config.image_size,
        config.threshold,
        "on" if config.gradcam else "off",
        runner["runner"],
        config.output_dir,
    )
    build_pipeline(pipeline, config, job, started_at)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, then exit 2 on launch errors and 1 when too many inputs failed."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Beam logs every string annotation it meets at INFO; they say nothing about the job.
    logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(logging.WARNING)
    quiet_worker_logs()
    try:
        result = run(argv)
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_LAUNCH_ERROR
    args, beam_args = parse_args(argv)
    if PipelineOptions(beam_args).view_as(TestOptions).dry_run:
        logger.info("Dry run: the job graph was built and not run")
        return 0
    if result.state != PipelineState.DONE:
        print(f"error: the pipeline ended in state {result.state}", file=sys.stderr)
        return EXIT_TOO_MANY_ERRORS
    summary = read_summary(args.output_dir)
    if summary["failed_fraction"] > args.max_error_fraction:
        print(
            f"error: {summary['failed']} of {summary['inputs_matched']} inputs failed "
            f"({summary['failed_fraction']:.1%} > --max_error_fraction "
            f"{args.max_error_fraction:.1%}); see {storage.join(args.output_dir, 'errors.csv')}",
            file=sys.stderr,
        )
        return EXIT_TOO_MANY_ERRORS
    return 0


if __name__ == "__main__":
    sys.exit(main())
