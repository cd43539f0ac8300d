"""The self-contained static `report.html` of a scoring run or a training export.

One HTML file with inline CSS and no scripts; every `src`/`href` is a relative path inside the
output directory, so the folder can be copied or opened offline. All text is escaped (file
names come from users). Every metric is shown with 4 decimals (`format_metric`), and each metric
cell carries `data-metric="<dotted path into metrics.json>"` so a test can compare the page with
the file it was made from.
"""

from __future__ import annotations

import dataclasses
import heapq
import html
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from model import storage
from model.constants import CLASS_NAMES
from model.naming import basename

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
GALLERY_CATEGORIES: tuple[str, ...] = ("confident_malignant", "confident_benign", "misclassified")
_BENIGN, _MALIGNANT = CLASS_NAMES

# (label, key in a metrics section, meaning) of the headline rows, image level unless noted.
_HEADLINE: tuple[tuple[str, str, str, str], ...] = (
    ("Accuracy", "image_level", "accuracy", "share of images called correctly"),
    (
        "Balanced accuracy",
        "image_level",
        "balanced_accuracy",
        "mean of sensitivity and specificity; 0.5 is chance whatever the class mix",
    ),
    ("Sensitivity", "image_level", "sensitivity", "share of malignant images called malignant"),
    ("Specificity", "image_level", "specificity", "share of benign images called benign"),
    ("ROC AUC", "image_level", "roc_auc", "ranking quality over all thresholds; 0.5 is chance"),
    ("PR AUC", "image_level", "pr_auc", "average precision for malignant; chance is prevalence"),
    (
        "Patient recognition rate",
        "image_level",
        "patient_recognition_rate",
        "mean over patients of the share of their images called correctly (BreakHis)",
    ),
    (
        "Patient-level accuracy",
        "patient_level",
        "accuracy",
        "each patient called by the mean p(malignant) of their images",
    ),
)
_MAGNIFICATION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Accuracy", "image_level", "accuracy"),
    ("Balanced acc.", "image_level", "balanced_accuracy"),
    ("Sensitivity", "image_level", "sensitivity"),
    ("Specificity", "image_level", "specificity"),
    ("ROC AUC", "image_level", "roc_auc"),
    ("PR AUC", "image_level", "pr_auc"),
    ("Patient recog. rate", "image_level", "patient_recognition_rate"),
    ("Patient-level acc.", "patient_level", "accuracy"),
    ("Baseline acc.", "baseline.image_level", "accuracy"),
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f7f9;color:#1d2330;font:15px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 40px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:34px 0 10px;padding-bottom:4px;
border-bottom:2px solid #e3e6eb}h3{font-size:16px;margin:22px 0 6px}
p{margin:6px 0}.muted{color:#5b6475}.small{font-size:13px}
nav{margin:10px 0 4px;font-size:14px}nav a{margin-right:14px;color:#2457a6;text-decoration:none}
.notes{background:#fff7e0;border-left:4px solid #e0a800;padding:8px 14px;margin:14px 0}
.notice{background:#eef3fb;border-left:4px solid #2457a6;padding:8px 14px;margin:10px 0}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{padding:5px 10px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}tbody tr:nth-child(even){background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.compact th,table.compact td{padding:5px 7px}table.compact th.num{white-space:normal}
table.headline td.num{font-size:16px;font-weight:600}
table.headline td.model{color:#0d3f8f}
tr.wrong td{background:#fdeeee}
.wrap{overflow-x:auto}
.break{word-break:break-all}
.plots{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.plots figure{margin:0;max-width:100%}.plots img{max-width:100%;max-height:380px;width:auto;
height:auto;display:block;border:1px solid #e3e6eb}
figcaption{font-size:13px;color:#5b6475;margin-top:4px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:14px}
.card{margin:0;border:1px solid #d9dde4;border-radius:6px;padding:8px;background:#fff}
.card.misclassified{border:2px solid #c62828;background:#fff6f6}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:6px}
.pair img{width:100%;height:auto;display:block;background:#eee}
.pair span{display:block;font-size:11px;color:#5b6475;text-align:center}
.card .name{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.tag{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;font-weight:600}
.tag.malignant{background:#fbe3e3;color:#9b1c1c}.tag.benign{background:#e2f3e5;color:#1b6b2c}
.tag.unknown{background:#eceff3;color:#5b6475}
footer{margin-top:36px;padding-top:10px;border-top:1px solid #e3e6eb;font-size:13px;color:#5b6475}
"""


@dataclasses.dataclass(frozen=True)
class GalleryItem:
    """One Grad-CAM gallery entry; hrefs are plain relative paths inside the output directory."""

    image_path: str  # the source image's path or name, for the caption
    original_href: str  # e.g. "gallery/originals/SOB_B_A-14-22549AB-40-001.png"
    overlay_href: str  # e.g. "overlays/SOB_B_A-14-22549AB-40-001.png"
    p_malignant: float
    predicted_label: str
    true_label: str | None
    category: str  # one of GALLERY_CATEGORIES


def format_metric(value: Any) -> str:
    """How the page shows a number: floats with 4 decimals, ints as is, None/NaN as "n/a"."""
    if value is None or isinstance(value, bool):
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _known(label: Any) -> bool:
    return label is not None and str(label) != ""


def is_misclassified(row: Mapping[str, Any]) -> bool:
    """Whether a prediction row has a known true label that differs from its predicted label."""
    return _known(row.get("true_label")) and str(row["true_label"]) != str(row["predicted_label"])


def _wrong_confidence(row: Mapping[str, Any]) -> float:
    """Confidence of the call itself, threshold-free: p for malignant calls, 1 - p for benign."""
    p = float(row["p_malignant"])
    if row["predicted_label"] == _MALIGNANT:
        return p
    if row["predicted_label"] == _BENIGN:
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
        elif row["predicted_label"] == _MALIGNANT:
            category = "confident_malignant"
        elif row["predicted_label"] == _BENIGN:
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


def check_relative_href(href: str) -> str:
    """The href percent-encoded for HTML; ValueError unless it is a relative path inside the dir."""
    if not href or "\\" in href or href.startswith("/") or _SCHEME.match(href):
        raise ValueError(f"report links must be relative paths inside the output dir: {href!r}")
    if ".." in href.split("/"):
        raise ValueError(f"report links must not leave the output dir: {href!r}")
    return quote(href, safe="/")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _lookup(metrics: Mapping[str, Any], dotted: str) -> Any:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _metric_cell(metrics: Mapping[str, Any], dotted: str, css: str = "num") -> str:
    shown = _e(format_metric(_lookup(metrics, dotted)))
    return f'<td class="{css}" data-metric="{_e(dotted)}">{shown}</td>'


def _table(
    headers: Sequence[str], rows: Sequence[str], numeric: Sequence[bool], css: str = ""
) -> str:
    head = "".join(
        f'<th class="num">{_e(h)}</th>' if num else f"<th>{_e(h)}</th>"
        for h, num in zip(headers, numeric, strict=True)
    )
    return (
        f'<div class="wrap"><table class="{css}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _more_line(hidden: int, what: str, file_name: str | None) -> str:
    if hidden <= 0:
        return ""
    where = f", see {_e(file_name)}" if file_name else ""
    return f'<p class="muted">… and {hidden} more {_e(what)}{where}.</p>'


def _label_tag(label: Any) -> str:
    if not _known(label):
        return '<span class="tag unknown">unknown</span>'
    css = label if label in CLASS_NAMES else "unknown"
    return f'<span class="tag {css}">{_e(label)}</span>'


def _summary_value(key: str, value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_summary_value(str(k), v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_summary_value(key, v) for v in value)
    if key.endswith("seconds") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.1f} s"
    return format_metric(value)


def _summary_section(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return ""
    rows = [
        f"<tr><th>{_e(str(k).replace('_', ' ').capitalize())}</th>"
        f'<td class="break">{_e(_summary_value(str(k), v))}</td></tr>'
        for k, v in summary.items()
    ]
    return f'<section id="run"><h2>Run</h2><table>{"".join(rows)}</table></section>'


def _headline_section(metrics: Mapping[str, Any] | None) -> str:
    if metrics is None:
        return (
            '<section id="headline"><h2>Headline metrics</h2><p class="notice">No scored image '
            "had a known true label (ground truth), so no metrics are computed. The predictions "
            "and the Grad-CAM gallery below are still valid.</p></section>"
        )
    pooled = _lookup(metrics, "image_level.pooled") or {}
    predicts = _lookup(metrics, "baseline.image_level.pooled.predicts")
    rows = []
    for label, section, key, meaning in _HEADLINE:
        rows.append(
            f"<tr><th>{_e(label)}</th>"
            + _metric_cell(metrics, f"{section}.pooled.{key}", "num model")
            + _metric_cell(metrics, f"baseline.{section}.pooled.{key}")
            + f'<td class="muted small">{_e(meaning)}</td></tr>'
        )
    counts = (
        f"{format_metric(pooled.get('n'))} images ({format_metric(pooled.get('n_benign'))} "
        f"benign, {format_metric(pooled.get('n_malignant'))} malignant) from "
        f"{format_metric(_lookup(metrics, 'counts.patients'))} patients; malignant is the "
        f"positive class; threshold {format_metric(metrics.get('threshold'))}."
    )
    matrix = pooled.get("confusion_matrix")
    if matrix:
        (tn, fp), (fn, tp) = matrix
        counts += (
            f" Image-level confusion: {tn} benign called benign, {fp} benign called malignant, "
            f"{fn} malignant called benign, {tp} malignant called malignant."
        )
    baseline = "Majority baseline" + (f" (always “{predicts}”)" if predicts else "")
    return (
        '<section id="headline"><h2>Headline metrics</h2>'
        f'<p class="muted">{_e(counts)}</p>'
        '<table class="headline"><thead><tr><th>Metric</th><th class="num">Model</th>'
        f'<th class="num">{_e(baseline)}</th><th>Meaning</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _plots_section(plots: Mapping[str, str]) -> str:
    if not plots:
        return ""
    figures = [
        f'<figure><a href="{_e(check_relative_href(href))}"><img src="'
        f'{_e(check_relative_href(href))}" alt="{_e(caption)}"></a>'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
        for caption, href in plots.items()
    ]
    return (
        f'<section id="plots"><h2>Plots</h2><div class="plots">{"".join(figures)}</div></section>'
    )


def _magnification_section(metrics: Mapping[str, Any] | None) -> str:
    if metrics is None:
        return ""
    groups = ["pooled"] + [
        f"by_magnification.{key}"
        for key in (_lookup(metrics, "image_level.by_magnification") or {})
        # A key holding a "." could not be addressed by a dotted data-metric path.
        if "." not in key
    ]
    rows = []
    for group in groups:
        name = "All (pooled)" if group == "pooled" else group.split(".", 1)[1]
        counts = "counts" if group == "pooled" else f"counts.{group}"
        cells = [
            _metric_cell(metrics, f"image_level.{group}.n"),
            _metric_cell(metrics, f"{counts}.patients"),
            *(
                _metric_cell(metrics, f"{section}.{group}.{key}")
                for _, section, key in (_MAGNIFICATION_COLUMNS)
            ),
        ]
        rows.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}</tr>")
    headers = ["Magnification", "Images", "Patients", *(c[0] for c in _MAGNIFICATION_COLUMNS)]
    numeric = [False, *([True] * (len(headers) - 1))]
    return (
        '<section id="magnification"><h2>By magnification</h2>'
        '<p class="muted small">Image-level metrics, the BreakHis patient recognition rate, '
        "patient-level accuracy (patients called by their mean p) and the majority baseline's "
        "image-level accuracy, for each magnification.</p>"
        f"{_table(headers, rows, numeric, 'compact')}</section>"
    )


def _patients_section(
    patients: Sequence[Mapping[str, Any]], cap: int, full_list: str | None
) -> str:
    if not patients:
        return ""
    ordered = sorted(patients, key=lambda r: str(r.get("patient_id", "")))
    rows = []
    for row in ordered[:cap]:
        images, correct = row.get("images"), row.get("correct")
        accuracy = row.get("accuracy")
        if accuracy is None and images:
            accuracy = float(correct) / float(images)
        wrong = _known(row.get("true_label")) and row.get("majority_prediction") != row.get(
            "true_label"
        )
        row_class = ' class="wrong"' if wrong else ""
        rows.append(
            f'<tr{row_class}><td class="break">'
            f"{_e(row.get('patient_id'))}</td><td>{_label_tag(row.get('true_label'))}</td>"
            f'<td class="num">{_e(format_metric(images))}</td>'
            f'<td class="num">{_e(format_metric(correct))}</td>'
            f'<td class="num">{_e(format_metric(accuracy))}</td>'
            f'<td class="num">{_e(format_metric(row.get("mean_p_malignant")))}</td>'
            f"<td>{_label_tag(row.get('majority_prediction'))}</td></tr>"
        )
    headers = ["Patient (slide)", "True", "Images", "Correct", "Accuracy", "Mean p(mal.)", "Call"]
    numeric = [False, False, True, True, True, True, False]
    return (
        f'<section id="patients"><h2>Patients ({len(ordered)})</h2>'
        '<p class="muted small">“Call” is the majority of the patient’s image calls; rows where '
        "it differs from the true label are highlighted.</p>"
        f"{_table(headers, rows, numeric)}"
        f"{_more_line(len(ordered) - cap, 'patients', full_list)}</section>"
    )


def _gallery_card(item: GalleryItem) -> str:
    name = basename(item.image_path)
    original = _e(check_relative_href(item.original_href))
    overlay = _e(check_relative_href(item.overlay_href))
    css = "card misclassified" if item.category == "misclassified" else "card"
    return (
        f'<figure class="{css}"><div class="pair">'
        f'<a href="{original}"><img src="{original}" alt="original {_e(name)}"></a>'
        f'<a href="{overlay}"><img src="{overlay}" alt="Grad-CAM overlay {_e(name)}"></a>'
        "<span>original</span><span>Grad-CAM</span></div>"
        f'<figcaption><div class="name" title="{_e(item.image_path)}">{_e(name)}</div>'
        f"<div>p(malignant) <b>{_e(format_metric(float(item.p_malignant)))}</b></div>"
        f"<div>called {_label_tag(item.predicted_label)} · true {_label_tag(item.true_label)}"
        "</div></figcaption></figure>"
    )


_GALLERY_TEXT = {
    "confident_malignant": (
        "Most confident malignant calls",
        "Highest p(malignant) among images called malignant (correct or unlabelled).",
    ),
    "confident_benign": (
        "Most confident benign calls",
        "Lowest p(malignant) among images called benign (correct or unlabelled).",
    ),
    "misclassified": (
        "Misclassifications",
        "Images whose known label differs from the call, most confidently wrong first.",
    ),
}


def _gallery_section(
    gallery: Sequence[GalleryItem],
    totals: Mapping[str, int] | None,
    has_ground_truth: bool,
    images_list: str | None,
) -> str:
    unknown = {item.category for item in gallery} - set(GALLERY_CATEGORIES)
    if unknown:
        raise ValueError(f"unknown gallery categories {sorted(unknown)}; use {GALLERY_CATEGORIES}")
    parts = [
        '<section id="gallery"><h2>Grad-CAM gallery</h2><p class="muted small">Each pair shows '
        "the image and its Grad-CAM heatmap for the call made (red: regions that pushed the "
        "model towards that call most). Click an image for full size.</p>"
    ]
    for category in GALLERY_CATEGORIES:
        heading, blurb = _GALLERY_TEXT[category]
        items = [item for item in gallery if item.category == category]
        total = (totals or {}).get(category, len(items))
        shown = f"{len(items)} of {total}" if total > len(items) else f"{len(items)}"
        parts.append(f"<h3>{_e(heading)} ({shown})</h3><p class='muted small'>{_e(blurb)}")
        if total > len(items):
            where = f"; every image is listed in {images_list}" if images_list else ""
            parts.append(f" Capped for size{_e(where)}.")
        parts.append("</p>")
        if items:
            parts.append(f'<div class="gallery">{"".join(map(_gallery_card, items))}</div>')
        elif category == "misclassified" and not has_ground_truth:
            parts.append(
                "<p>No image has a known true label, so misclassifications are unknown.</p>"
            )
        elif category == "misclassified":
            parts.append("<p>None: every labelled image was called correctly.</p>")
        else:
            parts.append("<p>None.</p>")
    parts.append("</section>")
    return "".join(parts)


def _errors_section(errors: Sequence[Mapping[str, Any]], cap: int, full_list: str | None) -> str:
    if not errors:
        return (
            '<section id="errors"><h2>Errors (0)</h2><p>Every matched input was scored.</p>'
            "</section>"
        )
    ordered = sorted(errors, key=lambda r: (str(r.get("image_path")), str(r.get("error_type"))))
    rows = [
        f'<tr><td class="break">{_e(row.get("image_path", ""))}</td>'
        f"<td>{_e(row.get('error_type', ''))}</td>"
        f'<td class="break">{_e(row.get("message", ""))}</td></tr>'
        for row in ordered[:cap]
    ]
    return (
        f'<section id="errors"><h2>Errors ({len(ordered)})</h2>'
        '<p class="muted small">Inputs that could not be scored, and why.</p>'
        f"{_table(['Image', 'Error', 'Reason'], rows, [False, False, False])}"
        f"{_more_line(len(ordered) - cap, 'errors', full_list)}</section>"
    )


def _footer(metrics: Mapping[str, Any] | None, summary: Mapping[str, Any] | None) -> str:
    threshold = (metrics or {}).get("threshold", (summary or {}).get("threshold"))
    call = (
        f"An image is called malignant when p(malignant) ≥ {format_metric(threshold)}. "
        if threshold is not None
        else ""
    )
    return (
        f"<footer><p>{_e(call)}A “patient” is a BreakHis slide id (e.g. 14-22549AB in "
        "SOB_B_A-14-22549AB-40-001.png), the dataset’s patient. Training, validation and test "
        "splits are specimen-disjoint: every section of a specimen (slide ids differing only by "
        "letter suffix) lies on one side. Numbers are shown with 4 decimals; n/a means undefined "
        "(e.g. an AUC with one class only) or not computed (the baseline's patient recognition "
        "rate).</p></footer>"
    )


def render_report(
    *,
    title: str,
    metrics: Mapping[str, Any] | None,
    plots: Mapping[str, str],
    gallery: Sequence[GalleryItem],
    patients: Sequence[Mapping[str, Any]] = (),
    errors: Sequence[Mapping[str, Any]] = (),
    summary: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    error_cap: int = 200,
    patient_cap: int = 500,
    gallery_totals: Mapping[str, int] | None = None,
    full_lists: Mapping[str, str] | None = None,
) -> str:
    """The whole report.html document; metrics None means no input had ground truth.

    `plots` maps a caption to a relative href; hrefs are plain (not URL-encoded) relative paths
    inside the output dir, and anything else raises ValueError. `gallery_totals` (optional, per
    category) lets the page say how many items select_gallery's caps left out. `full_lists` names
    the files beside the report that list everything a capped table leaves out, by kind
    ("images", "patients", "errors"); a kind without a file is only said to be capped.
    """
    full_lists = full_lists or {}
    note_html = "".join(f"<p>{_e(note)}</p>" for note in notes)
    sections = [
        _summary_section(summary),
        _headline_section(metrics),
        _plots_section(plots),
        _magnification_section(metrics),
        _patients_section(patients, patient_cap, full_lists.get("patients")),
        _gallery_section(gallery, gallery_totals, metrics is not None, full_lists.get("images")),
        _errors_section(errors, error_cap, full_lists.get("errors")),
    ]
    nav = [
        ("run", "Run", bool(summary)),
        ("headline", "Headline", True),
        ("plots", "Plots", bool(plots)),
        ("magnification", "By magnification", metrics is not None),
        ("patients", "Patients", bool(patients)),
        ("gallery", "Grad-CAM gallery", True),
        ("errors", "Errors", True),
    ]
    links = "".join(f'<a href="#{anchor}">{_e(text)}</a>' for anchor, text, shown in nav if shown)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f'<h1>{_e(title)}</h1><p class="muted">Breast histopathology (BreakHis), benign vs '
        "malignant, VGG16 with Grad-CAM.</p>"
        f"<nav>{links}</nav>"
        + (f'<div class="notes">{note_html}</div>' if notes else "")
        + "".join(sections)
        + _footer(metrics, summary)
        + "</main></body></html>\n"
    )


def write_report(output_dir: str, html: str) -> str:
    """Write report.html into output_dir (local or gs://) and return its path."""
    path = storage.join(output_dir, REPORT_FILE)
    storage.write_text(path, html)
    logger.info("wrote %s", path)
    return path
