"""Grad-CAM overlay files: their format, their names under `heatmaps/`, and the step that
writes them.

`prediction_row` is the scoring handler's post-processing function (Beam's
`with_postprocess_fn`): it turns one image's PredictionResult into its predictions.csv row,
writing the overlay on the way, so RunInference's exception handling routes a failed write to
its dead letters like any other failure.

`--heatmap_format` chooses the file: `jpeg` (the default), `png` (lossless), or `none` (the map
is still computed, for `heatmap_peak` and the empty-map counts, but no overlay is drawn or
written, and no decoded original is kept for one). The file name's extension follows the format.
"""

from __future__ import annotations

import hashlib
import logging
import re

from apache_beam.ml.inference.base import PredictionResult

from model import storage
from model.image.naming import basename
from model.image.overlay import OVERLAY_FORMATS, encode_overlay, overlay_heatmap, scale_heatmap
from model.image.quality import SizeRange
from pipelines.scoring.rows import ScoredImage, scored_image, with_quality

logger = logging.getLogger(__name__)

HEATMAP_DIR = "heatmaps"
NO_HEATMAP_FILES = "none"
HEATMAP_FORMATS: tuple[str, ...] = (*OVERLAY_FORMATS, NO_HEATMAP_FILES)
# JPEG: measured at a twentieth of PNG's encoding CPU time and a seventh of its file size on the
# real sample's overlays (README "Performance", benchmarks/scoring_profile.py).
DEFAULT_HEATMAP_FORMAT = "jpeg"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_STEM_LIMIT = 80
_EXTENSIONS = "|".join(sorted(set(OVERLAY_FORMATS.values())))
HEATMAP_NAME = re.compile(
    rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{_STEM_LIMIT - 1}}}-[0-9a-f]{{16}}\.(?:{_EXTENSIONS})"
)
"""Every name `heatmap_name` can give, in any overlay format, and nothing a person is likely to
name a file: an earlier run's overlays are recognised (and removed by --overwrite) whatever
format that run wrote."""


def writes_heatmap_files(heatmap_format: str) -> bool:
    """Whether a run with this --heatmap_format writes overlay files (and keeps originals)."""
    return heatmap_format != NO_HEATMAP_FILES


def heatmap_name(image_path: str, image_format: str = "png") -> str:
    """A flat file name for an image's heatmap: readable stem plus a hash of the full path.

    The hash makes equal file names in different folders distinct; the name has no separators
    and no leading dot, so it cannot leave the heatmap folder or hide in it. The extension is
    image_format's (one of OVERLAY_FORMATS; "png" by default, the format of the report's copies
    of the originals, which are named the same way).
    """
    name = basename(image_path)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    safe = _UNSAFE.sub("_", stem).strip("._-")[:_STEM_LIMIT] or "image"
    digest = hashlib.sha256(image_path.encode("utf-8")).hexdigest()[:16]
    return f"{safe}-{digest}.{OVERLAY_FORMATS[image_format]}"


def prediction_row(
    keyed: tuple[str, PredictionResult],
    heatmap_dir: str,
    threshold: float,
    expected_sizes: SizeRange | None = None,
    heatmap_scale: float | None = None,
    heatmap_format: str = DEFAULT_HEATMAP_FORMAT,
) -> ScoredImage:
    """(path, PredictionResult) -> its ScoredImage, writing the Grad-CAM overlay if there is one.

    The overlay has the size of the original kept for it (`PreparedImage.original`): the image's
    own size, or at most OVERLAY_MAX_SIDE on the longer side for larger images. The map is shown
    on the shared heatmap_scale (`model.image.overlay.scale_heatmap`; None: on its own peak). The
    row carries the image's quality measures and flags (the size check against expected_sizes, if
    given). With heatmap_format "none" no file is written and heatmap_path stays empty, while
    heatmap_peak is still reported.
    """
    path, result = keyed
    score = result.inference
    heatmap_path = ""
    if score.heatmap is not None and writes_heatmap_files(heatmap_format):
        heat = scale_heatmap(score.heatmap, heatmap_scale)
        overlay = overlay_heatmap(result.example.original, heat)
        heatmap_path = storage.join(heatmap_dir, heatmap_name(path, heatmap_format))
        storage.write_bytes(heatmap_path, encode_overlay(overlay, heatmap_format))
    row = scored_image(
        path,
        score.p_malignant,
        threshold,
        heatmap_path,
        p_std=score.p_std,
        heatmap_peak=score.heatmap_peak,
        member_std=score.member_std,
    )
    return with_quality(row, result.example.quality, expected_sizes)


def overlay_href(heatmap_path: str) -> str:
    """The link from report.html (in --output_dir) to an image's overlay under heatmaps/."""
    return f"{HEATMAP_DIR}/{basename(heatmap_path)}"
