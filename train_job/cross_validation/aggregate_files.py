"""The files of a cross-validation aggregate folder: names, plots in report order, and which
files in a folder are the aggregator's (so a rerun replaces those and keeps a user's own)."""

from __future__ import annotations

import os
import re

from model import storage
from model.evaluation.fold_predictions import OOF_PREDICTIONS_FILE
from model.reports import plots
from model.reports.assets import REPORT_ASSETS_DIR
from model.reports.html_report import REPORT_FILE

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


def aggregate_files(cv_dir: str) -> list[str]:
    """The aggregator's files present in cv_dir, cv_metrics.json first; a user's own files
    there are not among them."""
    if not storage.is_remote(cv_dir) and not os.path.isdir(cv_dir):
        return []
    prefix = cv_dir.rstrip("/") + "/"
    found = []
    for path in storage.list_files(cv_dir):
        if storage.is_remote(cv_dir):
            relative = path[len(prefix) :]
        else:
            relative = os.path.relpath(path, cv_dir).replace(os.sep, "/")
        if relative in AGGREGATE_FILES or _REPORT_ASSET.match(relative):
            found.append(
                (AGGREGATE_FILES.index(relative) if relative in AGGREGATE_FILES else 99, path)
            )
    return [path for _, path in sorted(found)]
