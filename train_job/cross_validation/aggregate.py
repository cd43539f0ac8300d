"""Aggregate the fold exports of a K-fold cross-validation, trained anywhere, into one folder.

    python -m train_job.cv_report FOLD_DIR [FOLD_DIR ...] --output_dir DIR

Writes (local or gs://) `oof_predictions.csv` (every image once, scored by the fold model that
held it out, at that fold's threshold), `plots/`, `report.html` with `report_assets/`, and last
`cv_metrics.json`, whose presence marks a complete aggregate and whose `files` lists every
other file it wrote (it is deleted first when an aggregate is replaced, and only the files it
lists with it). Rerun on the same fold exports (same model ids), it does nothing.

Exit codes: 0 written (or already complete for these folds), 2 with one `error:` line when the
folders do not form one cross-validation or the output folder cannot be written, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from model import storage
from model.evaluation.cv_metrics import cv_metrics
from model.evaluation.evaluate import evaluate
from model.evaluation.fold_predictions import (
    OOF_COLUMNS,
    OOF_PREDICTIONS_FILE,
    evaluation_records,
    predictions_csv_text,
)
from model.storage import DEFAULT_MAX_FILE_MB, max_bytes_from_mb
from train_job.cross_validation.aggregate_files import (
    CV_METRICS_FILE,
    aggregate_looking_files,
    files_written,
    remove_earlier_aggregate,
)
from train_job.cross_validation.folds import CrossValidationError, Fold, read_folds

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2


def out_of_fold_rows(folds: Sequence[Fold]) -> list[dict[str, Any]]:
    """Every fold's test predictions with its fold and threshold, sorted by image path."""
    rows = [
        {**row, "fold": fold.index, "threshold": float(fold.card.threshold)}
        for fold in folds
        for row in fold.predictions
    ]
    return sorted(rows, key=lambda row: row["image_path"])


def fold_reports(folds: Sequence[Fold]) -> list[dict[str, Any]]:
    """Each fold's evaluation report from its test predictions, at its threshold."""
    return [
        evaluate(evaluation_records(fold.predictions), float(fold.card.threshold)) for fold in folds
    ]


def aggregate(folds: Sequence[Fold]) -> tuple[dict[str, Any], list[dict], list[dict]]:
    """(cv_metrics.json content, out-of-fold rows, the fold reports) of checked folds."""
    rows = out_of_fold_rows(folds)
    reports = fold_reports(folds)
    oof_report = evaluate(evaluation_records(rows), None)
    metrics = {
        **cv_metrics(reports, oof_report),
        "out_of_fold_rule": "each image is scored by the model of the fold whose test split "
        "held it, and called at that fold's threshold",
        "fold_dirs": [fold.folder for fold in folds],
        "model_ids": [fold.card.model_id for fold in folds],
        "thresholds": [float(fold.card.threshold) for fold in folds],
        "out_of_fold_report": oof_report,
    }
    return metrics, rows, reports


def complete_aggregate(output_dir: str) -> dict[str, Any] | None:
    """The cv_metrics.json of a complete aggregate in output_dir, or None (none, or unreadable)."""
    path = storage.join(output_dir, CV_METRICS_FILE)
    if not storage.exists(path):
        return None
    try:
        metrics = json.loads(storage.read_text(path))
    except (ValueError, UnicodeDecodeError):
        logger.warning("%s is unreadable; the aggregate is written again", path)
        return None
    return metrics if isinstance(metrics, dict) else None


def write_cv(
    fold_dirs: Sequence[str],
    output_dir: str,
    max_bytes: int = max_bytes_from_mb(DEFAULT_MAX_FILE_MB),
) -> dict[str, Any]:
    """Check the folds, then write the aggregate into output_dir, cv_metrics.json last; returns
    its content. Does nothing when output_dir holds a complete aggregate of these fold models."""
    folds = read_folds(fold_dirs)
    model_ids = [fold.card.model_id for fold in folds]
    existing = complete_aggregate(output_dir)
    if existing is not None and existing.get("model_ids") == model_ids:
        logger.info("%s already aggregates these %d folds: nothing to do", output_dir, len(folds))
        return existing
    try:
        storage.check_writable_folder(output_dir)
    except storage.UnwritableFolderError as error:
        raise CrossValidationError(f"--output_dir {output_dir} {error}") from None
    # cv_metrics.json goes first: a run killed while replacing the aggregate leaves it
    # marked incomplete, and no picture of the earlier gallery stays behind.
    remove_earlier_aggregate(output_dir, "new fold models")
    foreign = aggregate_looking_files(output_dir)  # not its own: a user's, kept
    metrics, rows, reports = aggregate(folds)
    text = predictions_csv_text(rows, OOF_COLUMNS)
    storage.write_text(storage.join(output_dir, OOF_PREDICTIONS_FILE), text)
    from train_job.cross_validation.aggregate_report import (
        write_plots_and_report,  # TensorFlow: only once needed
    )

    write_plots_and_report(output_dir, folds, rows, reports, metrics, max_bytes)
    metrics = {**metrics, "files": files_written(output_dir, foreign)}
    metrics_text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    storage.write_text(storage.join(output_dir, CV_METRICS_FILE), metrics_text)
    _log_headline(metrics)
    logger.info("Cross-validation aggregate of %d folds written to %s", len(folds), output_dir)
    return metrics


def _log_headline(metrics: Mapping[str, Any]) -> None:
    def shown(entry: Mapping[str, Any]) -> str:
        mean, sd = entry.get("mean"), entry.get("sd")
        text = "n/a" if mean is None else f"{mean:.4f}"
        return text + ("" if sd is None else f" ± {sd:.4f}")

    image = metrics["image_level"]["pooled"]
    patient = metrics["patient_level"]["pooled"]
    logger.info(
        "Over %d folds (mean ± sd): image accuracy %s (baseline %s), balanced accuracy %s, "
        "ROC AUC %s, patient-level accuracy %s",
        metrics["folds"],
        shown(image["accuracy"]),
        shown(metrics["baseline"]["image_level"]["pooled"]["accuracy"]),
        shown(image["balanced_accuracy"]),
        shown(image["roc_auc"]),
        shown(patient["accuracy"]),
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The aggregator's flags."""
    parser = argparse.ArgumentParser(
        description="Aggregate the fold exports of one K-fold cross-validation (trained with "
        "--folds K --fold I, anywhere) into cv_metrics.json, oof_predictions.csv, plots and "
        "report.html.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("fold_dirs", nargs="+", metavar="FOLD_DIR", help="Every fold's export")
    parser.add_argument("--output_dir", required=True, help="Aggregate folder (local or gs://)")
    parser.add_argument(
        "--max_file_mb",
        type=float,
        default=float(DEFAULT_MAX_FILE_MB),
        help="Images larger than this (MiB) are left out of the Grad-CAM gallery",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.max_file_mb > 0:
        print(f"error: --max_file_mb must be above 0, got {args.max_file_mb}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        write_cv(args.fold_dirs, args.output_dir, max_bytes_from_mb(args.max_file_mb))
    except CrossValidationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
