"""`python -m pipelines.score` as a user runs it: memory per huge image, a quiet start-up."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from model.image.preprocessing import OVERLAY_MAX_SIDE
from tests.conftest import REPO_ROOT
from tests.pipelines.helpers import (
    prediction_rows,
    read_json,
    run_with_peak_rss,
    write_large_png,
)

HUGE_SIDE = 12000  # 144 million pixels: 432 MB decoded, under the decoder's pixel limit
# Measured 1.56 GB peak RSS for this run with Grad-CAM (1.41 GB without, 0.95 GB for 16 small
# tiles) on TensorFlow 2.21 / CPU; keeping the full-size original for the overlay peaked at
# 7.5 GB. The budget leaves room for allocator and library differences, not for that.
PEAK_RSS_BUDGET_MB = 2560
# TensorFlow's native start-up lines: Abseil-formatted log lines and the CPU-feature notice.
TENSORFLOW_BANNER = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]|absl::InitializeLog|oneDNN|"
    r"cpu_feature_guard|rebuild TensorFlow|cuda",
    re.MULTILINE,
)


@dataclasses.dataclass(frozen=True)
class LauncherRun:
    """A finished `python -m pipelines.score` process: exit code, peak RSS, stderr, outputs."""

    returncode: int
    peak_rss_mb: float
    stderr: str
    output_dir: pathlib.Path


def run_launcher(argv: list[str], log_path: pathlib.Path, env: dict | None = None) -> LauncherRun:
    """Run the scorer's command line in a child process and measure that child's peak RSS."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell: the launcher decides
    command = [sys.executable, "-m", "pipelines.score", *argv]
    with open(log_path, "w") as log:
        returncode, peak_rss_mb = run_with_peak_rss(
            command, cwd=REPO_ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=log
        )
    output_dir = pathlib.Path(argv[argv.index("--output_dir") + 1])
    return LauncherRun(returncode, peak_rss_mb, log_path.read_text(), output_dir)


@pytest.fixture(scope="module")
def huge_image_run(tmp_path_factory, tiny_export) -> LauncherRun:
    """The launcher scoring one 12000 x 12000 PNG with Grad-CAM."""
    folder = tmp_path_factory.mktemp("huge")
    write_large_png(str(folder / "huge.png"), HUGE_SIDE, HUGE_SIDE)  # streamed, never in memory
    argv = [
        "--input",
        str(folder / "huge.png"),
        "--model_dir",
        tiny_export,
        "--output_dir",
        str(folder / "out"),
    ]
    return run_launcher(argv, folder / "stderr.log")


@pytest.mark.slow
def test_a_huge_image_is_scored_within_the_memory_budget(huge_image_run):
    assert huge_image_run.returncode == 0, huge_image_run.stderr[-2000:]
    summary = read_json(str(huge_image_run.output_dir / "summary.json"))
    assert (summary["scored"], summary["failed"]) == (1, 0)
    assert huge_image_run.peak_rss_mb < PEAK_RSS_BUDGET_MB, (
        f"peak RSS {huge_image_run.peak_rss_mb:.0f} MB over the {PEAK_RSS_BUDGET_MB} MB budget"
    )


@pytest.mark.slow
def test_a_huge_images_overlay_is_bounded_to_the_overlay_side(huge_image_run):
    (row,) = prediction_rows(str(huge_image_run.output_dir))
    with Image.open(row["heatmap_path"]) as overlay:
        assert overlay.size == (OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE)


@pytest.mark.slow
def test_the_launcher_prints_no_tensorflow_start_up_lines(huge_image_run):
    assert huge_image_run.returncode == 0
    assert TENSORFLOW_BANNER.findall(huge_image_run.stderr) == []
    assert "Progress: worker process" in huge_image_run.stderr  # the useful lines still show


@pytest.mark.slow
def test_verbose_shows_tensorflow_start_up_lines(tmp_path, tiny_export):
    image = tmp_path / "tile.png"
    Image.new("RGB", (64, 48), (200, 120, 160)).save(image)
    argv = [
        "--input",
        str(image),
        "--model_dir",
        tiny_export,
        "--output_dir",
        str(tmp_path / "out"),
    ]
    verbose = run_launcher([*argv, "-v"], tmp_path / "verbose.log")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert TENSORFLOW_BANNER.findall(verbose.stderr)


def test_importing_the_scorer_does_not_load_tensorflow():
    modules = [
        "pipelines.score",
        "pipelines.scoring.pipeline",
        "pipelines.report",
        "pipelines.reporting.report_html",
        "pipelines.reporting.transforms",
        "pipelines.runs.skip_scored",
        "pipelines.scoring.heatmaps",
        "pipelines.scoring.model_handler",
        "pipelines.runs.outputs",
    ]
    code = f"import sys; import {', '.join(modules)}; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"


def test_a_launch_error_is_one_line_on_stderr_and_exit_code_2(
    tmp_path, tiny_export, scoring_inputs
):
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    card = json.loads((export / "model_card.json").read_text())
    (export / "model_card.json").write_text(json.dumps({**card, "threshold": None}))
    argv = [
        "--input",
        scoring_inputs.labelled[0],
        "--model_dir",
        str(export),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    result = run_launcher(argv, tmp_path / "stderr.log")
    assert result.returncode == 2
    assert result.stderr == (
        f"error: --model_dir {export}: model card has threshold None (need a number in [0, 1])\n"
    )


def test_peak_rss_is_the_commands_own_not_the_measuring_process():
    # A gigabyte held here would be reported as the child's own peak had pytest forked the
    # child itself; through the probe, an idle interpreter reports tens of megabytes.
    ballast = bytearray(2**30)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: resident
    returncode, peak_mb = run_with_peak_rss([sys.executable, "-c", "pass"])
    assert returncode == 0
    assert peak_mb < 200, f"{peak_mb:.0f} MB: the probe counted the measuring process"
    del ballast
