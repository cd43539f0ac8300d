"""Turn `--input` patterns and CSV manifests into image paths, inside the pipeline.

Only the patterns go into the job graph; the paths they match are listed by a DoFn on a worker,
so a run over millions of images does not embed millions of paths in the job. A pattern is a
glob (`*`, `?`, `**` across folders), a folder (scored recursively) or a CSV manifest: a `.csv`
path without glob characters whose `image_path` column lists the images, relative entries
resolved against the manifest's folder.

Every file a glob matches ends in exactly one output: an image path to score, a name that is
not valid UTF-8 (Beam cannot carry it; reported as an error), a non-image file (skipped), or a
file inside the run's own output folder (excluded, so a rerun never scores its own heatmaps).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from model import storage
from model.image.naming import is_image_file, is_valid_utf8_name, printable_path

logger = logging.getLogger(__name__)

MANIFEST_COLUMN = "image_path"
IMAGES_TAG = "images"
INVALID_NAMES_TAG = "invalid_names"
SKIPPED_TAG = "skipped"
EXCLUDED_TAG = "excluded"
_GLOB_CHARACTERS = ("*", "?", "[")


def has_glob(pattern: str) -> bool:
    """Whether the pattern contains glob characters."""
    return any(character in pattern for character in _GLOB_CHARACTERS)


def is_manifest(pattern: str) -> bool:
    """Whether the pattern names a CSV manifest rather than images."""
    return pattern.lower().endswith(".csv") and not has_glob(pattern)


def normalize_pattern(pattern: str) -> str:
    """Absolute local patterns, and folders turned into `folder/**` so they match recursively."""
    pattern = pattern.strip()
    if storage.is_remote(pattern):
        return pattern + "**" if pattern.endswith("/") else pattern
    # Absolute local paths, so the same file reached by two patterns is deduplicated.
    local = os.path.abspath(os.path.expanduser(pattern))
    if os.path.isdir(local):
        return os.path.join(local, "**")
    return local


def _open_text(path: str):
    """A UTF-8 reader over a local or remote file; a BOM (spreadsheet exports) is dropped."""
    handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    # newline="" as the csv module requires, so quoted fields may hold line breaks.
    return io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")


def read_manifest_header(path: str) -> tuple[list[str], bool]:
    """The manifest's column names and whether it has at least one data row (reads two lines)."""
    with _open_text(path) as reader:
        lines = []
        for line in reader:
            lines.append(line)
            if len(lines) == 2:
                break
    rows = list(csv.reader(lines))
    header = [name.strip() for name in rows[0]] if rows else []
    return header, len(rows) > 1


def resolve_entry(manifest_path: str, entry: str) -> str:
    """A manifest entry as a full path: relative entries are relative to the manifest's folder."""
    if storage.is_remote(entry) or os.path.isabs(entry):
        return entry if storage.is_remote(entry) else os.path.normpath(entry)
    if storage.is_remote(manifest_path):
        scheme, _, rest = manifest_path.partition("://")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(rest), entry))
        return f"{scheme}://{joined}"
    return os.path.normpath(os.path.join(os.path.dirname(manifest_path), entry))


def read_manifest(path: str) -> Iterator[str]:
    """The image paths a manifest lists, in order, skipping blank entries."""
    with _open_text(path) as reader:
        rows = csv.DictReader(reader)
        if rows.fieldnames is None or MANIFEST_COLUMN not in [n.strip() for n in rows.fieldnames]:
            raise ValueError(f"manifest {path} has no {MANIFEST_COLUMN!r} column")
        column = next(name for name in rows.fieldnames if name.strip() == MANIFEST_COLUMN)
        for row in rows:
            entry = (row.get(column) or "").strip()
            if entry:
                yield resolve_entry(path, entry)


class OutputFolder:
    """Tells whether a matched path lies inside the run's output folder.

    Locally the folder is compared by its absolute and its real path (the input may reach it
    through a symbolic link); each matched file's folder is resolved once and remembered.
    """

    def __init__(self, output_dir: str):
        self._remote = storage.is_remote(output_dir)
        if self._remote:
            self._prefixes: tuple[str, ...] = (output_dir.rstrip("/") + "/",)
        else:
            absolute = os.path.abspath(output_dir)
            self._prefixes = tuple(
                {absolute.rstrip(os.sep) + os.sep, os.path.realpath(absolute) + os.sep}
            )
        self._folders: dict[str, bool] = {}

    def holds(self, path: str) -> bool:
        """Whether path is inside the output folder."""
        if path.startswith(self._prefixes):
            return True
        if self._remote:
            return False
        folder = os.path.dirname(path)
        inside = self._folders.get(folder)
        if inside is None:
            inside = (os.path.realpath(folder) + os.sep).startswith(self._prefixes)
            self._folders[folder] = inside
        return inside


class ExpandPatternFn(beam.DoFn):
    """Pattern -> image paths, plus tagged outputs for the files that are not scored.

    Glob matches go to `invalid_names` (printable form of a name that is not valid UTF-8),
    `excluded` (inside the output folder), `skipped` (not an image) or the image paths. Local
    globs list every entry (`storage.match`), dangling links and FIFOs included, so the scorer
    reports them instead of losing them. Manifest entries are all kept: a listed file that is
    not an image is reported as an error by the scorer rather than skipped, since someone asked
    for it by name.
    """

    def __init__(self, output_dir: str):
        self._output_dir = output_dir

    def process(self, pattern: str) -> Iterator[str | beam.pvalue.TaggedOutput]:
        """Yield the paths of one pattern."""
        if is_manifest(pattern):
            count = 0
            for path in read_manifest(pattern):
                count += 1
                yield path
            logger.info("Manifest %s lists %d images", pattern, count)
            return
        output_folder = OutputFolder(self._output_dir)
        counts = dict.fromkeys((IMAGES_TAG, INVALID_NAMES_TAG, SKIPPED_TAG, EXCLUDED_TAG), 0)
        for path in storage.match(pattern):
            if output_folder.holds(path):
                tag, value = EXCLUDED_TAG, printable_path(path)
            elif not is_image_file(path):
                tag, value = SKIPPED_TAG, printable_path(path)
            elif not is_valid_utf8_name(path):
                tag, value = INVALID_NAMES_TAG, printable_path(path)
            else:
                tag, value = IMAGES_TAG, path
            counts[tag] += 1
            yield value if tag == IMAGES_TAG else beam.pvalue.TaggedOutput(tag, value)
        logger.info(
            "Pattern %s matches %d images (%d with names that are not valid UTF-8; %d other "
            "files skipped, %d files of the output folder excluded)",
            pattern,
            counts[IMAGES_TAG] + counts[INVALID_NAMES_TAG],
            counts[INVALID_NAMES_TAG],
            counts[SKIPPED_TAG],
            counts[EXCLUDED_TAG],
        )


class MatchImages(beam.PTransform):
    """Patterns -> {images, invalid_names, skipped, excluded}, each path once.

    `images` are the distinct image paths to score; `invalid_names` the printable names of
    image files whose names are not valid UTF-8; `skipped` non-image files; `excluded` files
    inside output_dir.
    """

    def __init__(self, patterns: Sequence[str], output_dir: str):
        super().__init__()
        self._patterns = list(patterns)
        self._output_dir = output_dir

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        """Expand every pattern on a worker, then deduplicate (which also spreads the paths)."""
        expanded = (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Expand"
            >> beam.ParDo(ExpandPatternFn(self._output_dir)).with_outputs(
                INVALID_NAMES_TAG, SKIPPED_TAG, EXCLUDED_TAG, main=IMAGES_TAG
            )
        )
        # Distinct shuffles by path: a file reached by two patterns is scored once, and the
        # paths of one huge pattern are spread across workers instead of staying on the one
        # that listed them.
        return {
            tag: expanded[tag] | f"Distinct{tag.title().replace('_', '')}" >> beam.Distinct()
            for tag in (IMAGES_TAG, INVALID_NAMES_TAG, SKIPPED_TAG, EXCLUDED_TAG)
        }
