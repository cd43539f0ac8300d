"""Grad-CAM overlay files: their names under `heatmaps/`, and the step that writes them.

`prediction_row` is the scoring handler's post-processing function (Beam's
`with_postprocess_fn`): it turns one image's PredictionResult into its predictions.csv row,
writing the overlay on the way, so RunInference's exception handling routes a failed write to
its dead letters like any other failure.
"""

from __future__ import annotations

import hashlib
import logging
import re

from apache_beam.ml.inference.base import PredictionResult

from model import storage
from model.naming import basename
from model.overlay import encode_png, overlay_heatmap, scale_heatmap
from model.quality import SizeRange
from pipelines.rows import ScoredImage, scored_image, with_quality

logger = logging.getLogger(__name__)

HEATMAP_DIR = "heatmaps"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_STEM_LIMIT = 80
HEATMAP_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{_STEM_LIMIT - 1}}}-[0-9a-f]{{16}}\.png")
"""Every name `heatmap_name` can give, and nothing a person is likely to name a file."""


def heatmap_name(image_path: str) -> str:
    """A flat file name for an image's heatmap: readable stem plus a hash of the full path.

    The hash makes equal file names in different folders distinct; the name has no separators
    and no leading dot, so it cannot leave the heatmap folder or hide in it.
    """
    name = basename(image_path)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    safe = _UNSAFE.sub("_", stem).strip("._-")[:_STEM_LIMIT] or "image"
    digest = hashlib.sha256(image_path.encode("utf-8")).hexdigest()[:16]
    return f"{safe}-{digest}.png"


def prediction_row(
    keyed: tuple[str, PredictionResult],
    heatmap_dir: str,
    threshold: float,
    expected_sizes: SizeRange | None = None,
    heatmap_scale: float | None = None,
) -> ScoredImage:
    """(path, PredictionResult) -> its ScoredImage, writing the Grad-CAM overlay if there is one.

    The overlay has the size of the original kept for it (`PreparedImage.original`): the image's
    own size, or at most OVERLAY_MAX_SIDE on the longer side for larger images. The map is shown
    on the shared heatmap_scale (`model.overlay.scale_heatmap`; None: on its own peak). The row
    carries the image's quality measures and flags (the size check against expected_sizes, if
    given).
    """
    path, result = keyed
    score = result.inference
    heatmap_path = ""
    if score.heatmap is not None:
        heat = scale_heatmap(score.heatmap, heatmap_scale)
        overlay = overlay_heatmap(result.example.original, heat)
        heatmap_path = storage.join(heatmap_dir, heatmap_name(path))
        storage.write_bytes(heatmap_path, encode_png(overlay, compress_level=1))
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
