"""Progress lines and the filter that shortens relayed multi_processing worker logs."""

from __future__ import annotations

import logging

from pipelines.scoring.progress import RELAY_LOGGER, WorkerLogFilter


def _relayed(message: str, location: str, level: int = logging.INFO) -> logging.LogRecord:
    text = (
        f'Worker: severity: INFO timestamp {{ seconds: 1 }} message: "{message}" '
        f'instruction_id: "bundle_4" log_location: "{location}" thread: "Thread-13"'
    )
    return logging.LogRecord(RELAY_LOGGER, level, __file__, 1, text, None, None)


def test_worker_lines_of_our_packages_are_kept_and_shortened():
    record = _relayed(
        'Progress: worker process 7 has finished 32 of 64 \\"matched\\" images',
        "/repo/pipelines/progress.py:80",
    )
    assert WorkerLogFilter().filter(record)
    assert record.getMessage() == (
        'worker: Progress: worker process 7 has finished 32 of 64 \\"matched\\" images'
    )


def test_beam_chatter_is_dropped_but_errors_and_other_loggers_pass():
    log_filter = WorkerLogFilter()
    chatter = _relayed("Creating insecure state channel", "/venv/apache_beam/worker.py:1")
    assert not log_filter.filter(chatter)
    error = _relayed("Worker crashed", "/venv/apache_beam/worker.py:1", logging.ERROR)
    assert log_filter.filter(error) and error.getMessage() == "worker: Worker crashed"
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "Scoring started", None, None)
    assert log_filter.filter(plain) and plain.getMessage() == "Scoring started"
