"""Local reads and listings of `model.storage`: files that are not tiles fail fast, none vanish."""

from __future__ import annotations

import os
import threading

import pytest

from model import storage

CAP = 1024


def test_a_regular_file_under_the_cap_is_read(tmp_path):
    path = tmp_path / "tile.png"
    path.write_bytes(b"x" * CAP)
    assert storage.read_bytes(str(path), max_bytes=CAP) == b"x" * CAP


def test_a_file_over_the_cap_is_refused(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"x" * (CAP + 1))
    with pytest.raises(storage.FileTooLargeError, match="read cap"):
        storage.read_bytes(str(path), max_bytes=CAP)


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome: list = []
    # Opening a FIFO with no writer blocks forever; a thread keeps the test from hanging.
    reader = threading.Thread(
        target=lambda: outcome.append(_raises(storage.read_bytes, str(fifo), max_bytes=CAP)),
        daemon=True,
    )
    reader.start()
    reader.join(timeout=10)
    assert outcome, "reading a FIFO hung"
    assert isinstance(outcome[0], storage.NotARegularFileError)
    assert "FIFO" in str(outcome[0])


def test_a_link_to_an_endless_device_is_refused(tmp_path):
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    with pytest.raises(storage.NotARegularFileError, match="character device"):
        storage.read_bytes(str(link), max_bytes=CAP)


def test_a_dangling_link_says_so(tmp_path):
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="dangling symbolic link"):
        storage.read_bytes(str(link), max_bytes=CAP)


def test_local_matching_lists_links_fifos_and_odd_names_that_beam_drops(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    os.mkfifo(tmp_path / "pipe.png")
    odd = os.path.join(str(tmp_path), b"\xff\xfe.png".decode("utf-8", "surrogateescape"))
    with open(odd, "wb") as handle:
        handle.write(b"x")
    (tmp_path / "notes.txt").write_text("x")
    found = storage.match(os.path.join(str(tmp_path), "**.png"))
    expected = [odd] + [str(tmp_path / name) for name in ("gone.png", "pipe.png", "sub/a.png")]
    assert found == sorted(expected)
    # `*` stays within a folder, as in Beam's glob syntax.
    assert storage.match(os.path.join(str(tmp_path), "*", "*.png")) == [
        str(tmp_path / "sub" / "a.png")
    ]
    # A path without glob characters matches itself, a dangling link included.
    assert storage.match(str(tmp_path / "gone.png")) == [str(tmp_path / "gone.png")]
    assert storage.match(str(tmp_path / "missing.png")) == []


def _raises(function, *args, **kwargs):
    try:
        function(*args, **kwargs)
    except Exception as error:  # the test inspects it
        return error
    return None
