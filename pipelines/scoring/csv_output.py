"""CSV files through Beam's text sink: one record per row, the header in every file."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam

from model import storage
from pipelines.scoring.rows import P_DECIMALS

PREDICTIONS_NAME = "predictions"
ERRORS_NAME = "errors"
CSV_SUFFIX = ".csv"


def csv_line(values: Iterable[Any]) -> str:
    """One CSV record (quoted as needed, no line terminator)."""
    buffer = io.StringIO()
    # The writer quotes fields holding its line terminator's characters, so "\r\n" makes it
    # quote line breaks inside paths; the terminator itself is dropped (WriteToText adds one).
    csv.writer(buffer, lineterminator="\r\n").writerow(
        [_float_text(value) if isinstance(value, float) else value for value in values]
    )
    return buffer.getvalue()[:-2]


def _float_text(value: float) -> str:
    """P_DECIMALS decimals; significant digits where those would write a non-zero value as 0
    (a raw Grad-CAM peak of 3e-7 is weak evidence, not none)."""
    text = f"{value:.{P_DECIMALS}f}"
    if value != 0.0 and float(text) == 0.0:
        return f"{value:.{P_DECIMALS}g}"
    return text


class WriteCsv(beam.PTransform):
    """Rows (NamedTuples) -> `<name>.csv`, or `<name>-SSSSS-of-NNNNN.csv` shards, with a header.

    A header-only file is written when there are no rows, so errors.csv always exists. The
    output is the PCollection of the final file names, available once they are all in place.
    """

    def __init__(self, output_dir: str, name: str, columns: Sequence[str], num_shards: int = 1):
        super().__init__()
        self._prefix = storage.join(output_dir, name)
        self._columns = list(columns)
        self._num_shards = num_shards

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        """Format and write."""
        return (
            rows
            # Rows are NamedTuples: iterable, but Beam 2.78's type check does not count a
            # NamedTuple as consistent with csv_line's Iterable[Any], so the input is Any.
            | "Format" >> beam.Map(csv_line).with_input_types(Any).with_output_types(str)
            | "Write"
            >> beam.io.WriteToText(
                self._prefix,
                file_name_suffix=CSV_SUFFIX,
                header=",".join(self._columns),
                num_shards=self._num_shards,
                shard_name_template="" if self._num_shards == 1 else None,
            )
        )
