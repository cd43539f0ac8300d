"""The packages Dataflow CPU workers install: the launcher's runtime lock."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.runners.portability.stager import SKIP_REQUIREMENTS_CACHE

from pipelines.launch.dependency_lock import RUNTIME_LOCK, beam_differs_from_lock

logger = logging.getLogger(__name__)


def pin_dataflow_workers(options: PipelineOptions) -> str | None:
    """Have Dataflow CPU workers install the runtime lock; returns the lock used, else None.

    Only for the DataflowRunner without a --sdk_container_image (an image holds its own
    packages) or a --requirements_file of the user's. The requirements cache is skipped: Beam
    would `pip download` each line of the file on its own, which a hashed lock's continued
    lines do not survive, so the workers install the lock from PyPI at start instead.
    """
    runner = options.view_as(StandardOptions).runner or ""
    setup = options.view_as(SetupOptions)
    if "Dataflow" not in runner or setup.requirements_file or not RUNTIME_LOCK.is_file():
        return None
    if options.view_as(WorkerOptions).sdk_container_image:
        return None
    setup.requirements_file = str(RUNTIME_LOCK)
    if setup.requirements_cache is None:
        setup.requirements_cache = SKIP_REQUIREMENTS_CACHE
    return setup.requirements_file


def pipeline_options(beam_args: Sequence[str], save_main_session: bool) -> PipelineOptions:
    """Beam's options for a launch of the scorer or the re-report, with the workers' packages.

    Logs a warning when the running Beam is not the lock's (what Dataflow workers would get).
    """
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    mismatch = beam_differs_from_lock()
    if mismatch:
        logger.warning(mismatch)
    pinned = pin_dataflow_workers(options)
    if pinned:
        logger.info("Dataflow workers will install %s (--requirements_file)", pinned)
    return options
