"""The files of a cross-validation aggregate folder: names, plots in report order, and which
files in a folder are the aggregator's: those its cv_metrics.json lists (so a rerun replaces
those and keeps a user's own)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection

from model import storage
from model.evaluation.fold_predictions import OOF_PREDICTIONS_FILE
from model.reports import plots
from model.reports.assets import REPORT_ASSETS_DIR
from model.reports.html_report import REPORT_FILE

logger = logging.getLogger(__name__)

CV_METRICS_FILE = "cv_metrics.json"
SPREAD_PLOT = "plots/by_magnification.png"
CV_PLOTS: dict[str, str] = {
    "ROC, out-of-fold and per fold": plots.ROC_PLOT,
    "Precision-recall, out-of-fold and per fold": plots.PR_PLOT,
    "Metrics per magnification over the folds": SPREAD_PLOT,
    "Confusion matrix, out-of-fold": plots.CONFUSION_MATRIX_PLOT,
    "Reliability, out-of-fold": plots.RELIABILITY_PLOT,
}
"""Caption -> file (relative to the aggregate folder) of every plot, in report order."""
AGGREGATE_FILES: tuple[str, ...] = (
    CV_METRICS_FILE,  # first, so a removal starts by marking the aggregate incomplete
    OOF_PREDICTIONS_FILE,
    REPORT_FILE,
    *CV_PLOTS.values(),
)
_REPORT_ASSET = re.compile(rf"^{REPORT_ASSETS_DIR}/\d{{3}}_(original|overlay)\.png$")


def aggregate_looking_files(cv_dir: str) -> list[str]:
    """The files in cv_dir named like the aggregator's ('/'-separated, relative),
    cv_metrics.json first."""
    found = [
        name
        for name in storage.relative_files(cv_dir)
        if name in AGGREGATE_FILES or _REPORT_ASSET.match(name)
    ]
    return sorted(found, key=lambda name: (name != CV_METRICS_FILE, name))


def files_written(cv_dir: str, foreign: Collection[str]) -> list[str]:
    """What an aggregate wrote into cv_dir besides cv_metrics.json, for its `files` list: the
    aggregate-looking files less those there before it, except the fixed names it writes."""
    return [
        name
        for name in aggregate_looking_files(cv_dir)
        if name != CV_METRICS_FILE and (name not in foreign or name in AGGREGATE_FILES)
    ]


def remove_earlier_aggregate(cv_dir: str, reason: str) -> None:
    """Delete exactly what an earlier aggregate in cv_dir wrote (cv_metrics.json first): the
    files its cv_metrics.json lists or, without that list (an older release, or an aggregate
    a kill cut short), its files found by name, with a warning. reason starts the log lines."""
    present = aggregate_looking_files(cv_dir)
    if not present:
        return
    listed = _listed_files(cv_dir) if present[0] == CV_METRICS_FILE else None
    if listed is None:
        logger.warning(
            "%s: %s has no list of the files its aggregate wrote (an older release, or an "
            "aggregate cut short), so they are found by name and a file of yours named like "
            "one goes too",
            reason,
            cv_dir,
        )
        names = present
    else:
        names = [name for name in present if name == CV_METRICS_FILE or name in listed]
    paths = [storage.join(cv_dir, *name.split("/")) for name in names]
    logger.info(
        "%s: deleting %s of an earlier aggregate in %s",
        reason,
        storage.files_in_words(cv_dir, paths),
        cv_dir,
    )
    for path in paths:  # one by one, in order: cv_metrics.json goes before anything else
        storage.delete([path])


def _listed_files(cv_dir: str) -> set[str] | None:
    """The `files` cv_metrics.json lists, or None when it has no such list or is unreadable."""
    try:
        metrics = json.loads(storage.read_text(storage.join(cv_dir, CV_METRICS_FILE)))
    except (ValueError, UnicodeDecodeError):
        return None
    files = metrics.get("files") if isinstance(metrics, dict) else None
    return set(files) if isinstance(files, list) else None
