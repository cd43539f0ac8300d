"""Per-image outputs: prediction and error rows, heatmap files and their names, CSV writers."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from model import storage
from model.labels import predicted_label
from model.naming import basename, parse_breakhis_name

logger = logging.getLogger(__name__)

HEATMAP_DIR = "heatmaps"
PREDICTIONS_NAME = "predictions"
ERRORS_NAME = "errors"
HEATMAP_ALPHA = 0.4
P_DECIMALS = 6
_MESSAGE_LIMIT = 500
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ScoredImage(NamedTuple):
    """One row of predictions.csv; the BreakHis fields are empty when the name does not parse."""

    image_path: str
    p_malignant: float
    predicted_label: str
    true_label: str
    patient_id: str
    magnification: str
    subtype: str
    heatmap_path: str


class ScoringError(NamedTuple):
    """One row of errors.csv: an input that could not be scored, and why."""

    image_path: str
    error_type: str
    message: str


PREDICTION_COLUMNS: tuple[str, ...] = ScoredImage._fields
ERROR_COLUMNS: tuple[str, ...] = ScoringError._fields


def scored_image(path: str, p_malignant: float, threshold: float, heatmap_path: str) -> ScoredImage:
    """The prediction row of one image, with ground truth parsed from a BreakHis file name."""
    # The rounded score is the one written, thresholded and aggregated, so predictions.csv,
    # predicted_label and metrics.json always agree with one another.
    p = round(float(p_malignant), P_DECIMALS)
    info = parse_breakhis_name(path)
    return ScoredImage(
        image_path=path,
        p_malignant=p,
        predicted_label=predicted_label(p, threshold),
        true_label=info.label if info else "",
        patient_id=info.slide_id if info else "",
        magnification=info.magnification if info else "",
        subtype=info.subtype if info else "",
        heatmap_path=heatmap_path,
    )


def heatmap_name(image_path: str) -> str:
    """A flat file name for an image's heatmap: readable stem plus a hash of the full path.

    The hash makes equal file names in different folders distinct; the name has no separators
    and no leading dot, so it cannot leave the heatmap folder or hide in it.
    """
    name = basename(image_path)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    safe = _UNSAFE.sub("_", stem).strip("._-")[:80] or "image"
    digest = hashlib.sha256(image_path.encode("utf-8")).hexdigest()[:16]
    return f"{safe}-{digest}.png"


class WriteHeatmapFn(beam.DoFn):
    """(path, PredictionResult) -> ScoredImage, writing the Grad-CAM overlay PNG if there is one."""

    def __init__(self, heatmap_dir: str, threshold: float, alpha: float = HEATMAP_ALPHA):
        self._heatmap_dir = heatmap_dir
        self._threshold = threshold
        self._alpha = alpha

    def process(self, element: tuple[str, PredictionResult]) -> Iterator[ScoredImage]:
        """Overlay at the original size, encode (fast PNG level), write, emit the row."""
        from model.gradcam import encode_png, overlay_heatmap

        path, result = element
        score = result.inference
        heatmap_path = ""
        if score.heatmap is not None:
            overlay = overlay_heatmap(result.example.original, score.heatmap, alpha=self._alpha)
            heatmap_path = storage.join(self._heatmap_dir, heatmap_name(path))
            storage.write_bytes(heatmap_path, encode_png(overlay, compress_level=1))
        yield scored_image(path, score.p_malignant, self._threshold, heatmap_path)


def _one_line(text: str) -> str:
    """Collapse whitespace so a message stays on one CSV line, and bound its length."""
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 3] + "..."


def describe_failure(failure: tuple[type, str, Sequence[str]]) -> tuple[str, str]:
    """(error type, message) from the (type, repr, traceback lines) Beam's dead letters carry."""
    exc_type, exc_repr, trace = failure
    message = exc_repr
    if trace:
        # The traceback's last line is "module.Type: message", i.e. str(exception).
        last = trace[-1].strip()
        for prefix in (f"{exc_type.__module__}.{exc_type.__qualname__}", exc_type.__qualname__):
            if last.startswith(prefix + ":"):
                message = last[len(prefix) + 1 :].strip() or exc_repr
                break
    return exc_type.__name__, _one_line(message)


def error_for_path(element: tuple[str, tuple]) -> ScoringError:
    """A failed read/decode (element is the path) as an errors.csv row."""
    path, failure = element
    return ScoringError(path, *describe_failure(failure))


def error_for_scored(element: tuple[tuple[str, Any], tuple]) -> ScoringError:
    """A failed heatmap write (element is (path, PredictionResult)) as an errors.csv row."""
    (path, _), failure = element
    error_type, message = describe_failure(failure)
    return ScoringError(path, error_type, f"writing the heatmap failed: {message}")


def errors_for_batch(element: tuple[Sequence[tuple[str, Any]], tuple]) -> Iterator[ScoringError]:
    """A failed inference batch as one errors.csv row per image in it."""
    batch, failure = element
    error_type, message = describe_failure(failure)
    for path, _ in batch:
        yield ScoringError(
            path, error_type, f"inference failed for its batch of {len(batch)}: {message}"
        )


def csv_line(values: Iterable[Any]) -> str:
    """One CSV record (quoted as needed, no line terminator)."""
    buffer = io.StringIO()
    # The writer quotes fields holding its line terminator's characters, so "\r\n" makes it
    # quote line breaks inside paths; the terminator itself is dropped (WriteToText adds one).
    csv.writer(buffer, lineterminator="\r\n").writerow(
        [f"{value:.{P_DECIMALS}f}" if isinstance(value, float) else value for value in values]
    )
    return buffer.getvalue()[:-2]


class WriteCsv(beam.PTransform):
    """Rows (NamedTuples) -> `<name>.csv`, or `<name>-SSSSS-of-NNNNN.csv` shards, with a header.

    A header-only file is written when there are no rows, so errors.csv always exists.
    """

    def __init__(self, output_dir: str, name: str, columns: Sequence[str], num_shards: int = 1):
        super().__init__()
        self._prefix = storage.join(output_dir, name)
        self._columns = list(columns)
        self._num_shards = num_shards

    def expand(self, rows: beam.PCollection) -> beam.pvalue.PDone:
        """Format and write."""
        return (
            rows
            | "Format" >> beam.Map(csv_line).with_output_types(str)
            | "Write"
            >> beam.io.WriteToText(
                self._prefix,
                file_name_suffix=".csv",
                header=",".join(self._columns),
                num_shards=self._num_shards,
                shard_name_template="" if self._num_shards == 1 else None,
            )
        )
