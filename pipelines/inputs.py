"""Turn `--input` patterns and CSV manifests into image paths, inside the pipeline.

Only the patterns go into the job graph; the paths they match are listed by a DoFn on a worker,
so a run over millions of images does not embed millions of paths in the job. A pattern is a
glob (`*`, `?`, `**` across folders), a folder (scored recursively) or a CSV manifest: a `.csv`
path without glob characters whose `image_path` column lists the images, relative entries
resolved against the manifest's folder.
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
from model.naming import is_image_file

logger = logging.getLogger(__name__)

MANIFEST_COLUMN = "image_path"
SKIPPED_TAG = "skipped"
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


class ExpandPatternFn(beam.DoFn):
    """Pattern -> image paths; non-image files a glob matches go to the `skipped` output.

    Manifest entries are all kept: a listed file that is not an image is reported as an error
    by the scorer rather than skipped, since someone asked for it by name.
    """

    def process(self, pattern: str) -> Iterator[str | beam.pvalue.TaggedOutput]:
        """Yield the paths of one pattern."""
        if is_manifest(pattern):
            count = 0
            for path in read_manifest(pattern):
                count += 1
                yield path
            logger.info("Manifest %s lists %d images", pattern, count)
            return
        metadata = FileSystems.match([pattern])[0].metadata_list
        images = 0
        for item in metadata:
            if is_image_file(item.path):
                images += 1
                yield item.path
            else:
                yield beam.pvalue.TaggedOutput(SKIPPED_TAG, item.path)
        logger.info(
            "Pattern %s matches %d images (%d other files skipped)",
            pattern,
            images,
            len(metadata) - images,
        )


class MatchImages(beam.PTransform):
    """Patterns -> (distinct image paths, skipped non-image paths)."""

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self._patterns = list(patterns)

    def expand(self, pbegin: beam.pvalue.PBegin):
        """Expand every pattern on a worker, then deduplicate (which also spreads the paths)."""
        expanded = (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Expand" >> beam.ParDo(ExpandPatternFn()).with_outputs(SKIPPED_TAG, main="images")
        )
        # Distinct shuffles by path: a file reached by two patterns is scored once, and the
        # paths of one huge pattern are spread across workers instead of staying on the one
        # that listed them.
        images = expanded.images | "Deduplicate" >> beam.Distinct()
        return images, expanded[SKIPPED_TAG]
