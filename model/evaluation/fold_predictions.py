"""A training export's test predictions (`test_predictions.csv`) and cross-validation's
out-of-fold predictions (`cv/oof_predictions.csv`): the same columns as the scorer's
predictions.csv where they apply, written and read back here.

p_malignant is written with every digit (`repr`), so metrics recomputed from the file equal the
training job's metrics.json exactly, and `predicted_label` is the call at that exact p.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from model.constants import CLASS_NAMES
from model.evaluation.labels import label_index, predicted_label
from model.image.naming import parse_breakhis_name

TEST_PREDICTIONS_FILE = "test_predictions.csv"
OOF_PREDICTIONS_FILE = "oof_predictions.csv"
PREDICTION_COLUMNS: tuple[str, ...] = (
    "image_path",
    "p_malignant",
    "predicted_label",
    "true_label",
    "patient_id",
    "magnification",
    "subtype",
)
"""The scorer's predictions.csv columns that a training export can fill."""
OOF_COLUMNS: tuple[str, ...] = (*PREDICTION_COLUMNS, "fold", "threshold")
"""Out-of-fold rows add the fold whose model scored the image and that fold's threshold."""


class PredictionsFileError(ValueError):
    """A predictions file that cannot be read as this module writes it; says where and why."""


def prediction_rows(
    split_rows: Sequence[Mapping[str, Any]], p_malignant: Sequence[float], threshold: float
) -> list[dict[str, Any]]:
    """One prediction row per split.csv row (its image_path, label, slide_id, magnification)."""
    rows = []
    for row, p in zip(split_rows, p_malignant, strict=True):
        info = parse_breakhis_name(row["image_path"])
        rows.append(
            {
                "image_path": row["image_path"],
                "p_malignant": float(p),
                "predicted_label": predicted_label(float(p), threshold),
                "true_label": row["label"],
                "patient_id": row["slide_id"],
                "magnification": row["magnification"],
                "subtype": info.subtype if info is not None else "",
            }
        )
    return rows


def predictions_csv_text(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = PREDICTION_COLUMNS
) -> str:
    """The CSV text of prediction rows, floats written exactly."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[column]) for column in columns])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def read_predictions(
    text: str, source: str, columns: Sequence[str] = PREDICTION_COLUMNS
) -> list[dict[str, Any]]:
    """Rows of a predictions CSV, p_malignant (and threshold, fold) parsed; PredictionsFileError
    naming `source` and the line for a missing column or a value out of its range."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [column for column in columns if column not in (reader.fieldnames or ())]
    if missing:
        raise PredictionsFileError(f"{source} has no column {', '.join(missing)}")
    rows = []
    for line, raw in enumerate(reader, start=2):
        try:
            rows.append(_parsed(raw, columns))
        except (TypeError, ValueError) as error:
            raise PredictionsFileError(f"{source} line {line}: {error}") from None
    return rows


def _parsed(raw: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    row = {column: raw[column] for column in columns}
    if not row["image_path"]:
        raise ValueError("empty image_path")
    row["p_malignant"] = _probability(row["p_malignant"], "p_malignant")
    for column in ("true_label", "predicted_label"):
        if row[column] not in CLASS_NAMES:
            raise ValueError(f"{column} {row[column]!r} is not one of {', '.join(CLASS_NAMES)}")
    if not row["patient_id"]:
        raise ValueError("empty patient_id")
    if "threshold" in row:
        row["threshold"] = _probability(row["threshold"], "threshold")
    if "fold" in row:
        row["fold"] = int(row["fold"])
    return row


def _probability(text: Any, name: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} {text!r} is not a number in [0, 1]")
    return value


def evaluation_records(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prediction rows as the records `model.evaluation.evaluate.evaluate` takes (with each
    row's own threshold when it has one)."""
    records = []
    for row in rows:
        record = {
            "label": label_index(row["true_label"]),
            "p_malignant": float(row["p_malignant"]),
            "patient_id": row["patient_id"],
            "magnification": row["magnification"],
        }
        if "threshold" in row:
            record["threshold"] = float(row["threshold"])
        records.append(record)
    return records
