"""Batch-score histopathology images with a training export, on any Beam runner.

    python -m pipelines.score --input 'images/**' --model_dir DIR [DIR ...] --output_dir scores/ \
        [--no_gradcam] [--heatmap_format jpeg|png|none] [--tta 1|2|4|8] [--batch_size 32] \
        [--max_error_fraction 0.05] [--max_file_mb 256] [--review_limit 1000] \
        [--skip_scored DIR ...] [--model_copies N] [--overwrite] [-v] \
        [Beam options]

Flow (pipelines/scoring/pipeline.py): MatchImages [-> SkipScored] -> ScoreImages (RunInference: read
+ decode + preprocess, one batched forward pass giving P(malignant) and Grad-CAM, overlay written
in post-processing) -> CollectErrors -> WriteOutputs (predictions, errors) -> ReportScores
(metrics, review, report.html, then summary.json last). Flags this module does not know
(`--runner`, `--direct_num_workers`, `--project`, ...) go to Beam untouched. Several exports, or
a cross-validation folder standing for its folds, score as one ensemble
(pipelines/ensemble/members.py).
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
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineResult

from model import storage
from model.network.tensorflow_runtime import set_verbosity
from pipelines.ensemble.checks import check_model_dirs, default_views
from pipelines.ensemble.members import heatmap_units, threshold_rule
from pipelines.launch.checks import (
    LaunchError,
    check_flags,
    check_inputs,
    check_model_copies,
    check_output_dir,
    check_output_not_protected,
    check_remote_locations,
)
from pipelines.launch.worker_packages import pipeline_options
from pipelines.reporting.report_writer import RunNotFinished, finished_summary
from pipelines.reporting.review import add_review_limit_flag
from pipelines.runs.manifest import EarlierRun, start_run
from pipelines.runs.skip_scored import check_skip_scored
from pipelines.scoring.csv_output import CSV_SUFFIX, ERRORS_NAME
from pipelines.scoring.heatmaps import DEFAULT_HEATMAP_FORMAT, HEATMAP_FORMATS
from pipelines.scoring.pipeline import ScoringConfig, build_pipeline
from pipelines.scoring.progress import DEFAULT_INTERVAL_SECONDS, quiet_worker_logs

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
# A few unreadable files in a large folder are reported, not fatal; more than this suggests a
# systematic problem (wrong pattern, corrupt copy, wrong format) and fails the job's exit code.
DEFAULT_MAX_ERROR_FRACTION = 0.05
EXIT_TOO_MANY_ERRORS = 1
EXIT_LAUNCH_ERROR = 2


@dataclasses.dataclass(frozen=True)
class LaunchedRun:
    """A run that was checked, built and run: its config, Beam's result, and whether it ran."""

    config: ScoringConfig
    result: PipelineResult
    dry_run: bool


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
    parser.add_argument(
        "--model_dir",
        nargs="+",
        required=True,
        help="training export(s), local or gs://; a cross-validation output folder stands for "
        "all its fold-<i>/ exports; several exports score as one ensemble (mean logit)",
    )
    parser.add_argument("--output_dir", required=True, help="output folder, local or gs://")
    parser.add_argument(
        "--no_gradcam", action="store_true", help="score only; no heatmaps (faster)"
    )
    parser.add_argument(
        "--heatmap_format",
        choices=HEATMAP_FORMATS,
        default=DEFAULT_HEATMAP_FORMAT,
        help="Grad-CAM overlay files under heatmaps/: jpeg (quality 90, the default: a fraction "
        "of PNG's encoding time and size), png (lossless, level 1) or none (no files; the map's "
        "heatmap_peak is still in the CSV) (default %(default)s)",
    )
    parser.add_argument(
        "--tta",
        type=int,
        default=None,
        help="test-time augmentation: score 1, 2, 4 or 8 dihedral views of each image (turns "
        "and mirrors, see model/network/tta.py); p is the sigmoid of their mean logit and p_std "
        "their spread. Default: the model card's eval_tta (the views its threshold was chosen "
        "with), 1 for exports without it",
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="images per RunInference batch, and at most this many views per forward pass "
        "(batch_size // tta images with all their views; default %(default)s)",
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
        "--max_file_mb",
        type=float,
        default=storage.DEFAULT_MAX_FILE_MB,
        help="an input file larger than this many MiB is an error, not read (default %(default)s)",
    )
    add_review_limit_flag(parser)
    parser.add_argument(
        "--model_copies",
        type=int,
        default=None,
        help="load exactly N copies of the model per worker machine, shared by all its SDK "
        "processes (Beam's model_copies; 1 is Beam's large_model), e.g. 1 or 2 on a GPU VM "
        "whose processes would otherwise each load one; default: one per process",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="remove an earlier run's outputs from --output_dir before scoring (without it, "
        "such a folder is refused)",
    )
    parser.add_argument(
        "--skip_scored",
        nargs="+",
        default=[],
        metavar="DIR",
        help="earlier runs' output folders (finished, same model): images in their predictions "
        "are not scored again and are counted as already_scored; their errors are retried",
    )
    parser.add_argument(
        "--progress_interval",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        help="seconds between progress lines per worker process (default %(default)s)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show TensorFlow's native start-up lines (oneDNN, CUDA, CPU features)",
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


def runner_name(options: PipelineOptions, test_pipeline: beam.Pipeline | None) -> str:
    """The runner the job will use, known before the pipeline object is made."""
    if test_pipeline is not None:
        return type(test_pipeline.runner).__name__
    return options.view_as(StandardOptions).runner or "DirectRunner"


def resolve_config(
    args: argparse.Namespace, runner: str
) -> tuple[ScoringConfig, EarlierRun | None]:
    """Check flags and locations (raising LaunchError) and read the model card.

    Returns the config and what an earlier run left, to remove (only with --overwrite).
    """
    check_flags(
        args.batch_size,
        args.max_error_fraction,
        args.num_shards,
        args.max_file_mb,
        args.review_limit,
        args.tta,
    )
    check_model_copies(args.model_copies)
    check_remote_locations(
        runner, [*args.input, *args.model_dir, args.output_dir, *args.skip_scored]
    )
    patterns = check_inputs(args.input, args.output_dir)
    ensemble = check_model_dirs(args.model_dir, gradcam=not args.no_gradcam)
    tta = default_views(ensemble, args.tta)
    for member in ensemble.members:
        if tta != member.eval_tta:
            logger.warning(
                "--tta %d, but the model's threshold was chosen on p from %d view(s) (its card's "
                "eval_tta%s): calls near the threshold may differ from the training job's",
                tta,
                member.eval_tta,
                f", {member.model_dir}" if len(ensemble.members) > 1 else "",
            )
    if not args.no_gradcam and ensemble.heatmap_scale is None:
        unscaled = [m.model_dir for m in ensemble.members if m.heatmap_scale is None]
        logger.warning(
            "The model card %s no heatmap_scale: each heatmap is shown on its own peak, so "
            "colours are not comparable between images (compare heatmap_peak instead)%s",
            "has" if len(ensemble.members) == 1 else f"of {', '.join(unscaled)} has",
            "" if len(ensemble.members) == 1 else "; the members' raw maps are averaged",
        )
    check_output_not_protected(
        args.output_dir,
        {"--model_dir": [*args.model_dir, *(member.model_dir for member in ensemble.members)]},
    )
    # Before check_output_dir: --skip_scored naming --output_dir is refused for what it is.
    skip_scored = check_skip_scored(args.skip_scored, ensemble.model_id, args.output_dir)
    earlier = check_output_dir(args.output_dir, args.overwrite)
    num_shards = args.num_shards
    if num_shards is None:
        num_shards = 1 if "direct" in runner.lower() else 0
    config = ScoringConfig(
        run_id=uuid.uuid4().hex,
        patterns=tuple(patterns),
        members=ensemble.members,
        output_dir=args.output_dir,
        gradcam=not args.no_gradcam,
        batch_size=args.batch_size,
        num_shards=num_shards,
        max_bytes=storage.max_bytes_from_mb(args.max_file_mb),
        image_size=ensemble.image_size,
        threshold=ensemble.threshold,
        model_id=ensemble.model_id,
        progress_interval=args.progress_interval,
        review_limit=args.review_limit,
        # Cards made before input quality control record no sizes: no unexpected_size check.
        expected_sizes=ensemble.expected_sizes,
        tta=tta,
        heatmap_scale=ensemble.heatmap_scale,
        skip_scored=skip_scored,
        heatmap_format=args.heatmap_format,
        model_copies=args.model_copies,
    )
    return config, earlier


def launch(
    argv: Sequence[str] | None = None,
    save_main_session: bool = True,
    test_pipeline: beam.Pipeline | None = None,
) -> LaunchedRun:
    """Check the launch, clear an earlier run's files (--overwrite), build, run and wait.

    Raises LaunchError, before anything runs or is removed, for unusable flags, inputs, model
    or output location.
    """
    started_at = time.time()
    args, beam_args = parse_args(argv)
    options = pipeline_options(beam_args, save_main_session)
    # Checked before the pipeline object is made, so a launch error prints one line only.
    config, earlier = resolve_config(args, runner_name(options, test_pipeline))
    pipeline = test_pipeline or beam.Pipeline(options=options)
    runner = runner_description(pipeline)
    dry_run = bool(pipeline.options.view_as(TestOptions).dry_run)
    record = start_run(config.output_dir, earlier, config.run_id, "scoring", dry_run)
    config = dataclasses.replace(config, launch_record=record)
    job = {
        "run_id": config.run_id,
        "model_id": config.model_id,
        # As given: one folder (an export or a cross-validation folder), or the list of them.
        "model_dir": args.model_dir[0] if len(args.model_dir) == 1 else list(args.model_dir),
        "members": [member.summary() for member in config.members],
        "threshold": config.threshold,
        "threshold_rule": threshold_rule(len(config.members)),
        "image_size": config.image_size,
        "gradcam": config.gradcam,
        "tta": config.tta,
        "heatmap_scale": config.heatmap_scale if config.gradcam else None,
        "heatmap_units": heatmap_units(config.members) if config.gradcam else None,
        "heatmap_format": config.heatmap_format if config.gradcam else None,
        "input": list(args.input),
        "skip_scored": list(args.skip_scored),
        "output_dir": config.output_dir,
        "batch_size": config.batch_size,
        "model_copies": config.model_copies,
        "max_error_fraction": args.max_error_fraction,
        "max_file_mb": args.max_file_mb,
        "expected_image_sizes": (
            config.expected_sizes.to_card() if config.expected_sizes is not None else None
        ),
        **runner,
    }
    logger.info(
        "Run %s: scoring %s with model %s%s (image size %d, threshold %.3f, %d view(s) per "
        "image, Grad-CAM %s) on the %s; outputs in %s",
        config.run_id,
        " ".join(config.patterns),
        config.model_id,
        f", an ensemble of {len(config.members)}" if len(config.members) > 1 else "",
        config.image_size,
        config.threshold,
        config.tta,
        "on" if config.gradcam else "off",
        runner["runner"],
        config.output_dir,
    )
    build_pipeline(pipeline, config, job, started_at)
    result = pipeline.run()
    result.wait_until_finish()
    return LaunchedRun(config=config, result=result, dry_run=dry_run)


def run(
    argv: Sequence[str] | None = None,
    save_main_session: bool = True,
    test_pipeline: beam.Pipeline | None = None,
) -> PipelineResult:
    """Beam's entry-point contract: launch the job and return Beam's result (see `launch`)."""
    return launch(argv, save_main_session, test_pipeline).result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, then exit 2 on launch errors and 1 when too many inputs failed."""
    args, _ = parse_args(argv)
    # Before anything imports TensorFlow; worker processes inherit the choice.
    set_verbosity(args.verbose)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Beam logs every string annotation it meets at INFO; they say nothing about the job.
    logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(logging.WARNING)
    quiet_worker_logs()
    try:
        launched = launch(argv)
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_LAUNCH_ERROR
    if launched.dry_run:
        logger.info("Dry run: the job graph was built and not run")
        return 0
    output_dir = launched.config.output_dir
    try:
        summary = finished_summary(launched.result, output_dir, launched.config.run_id, "run")
    except RunNotFinished as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_TOO_MANY_ERRORS
    if summary["failed_fraction"] > args.max_error_fraction:
        errors_csv = storage.join(output_dir, ERRORS_NAME + CSV_SUFFIX)
        tried = summary["inputs_matched"] - summary["already_scored"]
        print(
            f"error: {summary['failed']} of {tried} inputs failed "
            f"({summary['failed_fraction']:.1%} > --max_error_fraction "
            f"{args.max_error_fraction:.1%}); see {errors_csv}",
            file=sys.stderr,
        )
        return EXIT_TOO_MANY_ERRORS
    return 0


if __name__ == "__main__":
    sys.exit(main())
