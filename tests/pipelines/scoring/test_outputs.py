"""Per-image outputs: rows, heatmap names and files, error descriptions and CSV writing."""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import traceback

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from model.image.preprocessing import ImageDecodeError
from pipelines.scoring.csv_output import WriteCsv, csv_line
from pipelines.scoring.dead_letters import describe_failure, error_for_scored, errors_for_batch
from pipelines.scoring.heatmaps import HEATMAP_FORMATS, HEATMAP_NAME, heatmap_name, prediction_row
from pipelines.scoring.keyed_handler import keyed_scoring_handler
from pipelines.scoring.model_handler import ImageScore, PreparedImage
from pipelines.scoring.rows import ERROR_COLUMNS, ScoringError, scored_image
from tests.pipelines.conftest import IMAGE_SIZE
from tests.pipelines.helpers import assert_overlay_file_shows, overlay_file_pixels, psnr_db

BREAKHIS_PATH = "gs://bucket/BreaKHis_v1/SOB_M_DC_14-2523/40X/SOB_M_DC-14-2523-40-010.png"


def _failure(error: Exception) -> tuple:
    """The (type, repr, traceback lines) triple Beam's dead-letter outputs carry."""
    try:
        raise error
    except Exception as caught:
        return type(caught), repr(caught), traceback.format_exception(*sys.exc_info())


def test_equal_file_names_in_different_folders_get_different_heatmaps():
    first = heatmap_name("/data/a/SOB_B_A-14-22549AB-40-001.png")
    second = heatmap_name("/data/b/SOB_B_A-14-22549AB-40-001.png")
    assert first != second
    assert first.startswith("SOB_B_A-14-22549AB-40-001-") and second.startswith(
        "SOB_B_A-14-22549AB-40-001-"
    )
    assert heatmap_name("/data/a/SOB_B_A-14-22549AB-40-001.png") == first  # deterministic


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd.png",
        "/x/.hidden.png",
        "/x/..png",
        "/x/a b/ümlaut & co?.tif",
        "gs://bucket/dir/",
        "C:\\images\\slide.png",
    ],
)
def test_heatmap_names_stay_inside_the_heatmap_folder(path):
    for image_format, extension in (("png", "png"), ("jpeg", "jpg")):
        name = heatmap_name(path, image_format)
        pattern = rf"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{{16}}\.{extension}"
        assert re.fullmatch(pattern, name), name
        assert HEATMAP_NAME.fullmatch(name), name  # what --overwrite recognises as a heatmap
        folder = os.path.join("/out", "heatmaps")
        assert os.path.dirname(os.path.normpath(os.path.join(folder, name))) == folder


def test_the_heatmap_pattern_knows_every_format_and_no_other_name():
    path = "/data/a/SOB_B_A-14-22549AB-40-001.png"
    assert heatmap_name(path, "png")[:-4] == heatmap_name(path, "jpeg")[:-4]  # same stem
    stem = heatmap_name(path)[: -len(".png")]
    for extension in ("jpeg", "gif", "png.tmp", "JPG"):
        assert not HEATMAP_NAME.fullmatch(f"{stem}.{extension}"), extension
    for name in ("mine.jpg", "notes-0123456789abcdef.txt", ".hidden-0123456789abcdef.jpg"):
        assert not HEATMAP_NAME.fullmatch(name), name


def test_a_breakhis_row_carries_its_ground_truth():
    row = scored_image(BREAKHIS_PATH, np.float32(0.73456789), 0.5, "h.png")
    assert row.p_malignant == 0.734568
    assert row.predicted_label == "malignant"
    assert (row.true_label, row.patient_id, row.magnification, row.subtype) == (
        "malignant",
        "14-2523",
        "40X",
        "ductal_carcinoma",
    )


def test_the_threshold_itself_is_malignant_and_unparsed_names_stay_blank():
    row = scored_image("/x/photo.png", 0.3, 0.3, "")
    assert row.predicted_label == "malignant"
    assert row.true_label == row.patient_id == row.magnification == row.subtype == ""
    assert scored_image("/x/photo.png", 0.2999994, 0.3, "").predicted_label == "benign"


def test_failures_are_described_by_type_and_message():
    error_type, message = describe_failure(_failure(ImageDecodeError("cannot decode image: bad")))
    assert (error_type, message) == ("ImageDecodeError", "cannot decode image: bad")
    error_type, message = describe_failure(_failure(FileNotFoundError("no\nsuch   file")))
    assert (error_type, message) == ("FileNotFoundError", "no such file")
    _, long_message = describe_failure(_failure(ValueError("x" * 2000)))
    assert len(long_message) == 500 and long_message.endswith("...")


def test_a_failed_batch_reports_every_image_in_it():
    batch = [("/a.png", None), ("/b.png", None)]
    rows = list(errors_for_batch((batch, _failure(RuntimeError("out of memory")))))
    assert rows == [
        ScoringError(
            "/a.png", "RuntimeError", "inference failed for its batch of 2: out of memory"
        ),
        ScoringError(
            "/b.png", "RuntimeError", "inference failed for its batch of 2: out of memory"
        ),
    ]


def test_csv_lines_round_trip_awkward_paths():
    values = ['/data/a,b/"quoted"/x.png', 0.1234567, "line\nbreak", ""]
    parsed = next(csv.reader(io.StringIO(csv_line(values))))
    assert parsed == ['/data/a,b/"quoted"/x.png', "0.123457", "line\nbreak", ""]


def _prediction(
    original: np.ndarray, p: float, heatmap: np.ndarray | None = None, p_std: float = 0.0
) -> PredictionResult:
    if heatmap is None:
        heatmap = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    peak = float(heatmap.max())
    return PredictionResult(
        PreparedImage(np.zeros((32, 32, 3), np.float32), original),
        ImageScore(p, heatmap, p_std, peak),
    )


def test_the_prediction_row_writes_the_overlay_at_the_kept_original_size(tmp_path):
    original = np.full((10, 14, 3), 128, dtype=np.uint8)
    row = prediction_row(("/in/ok.png", _prediction(original, 0.8)), str(tmp_path), 0.5)
    assert (row.image_path, row.predicted_label) == ("/in/ok.png", "malignant")
    assert os.path.dirname(row.heatmap_path) == str(tmp_path)
    with Image.open(row.heatmap_path) as heatmap:
        assert heatmap.size == (14, 10) and heatmap.mode == "RGB"
        assert np.asarray(heatmap).std() > 0  # coloured by the map, not a flat copy


def test_the_row_records_p_std_and_the_raw_peak_the_overlay_is_drawn_from(tmp_path):
    original = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    raw = np.array([[0.0, 0.003], [0.0015, 0.0]], dtype=np.float32)

    def overlay_of(name, heatmap, scale):
        row = prediction_row(
            (f"/in/{name}.png", _prediction(original, 0.3, heatmap, p_std=0.01234567)),
            str(tmp_path),
            0.5,
            heatmap_scale=scale,
            heatmap_format="png",  # lossless, so pixels can be compared exactly
        )
        with Image.open(row.heatmap_path) as image:
            return row, np.abs(np.asarray(image, dtype=int) - original)

    row, faint = overlay_of("faint", raw, 0.012)  # a quarter of the shared scale
    assert row.heatmap_peak == pytest.approx(0.003) and row.p_std == 0.012346
    _, strong = overlay_of("strong", raw * 4, 0.012)  # at the scale: full colour
    assert 0 < faint.max() < strong.max() / 2
    # Without a shared scale each map is drawn on its own peak: both look the same.
    _, own = overlay_of("own", raw, None)
    np.testing.assert_array_equal(own, strong)
    # A map with no evidence leaves the image exactly as it is, on either scale.
    for scale in (0.012, None):
        row, empty = overlay_of("empty", np.zeros((2, 2), np.float32), scale)
        assert row.heatmap_peak == 0.0 and empty.max() == 0


def test_each_heatmap_format_writes_the_overlay_under_its_extension_or_no_file(tmp_path):
    from model.image.overlay import overlay_heatmap, scale_heatmap

    # A smooth 2x2 map over a photo-like tile (a gradient with mild noise), 140 x 100 pixels.
    rng = np.random.default_rng(1)
    ramp = np.linspace(60, 220, 140)[None, :, None] + np.linspace(0, 30, 100)[:, None, None]
    original = np.clip(ramp + rng.normal(0, 4, (100, 140, 3)), 0, 255).astype(np.uint8)
    raw = np.array([[0.0, 0.02], [0.01, 0.005]], dtype=np.float32)
    expected = overlay_heatmap(original, scale_heatmap(raw, 0.015))
    written = {}
    for image_format in HEATMAP_FORMATS:
        folder = tmp_path / image_format
        row = prediction_row(
            ("/in/SOB_B_A-14-22549AB-40-001.png", _prediction(original, 0.7, raw)),
            str(folder),
            0.5,
            heatmap_scale=0.015,
            heatmap_format=image_format,
        )
        assert row.heatmap_peak == pytest.approx(0.02)  # the map is reported in every format
        written[image_format] = row.heatmap_path
        if image_format == "none":
            assert row.heatmap_path == "" and not folder.exists()
            continue
        assert os.listdir(folder) == [heatmap_name(row.image_path, image_format)]
        assert_overlay_file_shows(row.heatmap_path, expected)
    assert written["png"].endswith(".png") and written["jpeg"].endswith(".jpg")
    jpeg, image_format = overlay_file_pixels(written["jpeg"])
    assert image_format == "JPEG" and psnr_db(jpeg, expected) > 35  # a smooth tile: near-exact
    assert psnr_db(jpeg, original) < 25  # and plainly the overlay, not the bare tile
    assert os.path.getsize(written["jpeg"]) < os.path.getsize(written["png"]) / 2


def test_rows_keep_significant_digits_of_small_raw_peaks_so_only_none_reads_as_zero():
    row = scored_image("/x/a.png", 0.5, 0.5, "h.png", p_std=0.1, heatmap_peak=1.23456789e-7)
    assert row.heatmap_peak == 1.23457e-7
    line = next(csv.reader(io.StringIO(csv_line(row))))
    assert line[7:10] == ["h.png", "1.23457e-07", "0.100000"]
    assert float(line[8]) > 0
    empty = next(csv.reader(io.StringIO(csv_line(row._replace(heatmap_peak=0.0)))))
    assert empty[8] == "0.000000"
    assert scored_image("/x/a.png", 0.5, 0.5, "").heatmap_peak is None  # no Grad-CAM


def test_a_failed_heatmap_write_becomes_an_error_row_through_runinference(
    tmp_path, tiny_export, scoring_inputs
):
    blocked = tmp_path / "file.txt"
    blocked.write_text("a file where the heatmap folder should be")
    paths = scoring_inputs.labelled[:2]
    handler = keyed_scoring_handler(
        tiny_export, IMAGE_SIZE, 0.5, heatmap_dir=str(blocked / "heatmaps"), batch_size=2
    )
    with test_pipeline.TestPipeline() as pipeline:
        scored, failures = (
            pipeline | beam.Create(paths) | RunInference(handler).with_exception_handling()
        )
        assert_that(scored, equal_to([]), label="NoRows")
        (failed,) = failures.failed_postprocessing
        assert_that(
            failed
            | beam.Map(error_for_scored)
            | beam.Map(lambda e: (e.image_path, e.message[:26])),
            equal_to([(path, "writing the heatmap failed") for path in paths]),
            label="Failed",
        )


def test_an_empty_error_output_still_writes_its_header(tmp_path):
    with test_pipeline.TestPipeline() as pipeline:
        rows = pipeline | beam.Create([]).with_output_types(ScoringError)
        _ = rows | WriteCsv(str(tmp_path), "errors", ERROR_COLUMNS)
    assert (tmp_path / "errors.csv").read_text() == "image_path,error_type,message\n"


def test_rows_are_written_under_their_header_in_one_file(tmp_path):
    rows = [ScoringError("/a,1.png", "ValueError", "bad"), ScoringError("/b.png", "OSError", "")]
    with test_pipeline.TestPipeline() as pipeline:
        _ = pipeline | beam.Create(rows) | WriteCsv(str(tmp_path), "errors", ERROR_COLUMNS)
    assert sorted(os.listdir(tmp_path)) == ["errors.csv"]
    parsed = list(csv.DictReader(io.StringIO((tmp_path / "errors.csv").read_text())))
    assert sorted(tuple(row.values()) for row in parsed) == sorted(rows)
