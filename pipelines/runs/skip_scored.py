"""--skip_scored: leave out the images earlier runs of the same model already scored.

A nightly run over a growing bucket then scores only what arrived since. The earlier runs'
predictions are read in the pipeline (`ReadPredictions`, the re-report's strict reader) and
joined with the matched paths by a CoGroupByKey on the path, so no worker holds the set of
scored paths: the join is a shuffle, and memory stays flat whatever the number of earlier
predictions. Paths compare as MatchImages produces them and the scorer writes them (absolute
local paths, gs:// URLs): the same file reached under another spelling (a symbolic link, a
copied bucket) is a new image.

Only predictions are read: an image in an earlier run's errors.csv is tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import apache_beam as beam

from pipelines.launch.checks import LaunchError
from pipelines.runs.prediction_files import PredictionsFile, ReadPredictions
from pipelines.runs.scored_runs import ScoredRun, read_scored_run, same_folder

logger = logging.getLogger(__name__)

TO_SCORE_TAG = "to_score"
ALREADY_SCORED_TAG = "already_scored"
_MATCHED = "matched"
_SCORED = "scored"
FLAG = "--skip_scored"


def check_skip_scored(
    run_dirs: Sequence[str], model_id: str, output_dir: str
) -> tuple[PredictionsFile, ...]:
    """The predictions files of the --skip_scored runs, checked (LaunchError, exit 2, when not):
    each a finished scoring run of this model, none the run's own --output_dir."""
    runs: list[ScoredRun] = []
    for run_dir in run_dirs:
        if any(same_folder(run_dir, run.run_dir) for run in runs):
            continue  # given twice
        if same_folder(run_dir, output_dir):
            raise LaunchError(
                f"{FLAG} {run_dir} is this run's --output_dir: its predictions are the ones this "
                "run would replace; write the new run to another folder and skip this one"
            )
        run = read_scored_run(run_dir, FLAG)
        if run.model_id != model_id:
            raise LaunchError(
                f"{FLAG} {run.run_dir} was scored by model {run.model_id}, not {model_id}: its "
                "images were never scored by this model"
            )
        runs.append(run)
    for run in runs:
        logger.info(
            "%s: the %d images %s scored are not scored again", FLAG, run.scored, run.run_dir
        )
    return tuple(source for run in runs for source in run.sources())


def _split(joined: tuple[str, dict[str, list]]) -> Iterator[str | beam.pvalue.TaggedOutput]:
    """A path the patterns matched goes to be scored, or to already_scored if a run has it."""
    path, groups = joined
    if not list(groups[_MATCHED]):
        return  # scored earlier, not matched now (the file is gone, or another pattern)
    if list(groups[_SCORED]):
        yield beam.pvalue.TaggedOutput(ALREADY_SCORED_TAG, path)
    else:
        yield path


class SkipScored(beam.PTransform):
    """Matched image paths -> {to_score, already_scored}: each path in exactly one."""

    def __init__(self, sources: Sequence[PredictionsFile]):
        super().__init__()
        self._sources = list(sources)

    def expand(self, paths: beam.PCollection) -> dict[str, beam.PCollection]:
        """Join the matched paths with the earlier runs' paths by path."""
        scored = (
            paths.pipeline
            | "ReadScored" >> ReadPredictions(self._sources)
            | "ScoredPaths" >> beam.Map(lambda record: (record.image_path, None))
        )
        matched = paths | "KeyMatched" >> beam.Map(lambda path: (path, None))
        split = (
            {_MATCHED: matched, _SCORED: scored}
            | "JoinByPath" >> beam.CoGroupByKey()
            | "Split" >> beam.FlatMap(_split).with_outputs(ALREADY_SCORED_TAG, main=TO_SCORE_TAG)
        )
        return {TO_SCORE_TAG: split[TO_SCORE_TAG], ALREADY_SCORED_TAG: split[ALREADY_SCORED_TAG]}
