"""Run folders made from a finished scoring run's files, for the re-report and --skip_scored
tests: the same rows split, moved, re-thresholded or edited, with a summary.json to match."""

from __future__ import annotations

import csv
import json
import math
import pathlib
import shutil
from collections.abc import Callable, Sequence

from model.evaluation.labels import predicted_label
from pipelines.scoring.rows import PREDICTION_COLUMNS
from tests.pipelines.helpers import read_csv, read_json


def write_run(
    source: pathlib.Path,
    target: pathlib.Path,
    rows: Sequence[dict[str, str]] | None = None,
    **summary_changes,
) -> pathlib.Path:
    """A finished run folder in target: `rows` (default: source's predictions) in
    predictions.csv, source's overlays, and source's summary.json with `scored` and
    `summary_changes` applied. A "threshold" change re-calls every row at it."""
    rows = list(rows if rows is not None else read_csv(str(source / "predictions.csv")))
    if "threshold" in summary_changes:
        threshold = summary_changes["threshold"]
        rows = [
            {**row, "predicted_label": predicted_label(float(row["p_malignant"]), threshold)}
            for row in rows
        ]
    target.mkdir(parents=True, exist_ok=True)
    write_predictions(target / "predictions.csv", rows)
    if (source / "heatmaps").is_dir():
        shutil.copytree(source / "heatmaps", target / "heatmaps", dirs_exist_ok=True)
    summary = {**read_json(str(source / "summary.json")), "scored": len(rows), **summary_changes}
    (target / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return target


def write_predictions(
    path: pathlib.Path, rows: Sequence[dict[str, str]], columns: Sequence[str] = PREDICTION_COLUMNS
) -> None:
    """A predictions CSV as the scorer writes it (header, then one line per row)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def edit_line(path: pathlib.Path, line: int, edit: Callable[[str], str]) -> None:
    """Replace one line (1 = the header) of a text file with edit(line)."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = edit(lines[line - 1].decode("utf-8")).encode("utf-8", "surrogateescape")
    path.write_bytes(b"\n".join(lines))


def same_review(first: pathlib.Path, second: pathlib.Path) -> tuple[list, list]:
    """Both review.csv files' rows with heatmap_path reduced to the overlay's name (two runs
    write their overlays into their own folders under the same names)."""

    def rows(path: pathlib.Path) -> list[dict[str, str]]:
        return [
            {**row, "heatmap_path": pathlib.PurePath(row["heatmap_path"]).name}
            for row in read_csv(str(path / "review.csv"))
        ]

    return rows(first), rows(second)


def assert_same_numbers(actual, expected, where: str = "") -> None:
    """Equal structures; floats equal up to the order of summation (the streaming combiners add
    in whatever order the runner merges, so the last bits may differ), everything else exactly."""
    if isinstance(expected, float) or isinstance(actual, float):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), where
        assert math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-12), (
            f"{where}: {actual} != {expected}"
        )
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for key in expected:
            assert_same_numbers(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_numbers(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def assert_same_report(expected: pathlib.Path, actual: pathlib.Path) -> None:
    """Two folders' metrics.json, patients.csv and review.csv say the same: numbers equal up to
    the order of summation, review.csv's overlays under the same names (each run writes its
    overlays into its own folder)."""
    assert_same_numbers(
        read_json(str(actual / "metrics.json")), read_json(str(expected / "metrics.json"))
    )
    patients = [read_csv(str(folder / "patients.csv")) for folder in (expected, actual)]
    assert [row["patient_id"] for row in patients[0]] == [row["patient_id"] for row in patients[1]]
    for want, got in zip(*patients, strict=True):
        assert_same_numbers(
            {key: _number_or_text(value) for key, value in got.items()},
            {key: _number_or_text(value) for key, value in want.items()},
            want["patient_id"],
        )
    want, got = same_review(expected, actual)
    assert got == want and len(got) > 5


def _number_or_text(text: str):
    try:
        return float(text)
    except ValueError:
        return text
