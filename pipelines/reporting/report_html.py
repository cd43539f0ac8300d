"""report.html of a scoring run or a re-report: bounded gallery selection, error sample, the page.

The gallery keeps only the few images it will show (the most confident calls of each class and
the most confidently wrong ones), pruned as rows stream in, so memory does not grow with the
number of images; the error table shows a bounded sample (errors.csv has them all). The "Needs
review" section shows the review queue's counts and its first few images (review.csv has the
first --review_limit).

The page links the overlays it shows under its own heatmaps/ folder. A scoring run wrote them
there; a report rebuilt from earlier runs (summary.json "kind": "report") copies the few it shows
from the runs' folders, so the page keeps relative links only and can be moved or shared whole.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam

from model import storage
from model.evaluation.evaluate import PATIENT_COLUMNS, patient_table
from model.image.naming import basename
from model.image.overlay import encode_png
from model.image.preprocessing import bounded_copy, decode_rgb
from model.reports.assets import REPORT_ASSETS_DIR, downsize
from model.reports.html_report import (
    GALLERY_CATEGORIES,
    GalleryItem,
    is_misclassified,
    render_report,
    select_gallery,
    write_report,
)
from model.reports.plots import EVALUATION_PLOTS
from model.reports.quality_section import quality_section
from model.reports.sections import Section, format_metric
from pipelines.reporting.aggregates import MetricsInputs
from pipelines.reporting.report_writer import PATIENTS_FILE, REPORT_KIND
from pipelines.reporting.review import ReviewQueue
from pipelines.reporting.review_report import needs_review_section, review_section
from pipelines.scoring.heatmaps import HEATMAP_DIR, NO_HEATMAP_FILES, heatmap_name, overlay_href
from pipelines.scoring.rows import ScoredImage, ScoringError

logger = logging.getLogger(__name__)

PER_CATEGORY = 12
MAX_MISCLASSIFIED = 48
ERROR_SAMPLE = 200
_GALLERY_FIELDS = (
    "image_path",
    "p_malignant",
    "predicted_label",
    "true_label",
    "heatmap_path",
    "p_std",
    "heatmap_peak",
)


def gallery_category(row: Mapping[str, Any]) -> str:
    """Which gallery section a prediction row would belong to."""
    if is_misclassified(row):
        return "misclassified"
    return f"confident_{row['predicted_label']}"


class GalleryFn(beam.CombineFn):
    """ScoredImages -> (select_gallery's picks, rows per category), in bounded memory."""

    def __init__(
        self, per_category: int = PER_CATEGORY, max_misclassified: int = MAX_MISCLASSIFIED
    ):
        self._per_category = per_category
        self._max_misclassified = max_misclassified
        self._prune_at = 4 * (2 * per_category + max_misclassified) + 64

    def _prune(self, rows: list[dict]) -> list[dict]:
        picks = select_gallery(rows, self._per_category, self._max_misclassified)
        return [row for category in GALLERY_CATEGORIES for row in picks[category]]

    def create_accumulator(self) -> tuple[list[dict], collections.Counter]:
        """No candidates, no counts."""
        return [], collections.Counter()

    def add_input(self, accumulator, record: ScoredImage):
        """Keep the row as a candidate (pruning when the list grows) and count its category."""
        rows, totals = accumulator
        row = {field: getattr(record, field) for field in _GALLERY_FIELDS}
        rows.append(row)
        totals[gallery_category(row)] += 1
        if len(rows) > self._prune_at:
            rows[:] = self._prune(rows)
        return rows, totals

    def merge_accumulators(self, accumulators: Iterable):
        """Concatenate candidates (pruned) and add counts."""
        merged_rows: list[dict] = []
        merged_totals: collections.Counter = collections.Counter()
        for rows, totals in accumulators:
            merged_rows.extend(rows)
            merged_totals.update(totals)
            if len(merged_rows) > self._prune_at:
                merged_rows = self._prune(merged_rows)
        return merged_rows, merged_totals

    def extract_output(self, accumulator) -> tuple[dict[str, list[dict]], dict[str, int]]:
        """The final picks per category and how many rows each category had."""
        rows, totals = accumulator
        picks = select_gallery(rows, self._per_category, self._max_misclassified)
        return picks, dict(totals)


def linked_overlay(heatmap_path: str, output_dir: str) -> str | None:
    """The page's link to an image's overlay, copying it under output_dir/heatmaps/ when it is
    elsewhere (another run's folder); None when there is none or it cannot be read."""
    if not heatmap_path:
        return None
    target = storage.join(output_dir, HEATMAP_DIR, basename(heatmap_path))
    if heatmap_path != target:
        try:
            storage.write_bytes(target, storage.read_bytes(heatmap_path))
        except Exception as error:  # the run's folder was moved or pruned: show the rest
            logger.warning("No overlay for the report: %s: %s", heatmap_path, error)
            return None
    return overlay_href(heatmap_path)


def _gallery_items(
    picks: Mapping[str, Sequence[Mapping]], output_dir: str, max_bytes: int, views: int
) -> list[GalleryItem]:
    """Write a downsized copy of each picked original; link it beside its overlay (with p_std
    when the run scored several test-time views)."""
    items = []
    for category in GALLERY_CATEGORIES:
        for row in picks.get(category, []):
            if not row["heatmap_path"]:
                continue
            name = heatmap_name(row["image_path"])
            original_href = f"{REPORT_ASSETS_DIR}/{name}"
            try:
                data = storage.read_bytes(row["image_path"], max_bytes=max_bytes)
                original = downsize(bounded_copy(decode_rgb(data)))
            except Exception as error:  # the file changed since scoring: show the rest
                logger.warning("Gallery skips %s: %s", row["image_path"], error)
                continue
            overlay = linked_overlay(row["heatmap_path"], output_dir)
            if overlay is None:
                continue
            storage.write_bytes(
                storage.join(output_dir, REPORT_ASSETS_DIR, name), encode_png(original)
            )
            items.append(
                GalleryItem(
                    image_path=row["image_path"],
                    original_href=original_href,
                    overlay_href=overlay,
                    p_malignant=float(row["p_malignant"]),
                    predicted_label=row["predicted_label"],
                    true_label=row["true_label"] or None,
                    category=category,
                    p_std=float(row["p_std"]) if views > 1 else None,
                    heatmap_peak=row["heatmap_peak"],
                )
            )
    return items


def write_scoring_report(
    summary: Mapping[str, Any],
    metrics: Mapping[str, Any] | None,
    metrics_inputs: MetricsInputs,
    gallery: tuple[dict, dict],
    errors: Sequence[ScoringError] | None,
    review: ReviewQueue,
    output_dir: str,
    threshold: float,
    gradcam: bool,
    max_bytes: int,
) -> str:
    """Render and write report.html (a Beam Map over the run's summary); returns its path.

    errors None: a report rebuilt from predictions, which has no error table (each run's
    errors.csv lists its own).
    """
    picks, totals = gallery
    views = int(summary.get("tta") or 1)
    items = _gallery_items(picks, output_dir, max_bytes, views) if gradcam else []
    patients = [
        dict(zip(PATIENT_COLUMNS, row, strict=True))
        for row in patient_table(metrics_inputs.patient_rows, threshold)
    ]
    plots = EVALUATION_PLOTS if metrics is not None else {}
    review_data = needs_review_section(
        review, gradcam, link_overlay=lambda path: linked_overlay(path, output_dir)
    )
    rebuilt = summary.get("kind") == REPORT_KIND
    html = render_report(
        title=(
            f"BreakHis classifier: report over {len(summary['source_runs'])} scoring run(s)"
            if rebuilt
            else "BreakHis classifier: scoring run"
        ),
        metrics=metrics,
        plots=plots,
        gallery=items,
        patients=patients,
        errors=None if errors is None else [error._asdict() for error in sorted(errors)],
        summary=_summary_rows(summary),
        notes=_notes(summary, threshold, gradcam, errors),
        gallery_totals=totals,
        # A rebuilt report's rows stay in its runs' predictions files.
        full_lists=(
            {"patients": PATIENTS_FILE}
            if rebuilt
            else {
                "images": "predictions.csv",
                "patients": PATIENTS_FILE,
                "errors": "errors.csv",
            }
        ),
        extra_sections=_extra_sections(summary, metrics, review_data, threshold),
        heatmap_scale=summary.get("heatmap_scale"),
    )
    return write_report(output_dir, html)


def _notes(
    summary: Mapping[str, Any],
    threshold: float,
    gradcam: bool,
    errors: Sequence[ScoringError] | None,
) -> list[str]:
    """The lines under the title: the model and threshold, and what the page leaves out."""
    members = summary.get("members") or []
    rebuilt = summary.get("kind") == REPORT_KIND
    notes = []
    if rebuilt:
        runs = summary["source_runs"]
        notes.append(
            f"Rebuilt from the predictions of {len(runs)} scoring run(s) "
            f"({', '.join(run['run_dir'] for run in runs)}) without rescoring; each run's "
            "errors.csv lists the inputs it could not score."
        )
    scoring = summary.get("scoring_thresholds") or [threshold]
    if rebuilt and list(scoring) != [threshold]:
        notes.append(
            f"Called at threshold {threshold:.4f} given with --threshold, not at the "
            f"{', '.join(f'{value:.4f}' for value in scoring)} the runs were scored at: "
            "predicted labels, the metrics at the threshold, patients and the review queue "
            "follow the new threshold (ROC and PR curves and their areas do not depend on it)."
        )
    elif len(members) > 1:
        notes.append(
            f"Scored with an ensemble of {len(members)} models ({summary.get('model_id')}) at "
            f"decision threshold {threshold:.4f} (the {summary.get('threshold_rule')})."
        )
    else:
        notes.append(
            f"Scored with model {summary.get('model_id')} at decision threshold {threshold:.4f} "
            "(chosen on the training job's validation split)."
        )
    if not gradcam:
        notes.append("Run with --no_gradcam: no heatmaps, so no Grad-CAM gallery.")
    elif summary.get("heatmap_format") == NO_HEATMAP_FILES:
        notes.append("Run with --heatmap_format none: no overlay files, so no Grad-CAM gallery.")
    failed = int(summary.get("failed", 0))
    if errors is not None and failed > len(errors):
        notes.append(f"The error table shows {len(errors)} of {failed} errors; see errors.csv.")
    return notes


def _extra_sections(
    summary: Mapping[str, Any],
    metrics: Mapping[str, Any] | None,
    review_data: Mapping[str, Any],
    threshold: float,
) -> dict[str, list[Section]]:
    """The scoring report's own sections, by where they go: "Needs review" opens the page."""
    sections = {"top": [review_section(review_data, threshold)]}
    members = members_section(summary)
    if members is not None:
        sections["run"] = [members]
    quality = quality_section(summary.get("quality_control"), metrics)
    if quality is not None:
        sections["headline"] = [quality]
    return sections


def members_section(summary: Mapping[str, Any]) -> Section | None:
    """The ensemble's members and rules (summary.json's `members`); None for one model."""
    members = summary.get("members") or []
    if len(members) < 2:
        return None
    return Section(
        "members",
        "Ensemble",
        {
            "model_id": summary.get("model_id"),
            "count": len(members),
            "threshold": format_metric(summary.get("threshold")),
            "threshold_rule": summary.get("threshold_rule"),
            "heatmap_units": summary.get("heatmap_units"),
            "members": [
                {
                    "model_id": member["model_id"],
                    "model_dir": member["model_dir"],
                    "given_as": member["given_as"],
                    "threshold": format_metric(member["threshold"]),
                    "eval_tta": member["eval_tta"],
                    "temperature": format_metric(member["temperature"]),
                    "heatmap_scale": format_metric(member["heatmap_scale"]),
                }
                for member in members
            ],
        },
    )


def _summary_rows(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary.json fields worth a line on the page."""
    keys = (
        "run_id",
        "inputs_matched",
        "already_scored",
        "scored",
        "failed",
        "labelled_images",
        "non_image_files_skipped",
        "output_files_excluded",
        "model_id",
        "threshold_source",
        "scoring_thresholds",
        "tta",
        "heatmap_scale",
        "heatmap_format",
        "empty_heatmaps",
        "runner",
        "direct_num_workers",
        "wall_time_seconds",
        "finished_at",
    )
    rows = {key: summary[key] for key in keys if key in summary}
    if "source_runs" in summary:
        rows["scoring_runs"] = [run["run_dir"] for run in summary["source_runs"]]
    for name, count in summary.get("predictions_per_class", {}).items():
        rows[f"predicted_{name}"] = count
    return rows
