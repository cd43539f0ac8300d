"""manifest.json: the files a scoring run (or a re-report) wrote into --output_dir.

A run writes it twice, whole each time (`model.atomic.replace_file`): at launch, before the
pipeline starts, as its launch record (run id, start time, state "running", and the
output-looking files already in the folder that are not its own, such as a user's); and at
the end, just before summary.json, with state "finished" and `files`, every file it wrote.

What an earlier run left is then known exactly (`earlier_run`): a finished run's files are the
manifest's list; a run killed before it finished left its launch record, and its files are the
output-looking ones present now less those its record found already there. --overwrite
removes those and nothing else. A folder without a manifest, from an older release, keeps the
file-name rule (`pipelines.runs.outputs.is_run_output`), with a warning.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from model import storage
from model.atomic import replace_file
from model.reports.html_report import REPORT_FILE
from pipelines.reporting.report_writer import SUMMARY_FILE, read_summary
from pipelines.runs.outputs import MANIFEST_FILE, output_files, remove_outputs

logger = logging.getLogger(__name__)

RUNNING = "running"
FINISHED = "finished"
UNRECORDED = "unrecorded"  # a folder without a manifest (an older release)


@dataclasses.dataclass(frozen=True)
class EarlierRun:
    """The files an earlier run left in an output folder, and which run that was."""

    run_id: str | None  # None: unknown (no manifest and no summary.json)
    started_at: str | None
    state: str  # FINISHED, RUNNING (killed before it finished) or UNRECORDED (no manifest)
    files: tuple[str, ...]  # full paths, in removal order (summary.json first, manifest last)

    def describe(self) -> str:
        """Which run left the files and how it ended, in words, for one-line messages."""
        who = f"run {self.run_id}" if self.run_id else "a run"
        when = f" started {self.started_at}" if self.started_at else ""
        if self.state == RUNNING:
            return f"{who}{when}, which did not finish"
        if self.state == FINISHED:
            return f"{who}{when}"
        return f"{who}{when}; no {MANIFEST_FILE} (an older release): found by file name"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _relative(output_dir: str, paths: Sequence[str]) -> list[str]:
    prefix = storage.join(output_dir, "")
    return sorted(path[len(prefix) :].replace("\\", "/") for path in paths)


def _write(output_dir: str, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=2) + "\n"
    replace_file(
        storage.join(output_dir, MANIFEST_FILE), lambda stream: stream.write(text.encode())
    )


def launch_record(output_dir: str, run_id: str, kind: str) -> dict[str, Any]:
    """The launch record of run_id: it writes here, and the output-looking files already
    there (after --overwrite removed an earlier run's) are not its own."""
    foreign = [path for path in output_files(output_dir) if not path.endswith(MANIFEST_FILE)]
    return {
        "run_id": run_id,
        "kind": kind,
        "state": RUNNING,
        "started_at": _now(),
        "foreign_files": _relative(output_dir, foreign),
    }


def write_manifest(output_dir: str, record: dict[str, Any]) -> None:
    """Write a manifest record (a launch record, before the pipeline starts), replacing any."""
    _write(output_dir, record)


def remove_earlier_run(output_dir: str, earlier: EarlierRun) -> None:
    """--overwrite: remove exactly what an earlier run left, saying which run and what."""
    if earlier.state == UNRECORDED:
        logger.warning(
            "--overwrite: %s has no %s (written by an older release), so its files are found "
            "by name and a user's file named like one would go too",
            output_dir,
            MANIFEST_FILE,
        )
    logger.info(
        "--overwrite: removing %s of %s from %s",
        storage.files_in_words(output_dir, earlier.files),
        earlier.describe(),
        output_dir,
    )
    remove_outputs(output_dir, earlier.files)


def start_run(
    output_dir: str, earlier: EarlierRun | None, run_id: str, kind: str, dry_run: bool
) -> dict[str, Any]:
    """Before a run's pipeline starts: remove what an earlier run left (--overwrite gave it),
    then write this run's launch record; a dry run does neither. Returns the record."""
    if earlier is not None and dry_run:
        logger.info("Dry run: the %d files of %s stay", len(earlier.files), earlier.describe())
    elif earlier is not None:
        remove_earlier_run(output_dir, earlier)
    record = launch_record(output_dir, run_id, kind)
    if not dry_run:
        write_manifest(output_dir, record)
    return record


def write_finished_manifest(
    report_path: str, output_dir: str, launch_record: Mapping[str, Any], **finished_outputs: Any
) -> list[str]:
    """The manifest of a run that wrote every output but summary.json: the output-looking files
    present, less those found at launch, plus summary.json (written next); returns the files.

    A Beam step after the report (`report_path`, the element) with every other output's write
    results as side inputs (`finished_outputs`), so it runs after all of them."""
    foreign = set(launch_record["foreign_files"])
    written = [
        name
        for name in _relative(output_dir, output_files(output_dir))
        if name not in foreign and name != MANIFEST_FILE
    ]
    files = sorted({*written, SUMMARY_FILE})
    record = {**launch_record, "state": FINISHED, "finished_at": _now(), "files": files}
    _write(output_dir, record)
    return files


def read_manifest(output_dir: str) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is none or it cannot be read as one."""
    path = storage.join(output_dir, MANIFEST_FILE)
    if not storage.exists(path):
        return None
    try:
        record = json.loads(storage.read_text(path))
    except (ValueError, UnicodeDecodeError):
        logger.warning("%s is not a manifest this scorer wrote; ignoring it", path)
        return None
    if not isinstance(record, dict) or record.get("state") not in (RUNNING, FINISHED):
        logger.warning("%s is not a manifest this scorer wrote; ignoring it", path)
        return None
    return record


def _in_removal_order(output_dir: str, names: Sequence[str]) -> tuple[str, ...]:
    """summary.json and the report first (nothing half-removed reads as finished), the manifest
    last (a removal killed midway is finished by the next --overwrite)."""
    first = [name for name in (SUMMARY_FILE, REPORT_FILE) if name in names]
    last = [MANIFEST_FILE] if MANIFEST_FILE in names else []
    rest = sorted(set(names) - set(first) - set(last))
    return tuple(storage.join(output_dir, *name.split("/")) for name in first + rest + last)


def earlier_run(output_dir: str) -> EarlierRun | None:
    """What an earlier run left in output_dir (None: nothing), by its manifest when it has one."""
    present = _relative(output_dir, output_files(output_dir))
    if not present:
        return None
    record = read_manifest(output_dir)
    if record is None:
        summary = _summary_or_none(output_dir)
        return EarlierRun(
            run_id=(summary or {}).get("run_id"),
            started_at=(summary or {}).get("started_at"),
            state=UNRECORDED,
            files=_in_removal_order(output_dir, present),
        )
    if record["state"] == FINISHED:
        listed = set(record.get("files", []))
        names = [name for name in present if name in listed or name == MANIFEST_FILE]
    else:
        foreign = set(record.get("foreign_files", []))
        names = [name for name in present if name not in foreign]
        if names == [MANIFEST_FILE]:
            return None  # killed before it wrote anything: its record is all there is
    if not names:
        return None
    return EarlierRun(
        run_id=record.get("run_id"),
        started_at=record.get("started_at"),
        state=record["state"],
        files=_in_removal_order(output_dir, names),
    )


def _summary_or_none(output_dir: str) -> dict[str, Any] | None:
    try:
        summary = read_summary(output_dir)
    except (ValueError, UnicodeDecodeError):
        return None
    return summary if isinstance(summary, dict) else None
