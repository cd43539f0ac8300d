"""The self-contained static `report.html` of a scoring run or a training export.

Rendered from the Jinja2 templates in `model/reports/templates` (autoescaped: file names come from
users; StrictUndefined: a value a template needs and does not get fails the render). `base.html` is
the layout both reports share (head, style, title, navigation, notes, footer); `report.html` places
the sections; each section is `sections/<name>.html`, fed one `Section` whose data
`model.reports.sections` prepares. The page has inline CSS and no scripts, and every `src`/`href`
is a relative path inside the output directory, so the folder can be copied or opened offline.
This module also picks the gallery's rows (`select_gallery`).

Adding a section takes a template and its data: write `templates/sections/<name>.html` (wrap it in
`<section id="{{ section.name }}">`, read only `section.data`, use macros.html for metric cells
and labels), then either build its `Section` in `model.reports.sections` and list it in
render_report's `standard` dict (a section both reports show), or have the one caller that shows
it pass `extra_sections={"<place>": [Section(...)]}` to render_report.
"""

from __future__ import annotations

import collections
import functools
import heapq
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jinja2

from model import storage
from model.evaluation.labels import BENIGN, MALIGNANT
from model.reports.sections import (
    GALLERY_CATEGORIES,
    GalleryItem,
    Section,
    errors_section,
    format_metric,
    gallery_section,
    headline_section,
    is_known_label,
    magnification_section,
    patients_section,
    plots_section,
    run_section,
)

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
TOP = "top"  # where render_report's extra_sections go before every other section


@functools.cache
def template_environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates: autoescaped, strict about missing values."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("model.reports", "templates"),
        # Every template, whatever its extension, escapes what it is given.
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def is_misclassified(row: Mapping[str, Any]) -> bool:
    """Whether a prediction row has a known true label that differs from its predicted label."""
    true_label = row.get("true_label")
    return is_known_label(true_label) and str(true_label) != str(row["predicted_label"])


def _wrong_confidence(row: Mapping[str, Any]) -> float:
    """Confidence of the call itself, threshold-free: p for malignant calls, 1 - p for benign."""
    p = float(row["p_malignant"])
    if row["predicted_label"] == MALIGNANT:
        return p
    if row["predicted_label"] == BENIGN:
        return 1.0 - p
    return max(p, 1.0 - p)


def select_gallery(
    rows: Iterable[Mapping[str, Any]], per_category: int = 12, max_misclassified: int = 48
) -> dict[str, list[Mapping[str, Any]]]:
    """Pick the gallery rows: most confident malignant and benign calls, and misclassifications.

    A misclassification (known true label != predicted label) is shown once, in its own section:
    the confident_* lists hold only correct or unlabelled calls. Misclassifications are ordered
    most confidently wrong first (p for malignant calls, 1 - p for benign ones). Ties are broken by
    image_path, and memory stays bounded by the caps however many rows stream in.
    """
    if per_category < 0 or max_misclassified < 0:
        raise ValueError("gallery caps must be >= 0")
    keys: dict[str, Callable[[Mapping[str, Any]], Any]] = {
        "confident_malignant": lambda r: (-float(r["p_malignant"]), str(r["image_path"])),
        "confident_benign": lambda r: (float(r["p_malignant"]), str(r["image_path"])),
        "misclassified": lambda r: (-_wrong_confidence(r), str(r["image_path"])),
    }
    caps = {
        "confident_malignant": per_category,
        "confident_benign": per_category,
        "misclassified": max_misclassified,
    }
    pools: dict[str, list[Mapping[str, Any]]] = {name: [] for name in GALLERY_CATEGORIES}
    for row in rows:
        p = row.get("p_malignant")
        if p is None or p == "" or math.isnan(float(p)):
            logger.warning("gallery skips %s: no score", row.get("image_path"))
            continue
        if is_misclassified(row):
            category = "misclassified"
        elif row["predicted_label"] == MALIGNANT:
            category = "confident_malignant"
        elif row["predicted_label"] == BENIGN:
            category = "confident_benign"
        else:
            continue
        pool = pools[category]
        pool.append(row)
        # Prune now and then so a run of millions of rows keeps only a few candidates.
        if len(pool) > 4 * caps[category] + 64:
            pools[category] = heapq.nsmallest(caps[category], pool, key=keys[category])
    return {
        name: heapq.nsmallest(caps[name], pools[name], key=keys[name])
        for name in GALLERY_CATEGORIES
    }


def _placed(
    standard: Mapping[str, Section | None], extra: Mapping[str, Sequence[Section]]
) -> list[Section]:
    """The standard sections that are shown, in order, with each extra one after its place."""
    places = (TOP, *standard)
    unknown = sorted(set(extra) - set(places))
    if unknown:
        raise ValueError(f"extra sections go after one of {places}, not {unknown}")
    sections = list(extra.get(TOP, ()))
    for name, shown in standard.items():
        sections += ([shown] if shown is not None else []) + list(extra.get(name, ()))
    repeated = sorted(
        name for name, n in collections.Counter(s.name for s in sections).items() if n > 1
    )
    if repeated:
        raise ValueError(f"a report has one section of each name; repeated: {repeated}")
    return sections


def render_report(
    *,
    title: str,
    metrics: Mapping[str, Any] | None,
    plots: Mapping[str, str],
    gallery: Sequence[GalleryItem],
    patients: Sequence[Mapping[str, Any]] = (),
    errors: Sequence[Mapping[str, Any]] | None = (),
    summary: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    error_cap: int = 200,
    patient_cap: int = 500,
    gallery_totals: Mapping[str, int] | None = None,
    full_lists: Mapping[str, str] | None = None,
    extra_sections: Mapping[str, Sequence[Section]] | None = None,
    heatmap_scale: float | None = None,
) -> str:
    """The whole report.html document; metrics None means no input had ground truth.

    `plots` maps a caption to a relative href; hrefs are plain (not URL-encoded) relative paths
    inside the output dir, and anything else raises ValueError. `gallery_totals` (optional, per
    category) lets the page say how many items select_gallery's caps left out. `full_lists` names
    the files beside the report that list everything a capped table leaves out, by kind
    ("images", "patients", "errors"); a kind without a file is only said to be capped.
    `extra_sections` adds sections a caller prepares, keyed by where they go: "top", or the name
    of the standard section they follow ("run", "headline", "plots", "magnification", "patients",
    "gallery", "errors"), where they go even when that one is not shown. `heatmap_scale` is the
    model card's shared Grad-CAM scale the overlays were drawn on (None: each on its own peak).
    `errors` None: no error table (a report whose inputs carry no errors).
    """
    full_lists = full_lists or {}
    # Every section both reports can have, in page order; None where it is not shown.
    standard = {
        "run": run_section(summary),
        "headline": headline_section(metrics),
        "plots": plots_section(plots),
        "magnification": magnification_section(metrics),
        "patients": patients_section(patients, patient_cap, full_lists.get("patients")),
        "gallery": gallery_section(
            gallery, gallery_totals, metrics is not None, full_lists.get("images"), heatmap_scale
        ),
        "errors": (
            None if errors is None else errors_section(errors, error_cap, full_lists.get("errors"))
        ),
    }
    sections = _placed(standard, extra_sections or {})
    threshold = (metrics or {}).get("threshold", (summary or {}).get("threshold"))
    return render_page(title=title, sections=sections, notes=notes, threshold=threshold)


def render_page(
    *, title: str, sections: Sequence[Section], notes: Sequence[str], threshold: float | None
) -> str:
    """A report.html document of sections in the given order, in the shared layout (a report
    that composes its own sections, as cross-validation's does); threshold None: the footer
    names none."""
    page = template_environment().get_template("report.html")
    return page.render(
        title=title,
        nav=[(section.name, section.nav) for section in sections],
        notes=list(notes),
        sections=list(sections),
        threshold=None if threshold is None else format_metric(threshold),
    )


def write_report(output_dir: str, html: str) -> str:
    """Write report.html into output_dir (local or gs://) and return its path."""
    path = storage.join(output_dir, REPORT_FILE)
    storage.write_text(path, html)
    logger.info("wrote %s", path)
    return path
