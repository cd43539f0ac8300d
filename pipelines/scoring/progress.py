"""Progress logging: each worker process logs the images it has finished against those matched.

A DoFn sees only its own process's elements, so each line reports that process's count and
rate; with one process (the DirectRunner's default in_memory mode) that is the whole job. The
matched total arrives as a side input, computed once matching has finished.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Any

import apache_beam as beam

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 10.0


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

    # No return annotation: Beam (2.78 and later) reads it as the output type and requires an
    # iterable, and this DoFn emits nothing.
    def process(self, element: Any, matched: int):
        """Count the element and log if the interval has passed; emits nothing."""
        now = time.monotonic()
        state = self._state
        with state.lock:
            if state.started is None:
                state.started = state.last_report = now
            state.done += 1
            self._matched = matched
            if now - state.last_report < self._interval and state.done < matched:
                return
            line = self._take_report(now, matched)
        logger.info(line)

    def finish_bundle(self) -> None:
        """Report what this bundle added, so every process ends with a line of its own."""
        state = self._state
        matched = getattr(self, "_matched", None)
        if matched is None:
            return
        with state.lock:
            if state.done == state.done_at_last_report:
                return
            line = self._take_report(time.monotonic(), matched)
        logger.info(line)

    def _take_report(self, now: float, matched: int) -> str:
        """The progress line since the last report (caller holds the lock), and reset the clock."""
        state = self._state
        elapsed = now - state.last_report
        recent = (state.done - state.done_at_last_report) / elapsed if elapsed > 0 else 0.0
        overall = state.done / (now - state.started) if now > state.started else 0.0
        state.last_report, state.done_at_last_report = now, state.done
        return (
            f"Progress: worker process {os.getpid()} has finished {state.done} of {matched} "
            f"matched images ({recent:.1f} images/s over the last {elapsed:.0f}s, "
            f"{overall:.1f}/s since its first image)"
        )


class WorkerLogFilter(logging.Filter):
    """Shortens the DirectRunner's relayed worker logs and drops Beam's own chatter.

    In multi_processing mode every worker log line arrives as one long protobuf dump; this
    keeps the lines our packages logged (and any error), reduced to the message itself.
    """

    _MESSAGE = re.compile(r'message: "(?P<message>(?:[^"\\]|\\.)*)"')
    _LOCATION = re.compile(r'log_location: "(?P<location>[^"]*)"')
    _OURS = ("/pipelines/", "/model/", "/train_job/")

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep (rewritten) our packages' lines and errors; drop the rest."""
        text = record.getMessage()
        if not text.startswith("Worker:"):
            return True
        location = self._LOCATION.search(text)
        ours = location is not None and any(part in location["location"] for part in self._OURS)
        if not ours and record.levelno < logging.ERROR:
            return False
        message = self._MESSAGE.search(text)
        if message is not None:
            record.msg, record.args = "worker: %s", (message["message"],)
        return True


RELAY_LOGGER = "apache_beam.runners.portability.local_job_service"


def quiet_worker_logs() -> None:
    """Install WorkerLogFilter on the logger that relays multi_processing worker logs."""
    logging.getLogger(RELAY_LOGGER).addFilter(WorkerLogFilter())
