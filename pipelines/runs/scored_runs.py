"""A finished scoring run's folder, read at launch: its summary.json and its predictions files.

Both `python -m pipelines.report` and the scorer's --skip_scored take earlier runs' predictions
as they are; this module checks, before any work starts, that a folder holds exactly that: a
scoring run's summary.json (written last, so the run finished), the model id and threshold it
records, and every predictions file the run wrote (predictions.csv, or all N shards), each
starting with the scorer's header. Every problem is a LaunchError naming the folder.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from model import storage
from model.image.naming import basename
from pipelines.launch.checks import LaunchError
from pipelines.reporting.report_writer import REPORT_KIND, SUMMARY_FILE
from pipelines.runs.prediction_files import (
    PREDICTIONS_FILE,
    MalformedPredictionsError,
    PredictionsFile,
    check_header,
    is_predictions_file,
)
from pipelines.scoring.csv_output import CSV_SUFFIX, PREDICTIONS_NAME


class ScoredRun(NamedTuple):
    """A finished scoring run: its folder, its summary.json and all its predictions files."""

    run_dir: str
    summary: dict[str, Any]
    files: tuple[str, ...]

    @property
    def model_id(self) -> str:
        """The id of the model (or ensemble) that scored the run."""
        return self.summary["model_id"]

    @property
    def threshold(self) -> float:
        """The threshold the run called p at."""
        return float(self.summary["threshold"])

    @property
    def scored(self) -> int:
        """How many rows its predictions files hold."""
        return int(self.summary["scored"])

    def sources(self) -> list[PredictionsFile]:
        """Its predictions files, each with the run's folder and threshold."""
        return [PredictionsFile(path, self.run_dir, self.threshold) for path in self.files]


def same_folder(first: str, second: str) -> bool:
    """Whether two folder names are one folder (locally after links; on gs:// as written)."""
    return storage.folder_key(first) == storage.folder_key(second)


def parent_folder(path: str) -> str:
    """The folder a file is in, local or gs://."""
    if storage.is_remote(path):
        return path.rsplit("/", 1)[0]
    return os.path.dirname(path)


def normalize_folder(folder: str) -> str:
    """An absolute local folder (user paths expanded), or a gs:// folder without trailing "/"."""
    if storage.is_remote(folder):
        return folder.rstrip("/")
    return os.path.abspath(os.path.expanduser(folder))


def _read_summary(run_dir: str, flag: str) -> dict[str, Any]:
    if not storage.is_remote(run_dir) and not os.path.isdir(run_dir):
        raise LaunchError(f"{flag} {run_dir} does not exist or is not a folder")
    path = storage.join(run_dir, SUMMARY_FILE)
    if not storage.exists(path):
        raise LaunchError(
            f"{flag} {run_dir} has no {SUMMARY_FILE}: not a finished scoring run (the scorer "
            "writes it last, so a run killed or still running has none)"
        )
    try:
        summary = json.loads(storage.read_text(path))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise LaunchError(f"{flag} {run_dir}: {SUMMARY_FILE} cannot be read: {error}") from error
    if not isinstance(summary, dict):
        raise LaunchError(f"{flag} {run_dir}: {SUMMARY_FILE} is not a JSON object")
    if summary.get("kind") == REPORT_KIND:
        raise LaunchError(
            f"{flag} {run_dir} holds a report (python -m pipelines.report), not a scoring run; "
            "give the scoring runs it was made from"
        )
    problems = []
    if not isinstance(summary.get("model_id"), str):
        problems.append(f"model_id {summary.get('model_id')!r}")
    threshold = summary.get("threshold")
    if not (
        isinstance(threshold, (int, float))
        and not isinstance(threshold, bool)
        and math.isfinite(threshold)
        and 0.0 <= threshold <= 1.0
    ):
        problems.append(f"threshold {threshold!r}")
    scored = summary.get("scored")
    if not (isinstance(scored, int) and not isinstance(scored, bool) and scored >= 0):
        problems.append(f"scored {scored!r}")
    if problems:
        raise LaunchError(
            f"{flag} {run_dir}: {SUMMARY_FILE} is not a scoring run's (it has "
            f"{', '.join(problems)})"
        )
    return summary


def _predictions_files(run_dir: str, flag: str) -> tuple[str, ...]:
    """Every predictions file of the run, checked complete: predictions.csv or all N shards."""
    pattern = storage.join(run_dir, PREDICTIONS_NAME + "*" + CSV_SUFFIX)
    found = [path for path in storage.match(pattern) if is_predictions_file(path)]
    if not found:
        raise LaunchError(f"{flag} {run_dir} has no predictions file (predictions*.csv)")
    names = [PREDICTIONS_FILE.fullmatch(basename(path)) for path in found]
    totals = {match["shards"] for match in names}
    if len(totals) > 1:  # predictions.csv beside shards, or shards of two different counts
        raise LaunchError(
            f"{flag} {run_dir} holds the predictions files of more than one run "
            f"({', '.join(basename(path) for path in found)})"
        )
    total = totals.pop()
    if total is not None:
        present = {int(match["shard"]) for match in names}
        if present != set(range(int(total))):
            missing = sorted(set(range(int(total))) - present)
            raise LaunchError(
                f"{flag} {run_dir} does not hold all {int(total)} predictions shards of its run "
                f"(missing shard numbers: {', '.join(map(str, missing)) or 'none'}; found "
                f"{', '.join(basename(path) for path in found)})"
            )
    for path in found:
        try:
            check_header(path)
        except MalformedPredictionsError as error:
            raise LaunchError(f"{flag}: {error}") from error
    return tuple(sorted(found))


def read_scored_run(run_dir: str, flag: str) -> ScoredRun:
    """The finished scoring run in run_dir; LaunchError (naming `flag`) when it is not one."""
    run_dir = normalize_folder(run_dir)
    summary = _read_summary(run_dir, flag)
    return ScoredRun(run_dir, summary, _predictions_files(run_dir, flag))


def shared_value(
    runs: Sequence[ScoredRun], attribute: str, flag: str, differ: str, remedy: str
) -> Any:
    """The value of `attribute` that every run has; a LaunchError naming each run's value when
    they differ ("<flag>: the runs were <differ> (...); <remedy>")."""
    values = {getattr(run, attribute) for run in runs}
    if len(values) > 1:
        each = ", ".join(f"{run.run_dir}: {getattr(run, attribute)}" for run in runs)
        raise LaunchError(f"{flag}: the runs were {differ} ({each}); {remedy}")
    return values.pop()


def check_one_model(runs: Sequence[ScoredRun], flag: str) -> str:
    """The model id every run was scored with; LaunchError naming them when they differ."""
    return shared_value(
        runs, "model_id", flag, "scored by different models", "one report covers one model's scores"
    )
