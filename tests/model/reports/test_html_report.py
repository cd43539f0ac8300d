"""Tests for model.reports.html_report: gallery selection, the page, and the page in Chromium."""

from __future__ import annotations

import ast
import html.parser
import json
import os
import pathlib
import random
import re

import jinja2
import numpy as np
import pytest
from PIL import Image

from model.evaluation.evaluate import evaluate
from model.reports import html_report
from model.reports.html_report import (
    GalleryItem,
    Section,
    render_report,
    select_gallery,
    write_report,
)
from tests import browser
from tests.conftest import REPO_ROOT

HEADLINE_KEYS = (
    "image_level.pooled.accuracy",
    "image_level.pooled.balanced_accuracy",
    "image_level.pooled.sensitivity",
    "image_level.pooled.specificity",
    "image_level.pooled.roc_auc",
    "image_level.pooled.pr_auc",
    "image_level.pooled.patient_recognition_rate",
    "patient_level.pooled.accuracy",
)


def _row(path: str, p: float, true_label: str | None, threshold: float = 0.5) -> dict:
    return {
        "image_path": path,
        "p_malignant": p,
        "predicted_label": "malignant" if p >= threshold else "benign",
        "true_label": true_label,
    }


def _paths(rows) -> list[str]:
    return [row["image_path"] for row in rows]


# --- select_gallery ------------------------------------------------------------------------


def test_select_gallery_takes_most_confident_correct_calls_of_each_class_up_to_the_cap():
    rows = [
        _row("m1.png", 0.97, "malignant"),
        _row("m2.png", 0.99, "malignant"),
        _row("m3.png", 0.60, "malignant"),
        _row("b1.png", 0.10, "benign"),
        _row("b2.png", 0.01, "benign"),
        _row("b3.png", 0.45, "benign"),
    ]
    chosen = select_gallery(rows, per_category=2)
    assert _paths(chosen["confident_malignant"]) == ["m2.png", "m1.png"]
    assert _paths(chosen["confident_benign"]) == ["b2.png", "b1.png"]
    assert chosen["misclassified"] == []


def test_select_gallery_shows_misclassifications_once_most_confidently_wrong_first():
    rows = [
        _row("fp_weak.png", 0.55, "benign"),  # called malignant, confidence 0.55
        _row("fn_strong.png", 0.02, "malignant"),  # called benign, confidence 0.98
        _row("fp_strong.png", 0.95, "benign"),  # called malignant, confidence 0.95
        _row("fn_weak.png", 0.40, "malignant"),  # called benign, confidence 0.60
        _row("right.png", 0.99, "malignant"),
    ]
    chosen = select_gallery(rows, per_category=5, max_misclassified=3)
    assert _paths(chosen["misclassified"]) == ["fn_strong.png", "fp_strong.png", "fn_weak.png"]
    # The most confident malignant call overall is a misclassification; it is not repeated.
    assert _paths(chosen["confident_malignant"]) == ["right.png"]
    assert chosen["confident_benign"] == []


@pytest.mark.parametrize("unknown", ["", None])
def test_select_gallery_never_counts_an_unknown_true_label_as_misclassified(unknown):
    rows = [_row("u_mal.png", 0.9, unknown), _row("u_ben.png", 0.1, unknown)]
    chosen = select_gallery(rows)
    assert chosen["misclassified"] == []
    assert _paths(chosen["confident_malignant"]) == ["u_mal.png"]
    assert _paths(chosen["confident_benign"]) == ["u_ben.png"]


def test_select_gallery_breaks_ties_by_image_path_whatever_the_input_order():
    rows = [_row(f"img_{name}.png", 0.8, "malignant") for name in "dcab"]
    rows += [_row(f"wrong_{name}.png", 0.1, "malignant") for name in "zyx"]
    expected = None
    for seed in range(5):
        random.Random(seed).shuffle(rows)
        chosen = select_gallery(rows, per_category=3, max_misclassified=2)
        assert _paths(chosen["confident_malignant"]) == ["img_a.png", "img_b.png", "img_c.png"]
        assert _paths(chosen["misclassified"]) == ["wrong_x.png", "wrong_y.png"]
        expected = expected or chosen
        assert chosen == expected


def test_select_gallery_keeps_the_best_rows_of_a_long_stream():
    rng = random.Random(3)
    labels = ("benign", "malignant", "", None)
    rows = [_row(f"s{i:05d}.png", rng.random(), rng.choice(labels)) for i in range(3000)]
    chosen = select_gallery(iter(rows), per_category=7, max_misclassified=11)

    def wrong(row):
        return row["true_label"] not in ("", None) and row["true_label"] != row["predicted_label"]

    def confidence(row):
        p = row["p_malignant"]
        return p if row["predicted_label"] == "malignant" else 1 - p

    right = [r for r in rows if not wrong(r)]
    malignant = sorted(
        (r for r in right if r["predicted_label"] == "malignant"),
        key=lambda r: (-r["p_malignant"], r["image_path"]),
    )
    benign = sorted(
        (r for r in right if r["predicted_label"] == "benign"),
        key=lambda r: (r["p_malignant"], r["image_path"]),
    )
    misclassified = sorted(
        (r for r in rows if wrong(r)), key=lambda r: (-confidence(r), r["image_path"])
    )
    assert chosen["confident_malignant"] == malignant[:7]
    assert chosen["confident_benign"] == benign[:7]
    assert chosen["misclassified"] == misclassified[:11]


def test_select_gallery_rejects_negative_caps():
    with pytest.raises(ValueError, match="caps"):
        select_gallery([], per_category=-1)


# --- render_report -------------------------------------------------------------------------


class _Page(html.parser.HTMLParser):
    """Collects tags, every src/href, the data-metric cells and the visible text of a page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.links: list[str] = []
        self.metric_cells: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._metric: str | None = None
        self._metric_text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        self.links += [value for name, value in attrs if name in ("src", "href")]
        if "data-metric" in attributes:
            self._metric, self._metric_text = attributes["data-metric"], []

    def handle_endtag(self, tag):
        if tag == "td" and self._metric is not None:
            self.metric_cells.append((self._metric, "".join(self._metric_text).strip()))
            self._metric = None

    def handle_data(self, data):
        self.text.append(data)
        if self._metric is not None:
            self._metric_text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def _lookup(metrics, dotted):
    value = metrics
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _shown(value) -> str:
    """The documented display rule: round to 4 decimals; ints as is; None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{round(value, 4):.4f}"


def _records() -> list[dict]:
    """Made-up scores: 3 patients per class at 40X and 100X, plus a benign-only 400X."""
    rng = random.Random(11)
    records = []
    for patient in range(6):
        label = patient % 2
        for magnification in ("40X", "100X"):
            for _ in range(4):
                p = min(max(rng.gauss(0.7 if label else 0.3, 0.25), 0.0), 1.0)
                records.append(
                    {
                        "label": label,
                        "p_malignant": p,
                        "patient_id": f"14-{1000 + patient}AB",
                        "magnification": magnification,
                    }
                )
    records += [
        {"label": 0, "p_malignant": 0.2, "patient_id": "14-1000AB", "magnification": "400X"},
        {"label": 0, "p_malignant": 0.7, "patient_id": "14-1002AB", "magnification": "400X"},
    ]
    return records


def _metrics() -> dict:
    # Through JSON, as the jobs write and read metrics.json.
    return json.loads(json.dumps(evaluate(_records(), threshold=0.5)))


def _item(name: str, category: str, p: float = 0.9, true: str | None = "malignant") -> GalleryItem:
    return GalleryItem(
        image_path=f"gs://bucket/in/{name}",
        original_href=f"gallery/{name}",
        overlay_href=f"heatmaps/{name}",
        p_malignant=p,
        predicted_label="malignant" if p >= 0.5 else "benign",
        true_label=true,
        category=category,
    )


def test_report_escapes_hostile_file_names_and_text():
    hostile = '<script>alert("x")</script>.png'
    page_text = render_report(
        title="Run <b>1</b>",
        metrics=_metrics(),
        plots={"ROC <i>": "plots/roc.png"},
        gallery=[_item(hostile, "misclassified", 0.9, "benign")],
        patients=[
            {
                "patient_id": "<img src=x onerror=alert(1)>",
                "true_label": "benign",
                "images": 2,
                "correct": 1,
                "mean_p_malignant": 0.4,
                "majority_prediction": "benign",
            }
        ],
        errors=[{"image_path": hostile, "error_type": "<b>Decode</b>", "message": "bad & <worse>"}],
        summary={"runner": "<script>"},
        notes=["note <u>with</u> & markup"],
    )
    page = _Page(page_text)
    assert "script" not in page.tags
    assert set(page.tags) <= {
        *("html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p", "nav"),
        *("a", "div", "section", "table", "thead", "tbody", "tr", "th", "td", "figure", "img"),
        *("figcaption", "span", "b", "footer"),
    }
    assert "<script>" not in page_text
    # Jinja2's autoescape (markupsafe) writes a double quote as &#34;, equally safe in attributes.
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;.png" in page_text
    assert "bad &amp; &lt;worse&gt;" in page_text
    # The hostile names are still shown to the reader, as text.
    assert hostile in page.visible
    assert "<img src=x onerror=alert(1)>" in page.visible
    assert "Run <b>1</b>" in page.visible
    assert "note <u>with</u> & markup" in page.visible


def test_report_links_are_all_relative_and_percent_encoded():
    page_text = render_report(
        title="t",
        metrics=_metrics(),
        plots={"ROC": "plots/roc.png", "Precision-recall": "plots/pr.png"},
        gallery=[_item("odd name #1?.png", "confident_malignant"), _item("b.png", "misclassified")],
        patients=[],
        errors=[],
    )
    links = _Page(page_text).links
    assert "plots/roc.png" in links
    assert "gallery/odd%20name%20%231%3F.png" in links
    assert "heatmaps/b.png" in links
    for link in links:
        assert not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", link), link
        assert not link.startswith(("/", "\\")), link
        assert ".." not in link.split("/"), link
    # Nor anything the browser would fetch from inline CSS; "//" may appear only in caption text
    # (e.g. a gs:// source path), never in a link.
    assert not re.search(r"https?:|url\(|@import", page_text)


@pytest.mark.parametrize(
    "href",
    [
        "/tmp/roc.png",
        "http://example.org/roc.png",
        "https://example.org/roc.png",
        "//cdn.example.org/roc.png",
        "gs://bucket/roc.png",
        "file:///tmp/roc.png",
        "C:\\plots\\roc.png",
        "../outside/roc.png",
        "",
    ],
)
def test_report_refuses_links_that_are_not_relative_paths_inside_the_output_dir(href):
    with pytest.raises(ValueError, match="report links"):
        render_report(title="t", metrics=None, plots={"ROC": href}, gallery=[])
    item = _item("a.png", "confident_benign", 0.1, "benign")
    bad_item = GalleryItem(**{**item.__dict__, "overlay_href": href})
    with pytest.raises(ValueError, match="report links"):
        render_report(title="t", metrics=None, plots={}, gallery=[bad_item])


def test_report_headline_cells_show_the_metrics_rounded_to_4_decimals():
    metrics = _metrics()
    page = _Page(render_report(title="t", metrics=metrics, plots={}, gallery=[]))
    cells = dict(page.metric_cells)
    for key in HEADLINE_KEYS:
        assert cells[key] == _shown(_lookup(metrics, key)), key
        assert cells[f"baseline.{key}"] == _shown(_lookup(metrics, f"baseline.{key}")), key
    for name, text in page.metric_cells:
        assert text == _shown(_lookup(metrics, name)), name
    # Per magnification, including the benign-only 400X whose AUC is undefined.
    assert cells["image_level.by_magnification.100X.accuracy"] == _shown(
        metrics["image_level"]["by_magnification"]["100X"]["accuracy"]
    )
    assert cells["image_level.by_magnification.400X.roc_auc"] == "n/a"
    assert cells["counts.by_magnification.400X.patients"] == "2"


def test_report_without_ground_truth_says_so_instead_of_metrics():
    page = _Page(
        render_report(
            title="t",
            metrics=None,
            plots={},
            gallery=[_item("a.png", "confident_malignant", 0.9, None)],
        )
    )
    assert page.metric_cells == []
    assert "No scored image had a known true label" in page.visible
    assert "misclassifications are unknown" in page.visible
    assert "By magnification" not in page.visible


def test_report_caps_long_tables_with_an_and_n_more_line():
    patients = [
        {
            "patient_id": f"14-{9000 - i}AB",  # given in reverse: the page sorts by id
            "true_label": "benign",
            "images": 4,
            "correct": 3,
            "mean_p_malignant": 0.3,
            "majority_prediction": "benign",
        }
        for i in range(7)
    ]
    errors = [
        {"image_path": f"bad{i}.png", "error_type": "ImageDecodeError", "message": "truncated"}
        for i in range(3)
    ]
    gallery = [_item(f"w{i}.png", "misclassified", 0.9, "benign") for i in range(2)]
    page_text = render_report(
        title="t",
        metrics=None,
        plots={},
        gallery=gallery,
        patients=patients,
        errors=errors,
        patient_cap=5,
        error_cap=1,
        gallery_totals={"misclassified": 40},
        full_lists={"patients": "patients.csv", "errors": "errors.csv", "images": "all.csv"},
    )
    visible = _Page(page_text).visible
    assert "… and 2 more patients, see patients.csv." in visible
    assert "… and 2 more errors, see errors.csv." in visible
    assert "every image is listed in all.csv" in visible
    shown_ids = re.findall(r"14-(\d{4})AB", visible)
    assert shown_ids == ["8994", "8995", "8996", "8997", "8998"]
    assert "bad0.png" in visible and "bad1.png" not in visible
    assert "Misclassifications (2 of 40)" in visible

    uncapped = _Page(
        render_report(title="t", metrics=None, plots={}, gallery=[], patients=patients[:2])
    ).visible
    assert "more patients" not in uncapped

    # The page names only the files its caller says exist (a training export has no errors.csv).
    unnamed = _Page(
        render_report(
            title="t",
            metrics=None,
            plots={},
            gallery=gallery,
            errors=errors,
            error_cap=1,
            gallery_totals={"misclassified": 40},
        )
    ).visible
    assert "… and 2 more errors." in unnamed
    assert ".csv" not in unnamed


def test_report_shows_summary_notes_and_the_threshold():
    metrics = _metrics()
    visible = _Page(
        render_report(
            title="t",
            metrics=metrics,
            plots={},
            gallery=[],
            summary={"scored": 12, "predictions_per_class": {"benign": 5, "malignant": 7}},
            notes=["Trained without ImageNet weights; not a benchmark."],
        )
    ).visible
    assert "Scored 12" in visible
    assert "benign: 5, malignant: 7" in visible
    assert "Trained without ImageNet weights; not a benchmark." in visible
    assert "p(malignant) ≥ 0.5000" in visible
    assert "specimen-disjoint" in visible


def _gallery_visible(heatmap_scale, **item_fields) -> str:
    item = GalleryItem(**{**_item("a.png", "confident_malignant").__dict__, **item_fields})
    page = render_report(
        title="t", metrics=None, plots={}, gallery=[item], heatmap_scale=heatmap_scale
    )
    return _Page(page).visible


def test_gallery_says_its_maps_show_malignant_evidence_on_the_cards_shared_scale():
    visible = _gallery_visible(0.0123456, heatmap_peak=0.00987654, p_std=0.0412)
    assert "evidence for malignancy, whatever the call" in visible
    assert "raw map value of 0.01235 or more" in visible
    assert "95th percentile of the map peaks on the validation split" in visible
    assert "map peak 0.00988" in visible
    assert "± 0.0412" in visible


def test_gallery_without_a_shared_scale_says_colours_are_not_comparable():
    visible = _gallery_visible(None, heatmap_peak=0.5)
    assert "no heatmap_scale" in visible and "not comparable between images" in visible
    assert "raw map value" not in visible
    assert "±" not in visible  # p_std not given: one view, nothing to show


def test_gallery_colour_key_is_the_overlays_colour_and_opacity():
    from model.image.overlay import HEATMAP_MAX_ALPHA, JET_LUT, overlay_heatmap

    page = render_report(title="t", metrics=None, plots={}, gallery=[], heatmap_scale=1.0)
    stops = re.findall(r"rgba\((\d+),(\d+),(\d+),([\d.]+)\) (\d+)%", page)
    assert [int(stop[4]) for stop in stops] == [0, 25, 50, 75, 100]
    white = np.full((1, 1, 3), 255, np.uint8)
    for red, green, blue, alpha, percent in stops:
        level = int(percent) / 100
        assert (int(red), int(green), int(blue)) == tuple(JET_LUT[round(level * 255)])
        assert float(alpha) == pytest.approx(HEATMAP_MAX_ALPHA * level, abs=1e-3)
        # The key's colour over white is the overlay's colour of white tissue at that level.
        colour = np.array([int(red), int(green), int(blue)], float)
        expected = 255 + float(alpha) * (colour - 255)
        drawn = overlay_heatmap(white, np.full((1, 1), level, np.float32))[0, 0]
        np.testing.assert_allclose(drawn, expected, atol=1.01)


def test_report_rejects_unknown_gallery_categories():
    with pytest.raises(ValueError, match="categor"):
        render_report(title="t", metrics=None, plots={}, gallery=[_item("a.png", "typo")])


def test_write_report_writes_report_html_into_the_output_dir(tmp_path):
    path = write_report(str(tmp_path / "run"), "<!DOCTYPE html><p>é</p>")
    assert pathlib.Path(path) == tmp_path / "run" / "report.html"
    assert pathlib.Path(path).read_text(encoding="utf-8") == "<!DOCTYPE html><p>é</p>"


# --- templates -------------------------------------------------------------------------------


def _sections_in_page_order(page_text: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', page_text)


def _nav(page_text: str) -> list[str]:
    nav = re.search(r"<nav>(.*?)</nav>", page_text, re.DOTALL).group(1)
    return re.findall(r'href="#([^"]+)"', nav)


def test_every_template_autoescapes_what_it_is_given():
    environment = html_report.template_environment()
    names = environment.list_templates()
    assert {"base.html", "report.html", "sections/headline.html"} <= set(names)
    for name in names:
        assert environment.select_template([name]).environment.autoescape(name) is True, name
    page_text = render_report(
        title="<script>alert(1)</script>",
        metrics=None,
        plots={},
        gallery=[],
        notes=["<script>alert(2)</script>"],
        extra_sections={
            "top": [Section("run", "Run", {"rows": [{"name": "<script>", "value": 1}]})]
        },
    )
    assert "<script>" not in page_text
    assert page_text.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2  # <title> and <h1>
    assert "<p>&lt;script&gt;alert(2)&lt;/script&gt;</p>" in page_text
    assert "<th>&lt;script&gt;</th>" in page_text


def test_a_value_a_template_needs_and_does_not_get_fails_the_render():
    # A section whose data lacks the rows its template shows.
    with pytest.raises(jinja2.UndefinedError, match="rows"):
        render_report(
            title="t",
            metrics=None,
            plots={},
            gallery=[],
            extra_sections={"top": [Section("run", "Run", {"row": []})]},
        )
    # The layout without its title.
    page = html_report.template_environment().get_template("report.html")
    with pytest.raises(jinja2.UndefinedError, match="title"):
        page.render(nav=[], notes=[], sections=[], threshold=None)


def test_every_section_template_fails_on_data_without_its_keys():
    environment = html_report.template_environment()
    names = [
        name.removeprefix("sections/").removesuffix(".html")
        for name in environment.list_templates()
        if name.startswith("sections/")
    ]
    assert {"headline", "gallery", "errors"} <= set(names)
    page = environment.get_template("report.html")
    for name in names:
        with pytest.raises(jinja2.UndefinedError):
            page.render(
                title="t", nav=[], notes=[], sections=[Section(name, name, {})], threshold=None
            )


def test_extra_sections_go_where_their_caller_places_them():
    # The run section's template stands in for a new one: without a summary it is not shown.
    extra = Section("run", "Extra", {"rows": [{"name": "Needs review", "value": "3"}]})
    on_top = render_report(
        title="t", metrics=None, plots={}, gallery=[], extra_sections={"top": [extra]}
    )
    assert _sections_in_page_order(on_top) == ["run", "headline", "gallery", "errors"]
    assert _nav(on_top) == ["run", "headline", "gallery", "errors"]
    assert '<a href="#run">Extra</a>' in on_top
    assert "Needs review" in _Page(on_top).visible

    # After a section that is not shown this time (no plots): where it would have been.
    after_plots = render_report(
        title="t", metrics=_metrics(), plots={}, gallery=[], extra_sections={"plots": [extra]}
    )
    assert _sections_in_page_order(after_plots) == [
        *("headline", "run", "magnification", "gallery", "errors")
    ]
    assert _nav(after_plots) == _sections_in_page_order(after_plots)


def test_extra_sections_must_name_a_known_place_and_a_new_section():
    extra = Section("run", "Extra", {"rows": []})
    with pytest.raises(ValueError, match="extra sections go after one of"):
        render_report(
            title="t", metrics=None, plots={}, gallery=[], extra_sections={"middle": [extra]}
        )
    with pytest.raises(ValueError, match="repeated: \\['run'\\]"):
        render_report(
            title="t",
            metrics=None,
            plots={},
            gallery=[],
            summary={"scored": 1},
            extra_sections={"top": [extra]},
        )


_HTML_TAG = re.compile(
    r"</?(html|head|body|main|section|nav|footer|style|title|meta|h[1-6]|p|div|span|a|b|i|u|"
    r"img|figure|figcaption|table|thead|tbody|tr|th|td|ul|ol|li|br)\b[^<>]*>"
)


def _string_texts(tree: ast.AST) -> list[str]:
    """Every string literal but docstrings; an f-string whole, its fields shown as {}."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            texts.append(
                "".join(
                    part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
                )
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                texts.append(node.value)
    return texts


@pytest.mark.parametrize(
    "module",
    [
        "model/reports/html_report.py",
        "train_job/export/report.py",
        "pipelines/reporting/report_html.py",
        "pipelines/report.py",
    ],
)
def test_no_html_is_assembled_in_python_strings(module):
    tree = ast.parse((REPO_ROOT / module).read_text(encoding="utf-8"))
    markup = [text for text in _string_texts(tree) if _HTML_TAG.search(text)]
    assert markup == [], (
        f"{module} builds HTML in strings; use a template in model/reports/templates"
    )


# --- in headless Chromium ------------------------------------------------------------------


@pytest.fixture
def chromium() -> str:
    """The Chromium binary; skips locally without one, but fails in CI, which installs it."""
    binary = browser.find_chromium()
    if binary is None:
        message = "no chromium binary on PATH (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _png(path: pathlib.Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _written_report(out: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """A full report with real PNGs and metrics.json, as a job writes them."""
    metrics = evaluate(_records(), threshold=0.5)
    (out / "metrics.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plots = {"ROC": "plots/roc.png", "Precision-recall": "plots/pr.png"}
    plots["Confusion matrix"] = "plots/confusion matrix.png"  # a space needs encoding
    for index, href in enumerate(plots.values()):
        _png(out / href, (120 + index, 90), (30 * index, 80, 160))
    gallery = [
        _item("SOB_M_DC-14-1001AB-40-001.png", "confident_malignant", 0.97, "malignant"),
        _item("SOB_B_A-14-1000AB-40-002.png", "confident_benign", 0.03, "benign"),
        _item("SOB_B_A-14-1002AB-400-001.png", "misclassified", 0.7, "benign"),
    ]
    for item in gallery:
        _png(out / item.original_href, (64, 42), (200, 120, 180))
        _png(out / item.overlay_href, (64, 42), (250, 60, 40))
    page_text = render_report(
        title="Scoring run",
        metrics=json.loads((out / "metrics.json").read_text()),
        plots=plots,
        gallery=gallery,
        notes=["Synthetic test report."],
    )
    return pathlib.Path(write_report(str(out), page_text)), metrics


@pytest.mark.slow
def test_report_in_chromium_loads_every_image_and_shows_the_numbers_of_metrics_json(
    chromium, tmp_path
):
    report_path, _ = _written_report(tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())

    seen = browser.inspect_page(report_path)

    assert seen["exit_code"] == 0
    assert seen["leftover_pids"] == []
    assert len(seen["images"]) == 3 + 2 * 3
    assert browser.broken_images(seen) == []
    assert all(image["naturalWidth"] > 0 for image in seen["images"])
    for key in HEADLINE_KEYS:
        assert seen["metrics"][key] == _shown(_lookup(metrics, key)), key
        assert seen["metrics"][f"baseline.{key}"] == _shown(_lookup(metrics, f"baseline.{key}"))
    assert len(seen["metric_cells"]) > 2 * len(HEADLINE_KEYS)
    for name, text in seen["metric_cells"]:
        assert text == _shown(_lookup(metrics, name)), name
    # The probe's copy of the page is gone again.
    assert sorted(p.name for p in report_path.parent.glob("*.html")) == ["report.html"]


@pytest.mark.slow
def test_chromium_check_reports_a_missing_image(chromium, tmp_path):
    report_path, _ = _written_report(tmp_path / "run")
    (tmp_path / "run" / "heatmaps" / "SOB_B_A-14-1002AB-400-001.png").unlink()

    seen = browser.inspect_page(report_path)

    assert browser.broken_images(seen) == ["heatmaps/SOB_B_A-14-1002AB-400-001.png"]
    assert len(seen["images"]) == 9


def test_format_metric_is_the_documented_rule():
    assert html_report.format_metric(None) == "n/a"
    assert html_report.format_metric(float("nan")) == "n/a"
    assert html_report.format_metric(7) == "7"
    assert html_report.format_metric(0.91235) == _shown(0.91235)
    assert html_report.format_metric(1.0) == "1.0000"
