"""The files a scoring run writes into --output_dir, by name, and removing an earlier run's.

A run's outputs must all come from that run. So a folder holding an earlier run's files is
refused at launch unless --overwrite is given, and then exactly those files are removed before
the run starts: summary.json first (so no half-removed folder reads as a finished run), then the
report, then the rest, and the manifest last. Which files an earlier run wrote is its
manifest's to say (`pipelines.runs.manifest`); the names here find the candidates, and are the
whole rule only for a folder an older release wrote, without a manifest.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

from model import storage
from model.reports.assets import REPORT_ASSETS_DIR
from model.reports.html_report import REPORT_FILE
from model.reports.plots import EVALUATION_PLOTS
from pipelines.reporting.report_writer import METRICS_FILE, PATIENTS_FILE, SUMMARY_FILE
from pipelines.reporting.review import REVIEW_FILE
from pipelines.scoring.csv_output import CSV_SUFFIX, ERRORS_NAME, PREDICTIONS_NAME
from pipelines.scoring.heatmaps import HEATMAP_DIR, HEATMAP_NAME

logger = logging.getLogger(__name__)

_BEAM_TEMP = re.compile(
    rf"beam-temp-(?:{PREDICTIONS_NAME}|{ERRORS_NAME})-[0-9a-f]{{32}}"
)  # Beam's text sink stages shards in beam-temp-<file prefix>-<uuid1 hex>/ beside the files
MANIFEST_FILE = "manifest.json"
_TOP_LEVEL_FILES = {
    MANIFEST_FILE,
    SUMMARY_FILE,
    REPORT_FILE,
    METRICS_FILE,
    PATIENTS_FILE,
    REVIEW_FILE,
    PREDICTIONS_NAME + CSV_SUFFIX,
    ERRORS_NAME + CSV_SUFFIX,
}
_SHARD = re.compile(rf"{PREDICTIONS_NAME}-\d{{5,}}-of-\d{{5,}}{re.escape(CSV_SUFFIX)}")
_WRITE_CHECK = re.compile(re.escape(storage.WRITE_CHECK_PREFIX) + r"[0-9a-f]{32}")
_PLOTS = set(EVALUATION_PLOTS.values())
_NAMED_FOLDERS = (HEATMAP_DIR, REPORT_ASSETS_DIR)
_OWN_FOLDERS = {*_NAMED_FOLDERS, *(plot.split("/")[0] for plot in _PLOTS)}
# Removed first, in this order: once they are gone nothing in the folder reads as finished.
_FIRST = (SUMMARY_FILE, REPORT_FILE)


def is_run_output(relative: str) -> bool:
    """Whether a "/"-separated path relative to --output_dir is a file the scorer writes."""
    parts = relative.split("/")
    if len(parts) == 1:
        name = parts[0]
        return name in _TOP_LEVEL_FILES or bool(
            _SHARD.fullmatch(name) or _WRITE_CHECK.fullmatch(name)
        )
    if _BEAM_TEMP.fullmatch(parts[0]):
        return True
    if len(parts) == 2 and parts[0] in _NAMED_FOLDERS:
        return bool(HEATMAP_NAME.fullmatch(parts[1]))
    return relative in _PLOTS


def _candidate_files(output_dir: str) -> list[str]:
    """Relative paths of the files where the scorer writes (top level and its own folders)."""
    if storage.is_remote(output_dir):
        prefix = output_dir.rstrip("/") + "/"
        return [path[len(prefix) :] for path in storage.match(prefix + "**")]
    if not os.path.isdir(output_dir):
        return []
    found = []
    with os.scandir(output_dir) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                found.append(entry.name)
            elif entry.name in _OWN_FOLDERS or _BEAM_TEMP.fullmatch(entry.name):
                for folder, _, names in os.walk(entry.path):
                    relative = os.path.relpath(folder, output_dir).replace(os.sep, "/")
                    found.extend(f"{relative}/{name}" for name in names)
    return found


def output_files(output_dir: str) -> list[str]:
    """Full paths of the files in output_dir whose names are ones the scorer writes, sorted."""
    relative = sorted(path for path in _candidate_files(output_dir) if is_run_output(path))
    return [storage.join(output_dir, *path.split("/")) for path in relative]


def remove_outputs(output_dir: str, paths: Sequence[str]) -> None:
    """Delete the given files of an earlier run, in their order: summary.json and the report
    one by one first, the manifest one last, the rest together between them.

    Locally, scorer folders left empty (and Beam's temporary folders) are removed too.
    """
    ordered = list(paths)
    first = {storage.join(output_dir, name) for name in _FIRST}
    last = storage.join(output_dir, MANIFEST_FILE)
    for path in [path for path in ordered if path in first]:
        storage.delete([path])  # one by one, in order, before anything else
    storage.delete([path for path in ordered if path not in first and path != last])
    if last in ordered:
        storage.delete([last])
    if not storage.is_remote(output_dir):
        storage.remove_empty_folders(output_dir, _is_own_folder)


def _is_own_folder(relative: str) -> bool:
    """Whether a folder (relative, "/"-separated) is one the scorer creates."""
    top = relative.split("/")[0]
    return top in _OWN_FOLDERS or bool(_BEAM_TEMP.fullmatch(top))
