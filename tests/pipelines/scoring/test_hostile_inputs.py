"""No single input takes a scoring job down or hangs it: each ends as a prediction or an error."""

from __future__ import annotations

import dataclasses
import errno
import os
import pathlib
import threading

import numpy as np
import pytest
from PIL import Image

from model.image.naming import printable_path
from pipelines import score
from tests.pipelines.helpers import prediction_rows, read_csv, read_json

MAX_FILE_MB = 0.05  # 52 KB: the small tiles pass, big.png does not
TURNED_STORED_SIZE = (96, 64)  # width, height as stored; EXIF orientation 6 turns it upright


@dataclasses.dataclass(frozen=True)
class HostileRun:
    """A run over a folder of awkward entries, and what each should become."""

    output_dir: pathlib.Path
    folder: pathlib.Path
    scorable: dict[str, str]  # name -> path
    failing: dict[str, tuple[str, str]]  # printable path -> (error type, part of the message)


def _noise_png(path, width: int, height: int, seed: int, **save) -> None:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    image.save(path, **save)


def _unblock_fifo_later(path: str, seconds: float) -> None:
    """If something opens the FIFO for reading (a regression), end its read instead of hanging."""

    def release():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as error:  # ENXIO: nobody is reading, as it should be
            assert error.errno == errno.ENXIO

    timer = threading.Timer(seconds, release)
    timer.daemon = True
    timer.start()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, tiny_export) -> HostileRun:
    """One in_memory run over good tiles and every kind of hostile entry named *.png."""
    folder = tmp_path_factory.mktemp("hostile") / "in"
    folder.mkdir()
    scorable = {}
    for index in (1, 2):
        scorable[f"good_{index}.png"] = str(folder / f"good_{index}.png")
        _noise_png(scorable[f"good_{index}.png"], 64, 48, index)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    scorable["turned.png"] = str(folder / "turned.png")
    _noise_png(scorable["turned.png"], *TURNED_STORED_SIZE, 3, exif=exif.tobytes())
    scorable["a<\\b>.png"] = str(folder / "a<\\b>.png")  # one POSIX name, backslash and all
    _noise_png(scorable["a<\\b>.png"], 64, 48, 4)

    invalid = os.fsencode(folder) + b"/\xff\xfe.png"
    with open(invalid, "wb") as handle:
        handle.write((folder / "good_1.png").read_bytes())
    os.symlink(folder / "no-such-target.png", folder / "gone.png")
    os.mkfifo(folder / "pipe.png")
    _unblock_fifo_later(str(folder / "pipe.png"), 120)
    os.symlink("/dev/zero", folder / "zero.png")
    _noise_png(folder / "big.png", 200, 200, 5)
    assert (folder / "big.png").stat().st_size > MAX_FILE_MB * 2**20
    failing = {
        printable_path(os.fsdecode(invalid)): ("UnicodeDecodeError", "not valid UTF-8"),
        str(folder / "gone.png"): ("FileNotFoundError", "dangling symbolic link"),
        str(folder / "pipe.png"): ("NotARegularFileError", "FIFO"),
        str(folder / "zero.png"): ("NotARegularFileError", "character device"),
        str(folder / "big.png"): ("FileTooLargeError", "read cap"),
    }

    output_dir = tmp_path_factory.mktemp("hostile_out")
    argv = [
        "--input",
        str(folder),
        "--model_dir",
        tiny_export,
        "--output_dir",
        str(output_dir),
        "--max_file_mb",
        str(MAX_FILE_MB),
        "--max_error_fraction",
        "1",
    ]
    assert score.main(argv) == 0
    return HostileRun(output_dir, folder, scorable, failing)


def test_every_hostile_entry_is_an_error_row_and_every_image_is_scored(hostile_run):
    rows = prediction_rows(str(hostile_run.output_dir))
    errors = read_csv(str(hostile_run.output_dir / "errors.csv"))
    assert sorted(row["image_path"] for row in rows) == sorted(hostile_run.scorable.values())
    found = {row["image_path"]: row for row in errors}
    assert sorted(found) == sorted(hostile_run.failing)
    for path, (error_type, reason) in hostile_run.failing.items():
        assert found[path]["error_type"] == error_type, path
        assert reason in found[path]["message"], (path, found[path]["message"])

    summary = read_json(str(hostile_run.output_dir / "summary.json"))
    assert summary["inputs_matched"] == len(rows) + len(errors) == 9
    assert (summary["scored"], summary["failed"]) == (4, 5)
    assert summary["max_file_mb"] == MAX_FILE_MB


def test_an_exif_turned_image_gets_an_overlay_of_its_upright_size(hostile_run):
    rows = {row["image_path"]: row for row in prediction_rows(str(hostile_run.output_dir))}
    with Image.open(rows[hostile_run.scorable["turned.png"]]["heatmap_path"]) as overlay:
        assert overlay.size == TURNED_STORED_SIZE[::-1]


def test_the_gallery_caption_shows_a_name_with_a_backslash_whole(hostile_run):
    page = (hostile_run.output_dir / "report.html").read_text(encoding="utf-8")
    assert ">a&lt;\\b&gt;.png</div>" in page
    assert ">b&gt;.png</div>" not in page


def test_a_non_positive_max_file_mb_stops_at_launch(tmp_path, tiny_export, capsys):
    argv = ["--input", str(tmp_path), "--model_dir", tiny_export, "--output_dir", str(tmp_path)]
    assert score.main([*argv, "--max_file_mb", "0"]) == score.EXIT_LAUNCH_ERROR
    assert capsys.readouterr().err == "error: --max_file_mb must be above 0, got 0.0\n"
