"""Checks before a re-report starts, each failing with one line (LaunchError, exit code 2).

Which runs the --predictions patterns name (every file a scorer predictions file, every run
whole and finished), whether they can share one report (one model; one threshold unless
--threshold is given), where it may be written (never into one of those runs' folders), and
every row, read once on the launcher: each parses strictly, each run has the rows its
summary.json counts, and no image appears twice. Refusing a bad row before the job starts,
naming its file and line, means a report either covers every row or is not written.
"""

from __future__ import annotations

import hashlib
import math
import os
from array import array
from collections.abc import Sequence

import numpy as np

from model import storage
from pipelines.launch.checks import LaunchError
from pipelines.runs.prediction_files import (
    MalformedPredictionsError,
    PredictionsFile,
    is_predictions_file,
    read_predictions,
)
from pipelines.runs.scored_runs import (
    ScoredRun,
    check_one_model,
    normalize_folder,
    parent_folder,
    read_scored_run,
    same_folder,
    shared_value,
)
from pipelines.scoring.inputs import has_glob

FLAG = "--predictions"
DEFAULT_FILES = "predictions*.csv"  # what a folder given as a pattern stands for


def _normalize(pattern: str) -> str:
    """Absolute local patterns; a folder (no glob, no .csv) stands for its predictions files."""
    pattern = pattern.strip()
    if not storage.is_remote(pattern):
        pattern = os.path.abspath(os.path.expanduser(pattern))
    if has_glob(pattern) or pattern.lower().endswith(".csv"):
        return pattern
    return storage.join(normalize_folder(pattern), DEFAULT_FILES)


def _match(pattern: str) -> list[str]:
    normalized = _normalize(pattern)
    try:
        found = storage.match(normalized)
    except Exception as error:  # BeamIOError wraps whatever the filesystem raised
        raise LaunchError(f"{FLAG} {pattern!r} cannot be listed: {error}") from error
    if not found:
        raise LaunchError(f"{FLAG} {pattern!r} matches no file")
    others = [path for path in found if not is_predictions_file(path)]
    if others:
        raise LaunchError(
            f"{FLAG} {pattern!r} matches {others[0]}"
            f"{f' and {len(others) - 1} more' if len(others) > 1 else ''}, not a scorer "
            "predictions file (predictions.csv or predictions-SSSSS-of-NNNNN.csv); narrow the "
            "pattern"
        )
    return found


def find_runs(patterns: Sequence[str]) -> list[ScoredRun]:
    """The finished runs whose predictions files the patterns match, each matched whole.

    A file matched by two patterns counts once, so the same run given twice is one run.
    """
    files = sorted({path for pattern in patterns for path in _match(pattern)})
    by_folder: dict[str, set[str]] = {}
    for path in files:
        by_folder.setdefault(parent_folder(path), set()).add(path)
    runs = []
    for folder, matched in sorted(by_folder.items()):
        run = read_scored_run(folder, FLAG)
        missing = sorted(set(run.files) - {normalize_path(path) for path in matched})
        if missing:
            raise LaunchError(
                f"{FLAG} matches {len(run.files) - len(missing)} of the {len(run.files)} "
                f"predictions files of {run.run_dir} (not {missing[0]}): a report over part of "
                "a run would leave its other images out"
            )
        runs.append(run)
    return runs


def normalize_path(path: str) -> str:
    """A matched file's path as read_scored_run lists it."""
    return path if storage.is_remote(path) else os.path.abspath(path)


def report_threshold(runs: Sequence[ScoredRun], threshold: float | None) -> float:
    """--threshold, checked; or the threshold every run was scored at (LaunchError if several)."""
    check_one_model(runs, FLAG)
    if threshold is not None:
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise LaunchError(f"--threshold must be a number in [0, 1], got {threshold}")
        return threshold
    return shared_value(
        runs,
        "threshold",
        FLAG,
        "scored at different thresholds",
        "pass --threshold T to report them all at one",
    )


def check_not_an_input(output_dir: str, runs: Sequence[ScoredRun]) -> None:
    """The report may not be written into a run it reads: it would replace that run's
    metrics.json, report.html and summary.json (and --overwrite its predictions)."""
    for run in runs:
        if same_folder(output_dir, run.run_dir):
            raise LaunchError(
                f"--output_dir {output_dir} is the folder of the run whose predictions are "
                "reported; the report would replace that run's own metrics, report and summary. "
                "Choose another folder"
            )


def _digest(path: str) -> int:
    """64 bits of the path's BLAKE2b hash: 8 bytes per row to find repeated images."""
    return int.from_bytes(hashlib.blake2b(path.encode("utf-8"), digest_size=8).digest(), "little")


def _repeated(digests: array) -> set[int]:
    ordered = np.sort(np.frombuffer(digests, dtype=np.uint64))
    return set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())


def _rows(sources: Sequence[PredictionsFile]):
    for source in sources:
        try:
            for line, record in read_predictions(source):
                yield source.path, line, record
        except MalformedPredictionsError as error:
            raise LaunchError(f"{FLAG}: {error}") from error


def check_rows(runs: Sequence[ScoredRun]) -> int:
    """Read every row once: each must parse, each run must have as many rows as its summary
    counts, and no image may appear twice. Returns the number of rows.

    Memory is 8 bytes per row (a 64-bit hash of each path); only when two hashes agree are the
    paths themselves compared, in a second pass over the files.
    """
    digests = array("Q")
    for run in runs:
        count = 0
        for _, _, record in _rows(run.sources()):
            count += 1
            digests.append(_digest(record.image_path))
        if count != run.scored:
            raise LaunchError(
                f"{FLAG}: {run.run_dir} has {count} prediction rows but its summary.json counts "
                f"{run.scored} scored images: its predictions were changed after the run"
            )
    repeated = _repeated(digests)
    if repeated:
        _refuse_repeated_images(runs, repeated)
    return len(digests)


def _refuse_repeated_images(runs: Sequence[ScoredRun], repeated: set[int]) -> None:
    """Find the rows whose hashes repeat and refuse the first image that really is repeated."""
    seen: dict[str, str] = {}
    duplicates: list[tuple[str, str, str]] = []
    for run in runs:
        for path, line, record in _rows(run.sources()):
            if _digest(record.image_path) not in repeated:
                continue
            where = f"{path}:{line}"
            if record.image_path in seen:
                duplicates.append((record.image_path, seen[record.image_path], where))
            else:
                seen[record.image_path] = where
    if duplicates:
        image, first, second = duplicates[0]
        raise LaunchError(
            f"{FLAG}: {image} is scored twice ({first} and {second})"
            f"{f'; {len(duplicates) - 1} more images too' if len(duplicates) > 1 else ''}: "
            "a report counts each image once, so give each image's run once (an incremental "
            "run with --skip_scored scores only new images)"
        )
