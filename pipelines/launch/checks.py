"""Checks made before the pipeline starts, each failing with one specific line for the user."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from model import storage
from model.constants import IMAGE_EXTENSIONS, MODEL_CARD_FILE, TTA_CHOICES
from model.image.naming import is_image_file
from model.network.model_card import enclosing_export
from pipelines.runs.manifest import EarlierRun, earlier_run
from pipelines.scoring.inputs import (
    MANIFEST_COLUMN,
    OutputFolder,
    has_glob,
    is_manifest,
    normalize_pattern,
    read_manifest_header,
)

logger = logging.getLogger(__name__)

# Enough to find an image in a folder of mixed files without listing a whole bucket at launch.
LAUNCH_MATCH_LIMIT = 1000


class LaunchError(Exception):
    """A problem with the job's flags or locations, found before the pipeline starts."""


def check_flags(
    batch_size: int,
    max_error_fraction: float,
    num_shards: int | None,
    max_file_mb: float,
    review_limit: int,
    tta: int | None = None,
) -> None:
    """Reject numeric flags outside their ranges (tta None: the model card's choice)."""
    if tta is not None and tta not in TTA_CHOICES:
        raise LaunchError(f"--tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {tta}")
    if not max_file_mb > 0:  # also false for NaN
        raise LaunchError(f"--max_file_mb must be above 0, got {max_file_mb}")
    if batch_size < 1:
        raise LaunchError(f"--batch_size must be at least 1, got {batch_size}")
    if not 0.0 <= max_error_fraction <= 1.0:
        raise LaunchError(f"--max_error_fraction must be in [0, 1], got {max_error_fraction}")
    if num_shards is not None and num_shards < 0:
        raise LaunchError(f"--num_shards must be 0 (runner decides) or more, got {num_shards}")
    check_review_limit(review_limit)


def check_review_limit(review_limit: int) -> None:
    """Reject a negative --review_limit."""
    if review_limit < 0:
        raise LaunchError(f"--review_limit must be 0 (no review file) or more, got {review_limit}")


def check_model_copies(model_copies: int | None) -> None:
    """--model_copies, when given, is at least 1 (None: Beam's default, one per process)."""
    if model_copies is not None and model_copies < 1:
        raise LaunchError(f"--model_copies must be at least 1, got {model_copies}")


def check_inputs(patterns: Sequence[str], output_dir: str) -> list[str]:
    """Normalised patterns, each checked to match at least one image (or to be a manifest).

    Files inside output_dir do not count: the job excludes them from matching.
    """
    checked = []
    for pattern in patterns:
        normalized = normalize_pattern(pattern)
        if is_manifest(normalized):
            _check_manifest(normalized)
        else:
            normalized = _check_glob(pattern, normalized, OutputFolder(output_dir))
        checked.append(normalized)
    return checked


def _check_manifest(path: str) -> None:
    """The manifest exists, has an `image_path` column and at least one row."""
    if not storage.exists(path):
        raise LaunchError(f"--input manifest {path} does not exist")
    try:
        header, has_rows = read_manifest_header(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise LaunchError(f"--input manifest {path} cannot be read: {error}") from error
    if MANIFEST_COLUMN not in header:
        raise LaunchError(
            f"--input manifest {path} has no {MANIFEST_COLUMN!r} column (columns: {header})"
        )
    if not has_rows:
        raise LaunchError(f"--input manifest {path} lists no images")


def _match_some(pattern: str, normalized: str) -> list[str]:
    """Up to LAUNCH_MATCH_LIMIT matches of a pattern (every kind of entry, as the job lists)."""
    try:
        return storage.match(normalized, limit=LAUNCH_MATCH_LIMIT)
    except Exception as error:  # BeamIOError wraps whatever the filesystem raised
        raise LaunchError(f"--input {pattern!r} cannot be listed: {error}") from error


def _check_glob(pattern: str, normalized: str, output_folder: OutputFolder) -> str:
    """The pattern (as it will be expanded) after checking it matches at least one image.

    A `gs://` folder given without a trailing slash matches no object itself; it is read as
    the folder, as a local folder is.
    """
    found = _match_some(pattern, normalized)
    if not found and storage.is_remote(normalized) and not has_glob(normalized):
        folder = normalized.rstrip("/") + "/**"
        found = _match_some(pattern, folder)
        normalized = folder if found else normalized
    if not found:
        raise LaunchError(f"--input {pattern!r} matches no file")
    outputs = [path for path in found if output_folder.holds(path)]
    found = [path for path in found if not output_folder.holds(path)]
    if outputs and not found:
        raise LaunchError(
            f"--input {pattern!r} matches only files inside --output_dir, which are never scored"
        )
    if not any(is_image_file(path) for path in found):
        if len(found) < LAUNCH_MATCH_LIMIT:
            raise LaunchError(
                f"--input {pattern!r} matches {len(found)} files but no image "
                f"({', '.join(IMAGE_EXTENSIONS)})"
            )
        logger.warning(
            "--input %r: none of the first %d matches is an image; listing the rest on a worker",
            pattern,
            LAUNCH_MATCH_LIMIT,
        )
    return normalized


def check_output_not_protected(output_dir: str, protected: Mapping[str, Sequence[str]]) -> None:
    """--output_dir is none of the folders a run must never write into, with or without
    --overwrite: it may not be, lie inside, or hold a folder the run reads its model from
    (`protected`: flag -> folders), nor lie inside any training export (found by its
    model_card.json), whose test evidence a scoring run would replace."""
    for flag, folders in protected.items():
        for folder in folders:
            if storage.folders_overlap(output_dir, folder):
                raise LaunchError(
                    f"--output_dir {output_dir} overlaps {flag} {folder} (the same folder, or "
                    "one inside the other); write the run's outputs to a folder of their own"
                )
    export = enclosing_export(output_dir)
    if export is not None:
        raise LaunchError(
            f"--output_dir {output_dir} is inside the training export {export} (it holds "
            f"{MODEL_CARD_FILE}); write the run's outputs to a folder outside every export"
        )


def check_output_dir(output_dir: str, overwrite: bool) -> EarlierRun | None:
    """Create the output folder if needed, prove it writable; return what an earlier run left.

    Without --overwrite, a folder holding an earlier run's files is refused: a run's outputs
    must all come from that run. With it, they are returned for removal before the run.
    """
    try:
        storage.check_writable_folder(output_dir)
    except storage.UnwritableFolderError as error:
        raise LaunchError(f"--output_dir {output_dir} {error}") from error
    earlier = earlier_run(output_dir)
    if earlier is not None and not overwrite:
        raise LaunchError(
            f"--output_dir {output_dir} holds an earlier run's outputs ({earlier.describe()}): "
            f"{storage.files_in_words(output_dir, earlier.files)}; pass --overwrite to remove "
            "exactly those before this run, or choose another folder"
        )
    return earlier


def check_remote_locations(runner: str, locations: Sequence[str]) -> None:
    """A runner whose workers are other machines cannot read or write local paths."""
    if "dataflow" not in runner.lower():
        return
    local = [location for location in locations if not storage.is_remote(location)]
    if local:
        raise LaunchError(
            f"--runner {runner} workers cannot see local paths; use gs:// for: {', '.join(local)}"
        )
