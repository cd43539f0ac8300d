"""Progress logging: each worker process logs the images it has finished against those matched.

A DoFn sees only its own process's elements, so each line reports that process's count and
rate; with one process (the DirectRunner's default in_memory mode) that is the whole job. The
matched total arrives as a side input, computed once matching has finished.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import apache_beam as beam

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 30.0


class _ProcessProgress:
    """Images finished in this process, shared by all DoFn instances and threads in it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = 0
        self.started: float | None = None
        self.last_report: float | None = None
        self.done_at_last_report = 0


# Per job: one process (the in_memory DirectRunner, a test session) may run several jobs.
_PROGRESS: dict[str, _ProcessProgress] = {}
_PROGRESS_LOCK = threading.Lock()


def _progress_of(job_id: str) -> _ProcessProgress:
    """The count of one job in this process, created on first use."""
    with _PROGRESS_LOCK:
        return _PROGRESS.setdefault(job_id, _ProcessProgress())


class ReportProgressFn(beam.DoFn):
    """Counts finished images (scored or failed) and logs every `interval_seconds`.

    Every ReportProgressFn of one job must share its `job_id`, so they add to one count.
    """

    def __init__(self, job_id: str, interval_seconds: float = DEFAULT_INTERVAL_SECONDS):
        self._job_id = job_id
        self._interval = interval_seconds
        self._state: _ProcessProgress | None = None

    def setup(self) -> None:
        """Attach to this process's count for the job."""
        self._state = _progress_of(self._job_id)

    def process(self, element: Any, matched: int) -> None:
        """Count the element and log if the interval has passed; emits nothing."""
        now = time.monotonic()
        state = self._state
        with state.lock:
            if state.started is None:
                state.started = state.last_report = now
            state.done += 1
            elapsed = now - state.last_report
            if elapsed < self._interval and state.done < matched:
                return
            recent = (state.done - state.done_at_last_report) / elapsed if elapsed > 0 else 0.0
            overall = state.done / (now - state.started) if now > state.started else 0.0
            state.last_report, state.done_at_last_report = now, state.done
            done = state.done
        logger.info(
            "Progress: worker process %d has finished %d of %d matched images "
            "(%.1f images/s over the last %.0fs, %.1f/s since its first image)",
            os.getpid(),
            done,
            matched,
            recent,
            elapsed,
            overall,
        )
