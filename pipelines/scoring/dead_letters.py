"""Failures as errors.csv rows: Beam's dead-letter tuples, and names that cannot be written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pipelines.scoring.rows import ScoringError

_MESSAGE_LIMIT = 500
INVALID_NAME_TYPE = "UnicodeDecodeError"
INVALID_NAME_MESSAGE = (
    "the file name is not valid UTF-8 (its undecodable bytes are shown as \\xNN); "
    "rename the file to score it"
)


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
    """A failed post-processing step, i.e. the heatmap write, as an errors.csv row."""
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


def error_for_invalid_name(printable: str) -> ScoringError:
    """A matched file whose name is not valid UTF-8 (given as `naming.printable_path` shows it)."""
    return ScoringError(printable, INVALID_NAME_TYPE, INVALID_NAME_MESSAGE)
