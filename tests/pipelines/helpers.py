"""Reading a scoring run's outputs back, recomputing its metrics with scikit-learn, and measuring
a command's peak memory."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from model import storage
from model.constants import CLASS_NAMES
from model.evaluation.metrics import score_bins


def read_csv(path: str) -> list[dict[str, str]]:
    """Rows of a CSV file, local or gs://."""
    return list(csv.DictReader(io.StringIO(storage.read_text(path))))


def read_header(path: str) -> list[str]:
    """The first row of a CSV file."""
    return next(csv.reader(io.StringIO(storage.read_text(path))))


def read_json(path: str) -> dict[str, Any]:
    """A JSON file, local or gs://."""
    return json.loads(storage.read_text(path))


def prediction_rows(output_dir: str) -> list[dict[str, str]]:
    """All prediction rows, from predictions.csv or its shards."""
    paths = storage.match(storage.join(output_dir, "predictions*.csv"))
    assert paths, f"no predictions CSV in {output_dir}"
    return [row for path in paths for row in read_csv(path)]


def sklearn_metrics(y_true: Sequence[int], p: Sequence[float], threshold: float) -> dict:
    """The metric dict of model.evaluation.metrics, recomputed independently with scikit-learn."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(p, dtype=float)
    predicted = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    both = 0 < y.sum() < y.size
    return {
        "accuracy": accuracy_score(y, predicted),
        "balanced_accuracy": balanced_accuracy_score(y, predicted) if both else None,
        "sensitivity": recall_score(y, predicted) if tp + fn else None,
        "specificity": recall_score(y, predicted, pos_label=0) if tn + fp else None,
        "precision": precision_score(y, predicted) if tp + fp else None,
        "f1": f1_score(y, predicted, zero_division=0.0) if tp + fp + fn else None,
        "roc_auc": roc_auc_score(y, p) if both else None,
        "pr_auc": average_precision_score(y, p) if both else None,
        "brier": brier_score_loss(y, p),
        "ece": sklearn_ece(y, p),
        "n": int(y.size),
        "n_benign": int((y == 0).sum()),
        "n_malignant": int((y == 1).sum()),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def sklearn_ece(y_true: Sequence[int], p: Sequence[float], bins: int = 15) -> float:
    """ECE from scikit-learn's reliability curve (15 uniform bins), each bin weighted by its
    images (numpy's right-closed digitize, the binning calibration_curve uses)."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(p, dtype=float)
    fraction, mean_p = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.digitize(p, edges[1:-1], right=True), minlength=bins)
    counts = counts[counts > 0]
    return float(np.sum(counts * np.abs(fraction - mean_p)) / y.size)


def assert_metrics_close(actual: dict, expected: dict, context: str) -> None:
    """Every key of expected matches actual (floats to 1e-9, None exactly)."""
    for key, value in expected.items():
        got = actual[key]
        if value is None or isinstance(value, (list, int)):
            assert got == value, f"{context}: {key} is {got}, sklearn says {value}"
        else:
            assert got is not None and abs(got - value) < 1e-9, (
                f"{context}: {key} is {got}, sklearn says {value}"
            )


def label_index(name: str) -> int:
    """0 for benign, 1 for malignant."""
    return CLASS_NAMES.index(name)


def distinct_bins(p: Sequence[float]) -> bool:
    """Whether no two different scores share a histogram bin (then streaming AUCs are exact).

    Equal scores may share one: sklearn ranks ties together, as the histogram does.
    """
    scores = np.unique(np.asarray(p, dtype=float))
    bins = score_bins(scores)
    return len(set(bins.tolist())) == len(scores)


# Runs the command given after the result file and writes the command's peak RSS there. A
# process's peak RSS counts the address space it was forked from (Linux records the old memory
# map's high-water mark at exec), so a child forked straight from pytest, itself gigabytes by
# then, would report pytest's size; forked from this small process it reports its own.
# wait4 covers the command and every descendant it waited for (the Beam worker processes).
PEAK_RSS_PROBE = """
import os, sys
result_file, command = sys.argv[1], sys.argv[2:]
pid = os.posix_spawn(command[0], command, os.environ)
_, status, usage = os.wait4(pid, 0)
with open(result_file, "w") as handle:
    handle.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_with_peak_rss(command: Sequence[str], **popen_args: Any) -> tuple[int, float]:
    """Run a command through PEAK_RSS_PROBE: (its exit code, its peak RSS in MiB, the largest of
    it and the descendants it waited for). Keyword arguments go to subprocess.run."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = os.path.join(scratch, "peak_rss_kb")
        completed = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_PROBE, peak_file, *command], check=False, **popen_args
        )
        with open(peak_file) as handle:
            return completed.returncode, int(handle.read()) / 1024


def write_large_png(path: str, width: int, height: int) -> None:
    """An RGB PNG of width x height written row by row, never holding the image in memory.

    Each row is a repeating colour ramp, so the file stays small (about 450 KB at 12000 x 12000)
    while a decoder must still allocate the full image.
    """
    ramp = bytes(value for index in range(100) for value in (index * 2, 255 - index, 128))
    row = b"\x00" + (ramp * (width // 100 + 1))[: 3 * width]  # filter type 0, then pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    compressor = zlib.compressobj(9)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        for _ in range(height):
            data = compressor.compress(row)
            if data:
                handle.write(chunk(b"IDAT", data))
        handle.write(chunk(b"IDAT", compressor.flush()))
        handle.write(chunk(b"IEND", b""))


def assert_review_queue(output_dir: str, limit: int) -> dict[str, Any]:
    """review.csv and summary.json's "review" agree with the run's predictions and patients.

    The reasons are recomputed here from the CSV files (the documented rules, applied to what
    the run wrote); the order from `review_priority`. Returns summary.json's "review" entry.
    """
    from pipelines.reporting.review import (
        MODEL_REASONS,
        ReviewCandidate,
        near_threshold_band,
        review_priority,
    )

    summary = read_json(storage.join(output_dir, "summary.json"))
    threshold = summary["threshold"]
    patients_csv = storage.join(output_dir, "patients.csv")
    calls = {}
    if storage.exists(patients_csv):
        calls = {row["patient_id"]: row["majority_prediction"] for row in read_csv(patients_csv)}
    low, high = near_threshold_band(threshold)
    candidates = []
    for row in prediction_rows(output_dir):
        p, p_std = float(row["p_malignant"]), float(row["p_std"])
        # Empty for one model: then only the views' spread counts.
        member_std = float(row["member_std"]) if row["member_std"] else None
        call = calls.get(row["patient_id"], "")
        found = {
            "patient_disagreement": bool(call) and row["predicted_label"] != call,
            "uncertain": max(p_std, member_std or 0.0) > abs(p - threshold),
            "near_threshold": low <= p <= high,
        }
        flags = [flag for flag in row["qc_flags"].split(";") if flag]
        reasons = tuple(flags + [name for name in MODEL_REASONS if found[name]])
        fields = {name: row[name] for name in ReviewCandidate._fields if name in row}
        candidates.append(
            ReviewCandidate(
                **{**fields, "p_malignant": p, "p_std": p_std, "member_std": member_std},
                reasons=reasons,
                patient_call=call,
            )
        )
    needing = [c for c in candidates if c.reasons]
    expected = sorted(needing, key=lambda c: review_priority(c, threshold))[:limit]

    review = summary["review"]
    counts = {name: 0 for name in MODEL_REASONS}
    for candidate in needing:
        for reason in candidate.reasons:
            counts[reason] = counts.get(reason, 0) + 1
    assert review["reasons"] == counts
    assert review["images_needing_review"] == len(needing)
    assert review["listed"] == len(expected) and review["limit"] == limit
    review_csv = storage.join(output_dir, "review.csv")
    if limit == 0:
        assert not storage.exists(review_csv) and review["file"] is None
        return review
    rows = read_csv(review_csv)
    assert [row["rank"] for row in rows] == [str(rank) for rank in range(1, len(expected) + 1)]
    assert [(row["image_path"], row["reasons"]) for row in rows] == [
        (c.image_path, ";".join(c.reasons)) for c in expected
    ]
    assert [row["heatmap_path"] for row in rows] == [c.heatmap_path for c in expected]
    assert [row["patient_call"] for row in rows] == [c.patient_call for c in expected]
    return review


# JPEG at the scorer's quality 90 keeps the synthetic 96x64 test tiles (noisy, so hard to
# compress) at 29-37 dB PSNR, real BreakHis overlays at about 40 dB; a different overlay (the
# map on another scale, or no map) is far below this.
JPEG_MIN_PSNR_DB = 27.0


def overlay_file_pixels(path: str) -> tuple[np.ndarray, str]:
    """(RGB pixels, PIL format name) of an overlay file, local or gs://."""
    from PIL import Image

    with Image.open(io.BytesIO(storage.read_bytes(path))) as image:
        return np.asarray(image.convert("RGB")), image.format


def psnr_db(decoded: np.ndarray, expected: np.ndarray) -> float:
    """Peak signal-to-noise ratio of decoded against expected uint8 pixels (inf when equal)."""
    error = np.mean((decoded.astype(np.float64) - expected.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def assert_overlay_file_shows(path: str, expected: np.ndarray) -> None:
    """The overlay file holds the expected overlay: a PNG exactly, a JPEG within its loss."""
    decoded, image_format = overlay_file_pixels(path)
    assert decoded.shape == expected.shape, (path, decoded.shape, expected.shape)
    extension = path.rsplit(".", 1)[-1]
    assert (image_format, extension) in {("PNG", "png"), ("JPEG", "jpg")}, (path, image_format)
    if image_format == "PNG":
        np.testing.assert_array_equal(decoded, expected, err_msg=path)
    else:
        assert psnr_db(decoded, expected) >= JPEG_MIN_PSNR_DB, (path, psnr_db(decoded, expected))
