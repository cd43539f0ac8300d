"""Parse BreakHis file names: label, subtype, slide (patient), specimen and magnification.

A BreakHis file is named `SOB_<B|M>_<CODE>-<YEAR>-<SLIDE>-<MAG>-<SEQ>.png`, for example
`SOB_B_A-14-22549AB-40-001.png`. The slide id (`14-22549AB`) is the dataset's patient; slides
whose ids differ only by a letter suffix (`14-22549AB`, `14-22549CD`, `14-22549G`) are sections
of one specimen, so evaluation splits keep a whole specimen on one side.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re

from model.constants import IMAGE_EXTENSIONS, SUBTYPES
from model.evaluation.labels import label_index

_NAME_PATTERN = re.compile(
    r"^SOB_(?P<label>[BM])_(?P<code>[A-Z]{1,2})-(?P<year>\d{2})-(?P<slide>\d+)(?P<suffix>[A-Z]*)"
    r"-(?P<mag>\d{2,3})-(?P<seq>\d+)$"
)
_MAGNIFICATIONS = {"40", "100", "200", "400"}


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What a BreakHis file name says about its image."""

    label: str  # "benign" or "malignant"
    subtype_code: str  # "A", "F", "PT", "TA", "DC", "LC", "MC", "PC"
    subtype: str  # e.g. "ductal_carcinoma"
    slide_id: str  # e.g. "14-22549AB": the dataset's patient id
    specimen: str  # e.g. "14-22549": slide id without its section letters
    magnification: str  # "40X", "100X", "200X" or "400X"
    sequence: int

    @property
    def label_index(self) -> int:
        """0 for benign, 1 for malignant."""
        return label_index(self.label)


def basename(path: str) -> str:
    """The file name of a local or `gs://` path.

    Only the platform's separators split (`/` for `gs://` and POSIX paths): a backslash is an
    ordinary character in a POSIX file name, so `a<\\b>.png` is one name, not two.
    """
    if "://" in path or os.sep == "/":
        return posixpath.basename(path)
    return os.path.basename(path)


def printable_path(path: str) -> str:
    """The path as readable text that always encodes as UTF-8.

    A local file name need not be valid UTF-8; Python carries its undecodable bytes as lone
    surrogates, which no UTF-8 writer (CSV, JSON, HTML) accepts. They are shown as `\\xNN`.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace")


def is_valid_utf8_name(path: str) -> bool:
    """Whether the path can be written as UTF-8 as it is (see `printable_path`)."""
    return printable_path(path) == path


def is_image_file(path: str) -> bool:
    """Whether the path has an image extension this project reads."""
    return basename(path).lower().endswith(IMAGE_EXTENSIONS)


def parse_breakhis_name(path: str) -> ImageInfo | None:
    """Parse a BreakHis file name; None when it does not follow the convention.

    A name that fails any check (unknown subtype code, a subtype of the other class, an unknown
    magnification) is rejected rather than given a guessed label.
    """
    stem, dot, extension = basename(path).rpartition(".")
    if not dot or f".{extension.lower()}" not in IMAGE_EXTENSIONS:
        return None
    match = _NAME_PATTERN.match(stem)
    if match is None:
        return None
    code = match["code"]
    if code not in SUBTYPES or match["mag"] not in _MAGNIFICATIONS:
        return None
    subtype, label = SUBTYPES[code]
    if label[0].upper() != match["label"]:
        return None
    specimen = f"{match['year']}-{match['slide']}"
    return ImageInfo(
        label=label,
        subtype_code=code,
        subtype=subtype,
        slide_id=specimen + match["suffix"],
        specimen=specimen,
        magnification=f"{match['mag']}X",
        sequence=int(match["seq"]),
    )
