"""Files that must not take training down: odd names, FIFOs, links, devices, huge files."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from model.image.naming import printable_path
from tests.train_job.test_train import tiny_config
from train_job.data import discovery as data
from train_job.train import train

BAD_NAME = "SOB_B_A-22-99999-40-001.png"  # a valid BreakHis name for each odd entry


@pytest.fixture
def odd_data_dir(synthetic_data_dir, tmp_path):
    """A copy of the synthetic set plus one entry of every odd kind; returns (root, expected).

    expected maps each odd entry's shown path to a fragment of the reason it is not used.
    """
    root = tmp_path / "data"
    shutil.copytree(synthetic_data_dir, root)
    good = sorted(root.rglob("*.png"))[0].read_bytes()
    odd = root / "odd"
    odd.mkdir()
    expected = {}

    def entry(folder: str, seq: int) -> str:
        (odd / folder).mkdir()
        return str(odd / folder / BAD_NAME.replace("-001.", f"-{seq:03d}."))

    fifo = entry("fifo", 1)
    os.mkfifo(fifo)
    expected[fifo] = "FIFO"
    dangling = entry("dangling", 2)
    os.symlink(str(odd / "missing.png"), dangling)
    expected[dangling] = "dangling symbolic link"
    device = entry("device", 3)
    os.symlink("/dev/zero", device)
    expected[device] = "character device"
    huge = entry("huge", 4)
    with open(huge, "wb") as handle:
        handle.write(good + b"\0" * (2 * 2**20))
    expected[huge] = "read cap"
    # Not valid UTF-8: a folder name and a file name with the bytes \xff\xfe.
    bad_folder = os.path.join(os.fsencode(odd), b"\xff\xfe")
    os.mkdir(bad_folder)
    for name in (BAD_NAME.encode().replace(b"-001", b"-005"), b"SOB_B_A-22-99999-40-\xfe6.png"):
        with open(os.path.join(bad_folder, name), "wb") as handle:
            handle.write(good)
    bad_file = os.path.join(os.fsencode(odd), b"SOB_B_A-22-99999-40-007\xff.png")
    with open(bad_file, "wb") as handle:
        handle.write(good)
    for path in (os.path.join(bad_folder, n) for n in os.listdir(bad_folder)):
        expected[printable_path(os.fsdecode(path))] = "not valid UTF-8"
    expected[printable_path(os.fsdecode(bad_file))] = "not valid UTF-8"
    return root, expected


def test_odd_entries_are_listed_with_their_reason_and_nothing_hangs(odd_data_dir):
    root, expected = odd_data_dir
    found = data.discover_images(str(root), max_bytes=2**20)
    assert set(found.unreadable) == set(expected)
    for path, fragment in expected.items():
        assert fragment in found.unreadable[path], (path, found.unreadable[path])
        path.encode("utf-8")  # every shown path can be written as UTF-8
    assert len(found.images) == 60


def test_an_output_folder_inside_the_data_folder_is_not_data(synthetic_data_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_data_dir, root)
    inside = root / "export"
    (inside / "report_assets").mkdir(parents=True)
    shutil.copy(sorted(root.rglob("*.png"))[0], inside / "SOB_B_A-22-12345-40-001.png")
    shutil.copy(sorted(root.rglob("*.png"))[0], inside / "report_assets" / "000_original.png")
    found = data.discover_images(str(root), exclude_dir=str(inside))
    assert len(found.images) == 60 and not found.unparsed
    with_it = data.discover_images(str(root))
    assert len(with_it.images) == 61 and with_it.unparsed


@pytest.mark.slow
def test_training_on_odd_files_writes_valid_utf8_everywhere(odd_data_dir):
    root, expected = odd_data_dir
    output_dir = root.parent / f"{root.name}-export"  # beside the data: never inside it
    config = tiny_config(root, output_dir, epochs=1, fine_tune_epochs=0, max_file_mb=1.0)
    train(config)
    card_text = (output_dir / "model_card.json").read_bytes().decode("utf-8")
    card = json.loads(card_text)
    assert set(card["data_summary"]["unreadable_files"]) == set(expected)
    assert card["data_summary"]["unparsed_files"] == 0
    split = (output_dir / "split.csv").read_bytes().decode("utf-8")
    assert f"{output_dir}/" not in split and f"{root}/odd/" not in split
    assert len(split.splitlines()) == 61  # header + the 60 good images
    report = (output_dir / "report.html").read_bytes().decode("utf-8")
    assert "\\xff\\xfe" in report and "dangling symbolic link" in report
    for path in output_dir.rglob("*"):
        if path.suffix in (".json", ".csv", ".html"):
            path.read_bytes().decode("utf-8")
