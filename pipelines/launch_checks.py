"""Checks made before the pipeline starts, each failing with one specific line for the user."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

from model import storage
from model.constants import CLASS_NAMES, IMAGE_EXTENSIONS, MIN_IMAGE_SIZE
from model.model_card import ModelCard, missing_export_files, read_model_card
from model.naming import is_image_file
from model.preprocessing import NORMALIZATION
from pipelines.inputs import (
    MANIFEST_COLUMN,
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


def check_flags(batch_size: int, max_error_fraction: float, num_shards: int | None) -> None:
    """Reject numeric flags outside their ranges."""
    if batch_size < 1:
        raise LaunchError(f"--batch_size must be at least 1, got {batch_size}")
    if not 0.0 <= max_error_fraction <= 1.0:
        raise LaunchError(f"--max_error_fraction must be in [0, 1], got {max_error_fraction}")
    if num_shards is not None and num_shards < 0:
        raise LaunchError(f"--num_shards must be 0 (runner decides) or more, got {num_shards}")


def check_inputs(patterns: Sequence[str]) -> list[str]:
    """Normalised patterns, each checked to match at least one image (or to be a manifest)."""
    checked = []
    for pattern in patterns:
        normalized = normalize_pattern(pattern)
        if is_manifest(normalized):
            _check_manifest(normalized)
        else:
            normalized = _check_glob(pattern, normalized)
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


def _match_some(pattern: str, normalized: str) -> list:
    """Up to LAUNCH_MATCH_LIMIT matches of a pattern."""
    try:
        return FileSystems.match([normalized], limits=[LAUNCH_MATCH_LIMIT])[0].metadata_list
    except Exception as error:  # BeamIOError wraps whatever the filesystem raised
        raise LaunchError(f"--input {pattern!r} cannot be listed: {error}") from error


def _check_glob(pattern: str, normalized: str) -> str:
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
    if not any(is_image_file(item.path) for item in found):
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


def check_model_export(model_dir: str) -> ModelCard:
    """The export's card, after checking the export is complete and this scorer can use it."""
    if not storage.is_remote(model_dir) and not os.path.isdir(model_dir):
        raise LaunchError(f"--model_dir {model_dir} does not exist")
    try:
        missing = missing_export_files(model_dir)
    except Exception as error:
        raise LaunchError(f"--model_dir {model_dir} cannot be read: {error}") from error
    if missing:
        raise LaunchError(
            f"--model_dir {model_dir} is not a complete training export: missing "
            f"{', '.join(missing)}"
        )
    try:
        card = read_model_card(model_dir)
    except Exception as error:  # bad JSON, wrong types, unreadable file
        raise LaunchError(
            f"--model_dir {model_dir}: unreadable model_card.json ({error})"
        ) from error
    normalization = card.preprocessing.get("normalization")
    problems = []
    if normalization != NORMALIZATION:
        problems.append(f"normalisation {normalization!r}, this scorer applies {NORMALIZATION!r}")
    if not isinstance(card.image_size, int) or card.image_size < MIN_IMAGE_SIZE:
        problems.append(f"image_size {card.image_size!r} (need an int >= {MIN_IMAGE_SIZE})")
    if not 0.0 <= float(card.threshold) <= 1.0:
        problems.append(f"threshold {card.threshold!r} outside [0, 1]")
    if list(card.class_names) != list(CLASS_NAMES):
        problems.append(f"class_names {card.class_names!r}, expected {list(CLASS_NAMES)!r}")
    if problems:
        raise LaunchError(f"--model_dir {model_dir}: model card has {'; '.join(problems)}")
    return card


def check_output_dir(output_dir: str) -> None:
    """Create the output folder if needed and prove a file can be written and deleted there."""
    if not storage.is_remote(output_dir):
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise LaunchError(f"--output_dir {output_dir} is a file, not a folder")
        try:
            os.makedirs(output_dir, exist_ok=True)
        except OSError as error:
            raise LaunchError(f"--output_dir {output_dir} cannot be created: {error}") from error
    probe = storage.join(output_dir, f".write-check-{uuid.uuid4().hex}")
    try:
        storage.write_bytes(probe, b"")
        storage.delete([probe])
    except Exception as error:  # permission, missing bucket, read-only filesystem, ...
        raise LaunchError(f"--output_dir {output_dir} is not writable: {error}") from error
    existing = [
        path
        for pattern in ("predictions*.csv", "errors.csv")
        for path in storage.match(storage.join(output_dir, pattern))
    ]
    if existing:
        logger.warning(
            "--output_dir %s already holds outputs (%s); they will be overwritten, and files "
            "this run does not write (old shards, old heatmaps) stay",
            output_dir,
            ", ".join(os.path.basename(path) for path in existing[:3]),
        )


def check_remote_locations(runner: str, locations: Sequence[str]) -> None:
    """A runner whose workers are other machines cannot read or write local paths."""
    if "dataflow" not in runner.lower():
        return
    local = [location for location in locations if not storage.is_remote(location)]
    if local:
        raise LaunchError(
            f"--runner {runner} workers cannot see local paths; use gs:// for: {', '.join(local)}"
        )
