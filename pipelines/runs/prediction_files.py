"""predictions.csv read back into ScoredImages: the file names, a strict row parser, the Beam read.

The parser accepts exactly what the scorer writes (`pipelines.scoring.rows.PREDICTION_COLUMNS`, in
that order) and refuses anything else with the file and line: a report that silently dropped or
guessed rows would be wrong, so a malformed row is an error, never a skip. Within a row, every
field is checked against its domain, and `predicted_label` against the score and the threshold
of the run that wrote it (the call is derived, so a disagreement means an edited file).

A row's `heatmap_path` is read as the overlay's name in its run's `heatmaps/` folder, so runs
launched with a relative --output_dir, or moved since, still lead to their overlays.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from model import storage
from model.constants import CLASS_NAMES, MAGNIFICATIONS
from model.evaluation.labels import predicted_label
from model.image.naming import basename
from model.image.quality import QC_FLAGS, parse_flags
from pipelines.scoring.csv_output import CSV_SUFFIX, PREDICTIONS_NAME
from pipelines.scoring.heatmaps import HEATMAP_DIR
from pipelines.scoring.rows import PREDICTION_COLUMNS, ScoredImage

PREDICTIONS_FILE = re.compile(
    rf"{PREDICTIONS_NAME}(?:-(?P<shard>\d{{5,}})-of-(?P<shards>\d{{5,}}))?{re.escape(CSV_SUFFIX)}"
)
"""predictions.csv, or one shard predictions-SSSSS-of-NNNNN.csv: the names the scorer writes."""
# An overlay's file name as the scorer makes them (pipelines.scoring.heatmaps.heatmap_name): no
# separators and no leading dot, whatever the image format, so a row cannot point a link
# outside heatmaps/.
_OVERLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class MalformedPredictionsError(ValueError):
    """A predictions file, or one of its rows, that the scorer did not write; names where."""


class PredictionsFile(NamedTuple):
    """One predictions file of a finished run, with the threshold its run called p at."""

    path: str
    run_dir: str
    threshold: float


def is_predictions_file(path: str) -> bool:
    """Whether a file's name is one the scorer gives its predictions."""
    return bool(PREDICTIONS_FILE.fullmatch(basename(path)))


def _lines(path: str) -> Iterator[str]:
    """The file's lines as text, each decoded on its own so a bad byte is found by its line."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise MalformedPredictionsError(
                    f"{path}:{number}: not UTF-8 text ({error.reason} at byte {error.start})"
                ) from None


def _number(text: str, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite number in [low, high]; ValueError naming the field otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} {text!r} is not finite")
    if not low <= value <= high:
        raise ValueError(f"{name} {text} is outside [{low:g}, {high:g}]")
    return value


def _optional(text: str, name: str, low: float = -math.inf) -> float | None:
    return None if text == "" else _number(text, name, low)


def _one_of(text: str, name: str, allowed: Sequence[str]) -> str:
    if text not in allowed:
        raise ValueError(f"{name} {text!r} is not one of {', '.join(map(repr, allowed))}")
    return text


def parse_row(values: Sequence[str], threshold: float, run_dir: str) -> ScoredImage:
    """One predictions.csv record as its ScoredImage; ValueError saying what is wrong.

    `threshold` is the one its run called p at (summary.json); `run_dir` the run's folder, where
    the row's overlay is looked for.
    """
    if len(values) != len(PREDICTION_COLUMNS):
        raise ValueError(f"{len(values)} fields, the header has {len(PREDICTION_COLUMNS)}")
    row = dict(zip(PREDICTION_COLUMNS, values, strict=True))
    image_path = row["image_path"]
    if not (storage.is_remote(image_path) or os.path.isabs(image_path)):
        raise ValueError(f"image_path {image_path!r} is not an absolute path or a gs:// URL")
    p = _number(row["p_malignant"], "p_malignant", 0.0, 1.0)
    called = _one_of(row["predicted_label"], "predicted_label", CLASS_NAMES)
    if called != predicted_label(p, threshold):
        raise ValueError(
            f"predicted_label {called!r} disagrees with p_malignant {p} at its run's threshold "
            f"{threshold}"
        )
    true_label = _one_of(row["true_label"], "true_label", ("", *CLASS_NAMES))
    if true_label and not row["patient_id"]:
        raise ValueError("a labelled row without patient_id")
    flags = parse_flags(row["qc_flags"])
    unknown = [flag for flag in flags if flag not in QC_FLAGS]
    if unknown:
        raise ValueError(f"qc_flags {row['qc_flags']!r} names unknown flags {unknown}")
    return ScoredImage(
        image_path=image_path,
        p_malignant=p,
        predicted_label=called,
        true_label=true_label,
        patient_id=row["patient_id"],
        magnification=_one_of(row["magnification"], "magnification", ("", *MAGNIFICATIONS)),
        subtype=row["subtype"],
        heatmap_path=_overlay_path(row["heatmap_path"], run_dir),
        heatmap_peak=_optional(row["heatmap_peak"], "heatmap_peak", 0.0),
        p_std=_number(row["p_std"], "p_std", 0.0),
        qc_flags=row["qc_flags"],
        tissue_fraction=_optional(row["tissue_fraction"], "tissue_fraction"),
        focus_score=_optional(row["focus_score"], "focus_score"),
        stain_score=_optional(row["stain_score"], "stain_score"),
        member_std=_optional(row["member_std"], "member_std", 0.0),
    )


def _overlay_path(heatmap_path: str, run_dir: str) -> str:
    """The row's overlay in its run's heatmaps/ folder (empty: the run drew none)."""
    if not heatmap_path:
        return ""
    name = basename(heatmap_path)
    if not _OVERLAY_NAME.fullmatch(name):
        raise ValueError(f"heatmap_path {heatmap_path!r} does not name an overlay file")
    return storage.join(run_dir, HEATMAP_DIR, name)


def _check_header(path: str, header: list[str] | None) -> None:
    if header != list(PREDICTION_COLUMNS):
        shown = "no header (empty file)" if header is None else f"header {','.join(header)!r}"
        raise MalformedPredictionsError(
            f"{path}: {shown} is not the scorer's predictions header "
            f"{','.join(PREDICTION_COLUMNS)!r}"
        )


def check_header(path: str) -> None:
    """Raise MalformedPredictionsError unless the file starts with the scorer's header."""
    lines = _lines(path)
    try:
        header = next(csv.reader(lines), None)
    except csv.Error as error:
        raise MalformedPredictionsError(f"{path}:1: {error}") from None
    finally:
        lines.close()
    _check_header(path, header)


def read_predictions(source: PredictionsFile) -> Iterator[tuple[int, ScoredImage]]:
    """(line number, ScoredImage) for every row of a predictions file, in order.

    Raises MalformedPredictionsError naming the file and line of the first bad row (or the
    file, for a header that is not the scorer's).
    """
    # newline handling is the csv module's: the scorer quotes line breaks inside paths.
    rows = csv.reader(_lines(source.path), strict=True)
    try:
        _check_header(source.path, next(rows, None))
        for values in rows:
            try:
                if not values:
                    raise ValueError("an empty line")
                record = parse_row(values, source.threshold, source.run_dir)
            except ValueError as error:
                raise MalformedPredictionsError(f"{source.path}:{rows.line_num}: {error}") from None
            yield rows.line_num, record
    except csv.Error as error:  # e.g. a quote left open at the end of the file
        raise MalformedPredictionsError(f"{source.path}:{rows.line_num}: {error}") from None


def called_at(record: ScoredImage, threshold: float | None) -> ScoredImage:
    """The row with its predicted_label at `threshold` (None: as its run called it)."""
    if threshold is None:
        return record
    return record._replace(predicted_label=predicted_label(record.p_malignant, threshold))


def _records(source: PredictionsFile, threshold: float | None) -> Iterator[ScoredImage]:
    for _, record in read_predictions(source):
        yield called_at(record, threshold)


class ReadPredictions(beam.PTransform):
    """Predictions files -> their ScoredImages, called at `threshold` (None: as written).

    Each file is read whole by one worker (a quoted path may hold a line break, so files are
    not split by lines); the files are spread across workers (a scorer on Dataflow writes many
    shards). The rows go straight into the combiners: spreading them too cost a third more CPU
    on the DirectRunner for no gain there.
    """

    def __init__(self, sources: Sequence[PredictionsFile], threshold: float | None = None):
        super().__init__()
        self._sources = list(sources)
        self._threshold = threshold

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        """Read every file, parse every row."""
        return (
            pbegin
            | "Files" >> beam.Create(self._sources)
            | "Read" >> beam.FlatMap(_records, self._threshold)
        )
