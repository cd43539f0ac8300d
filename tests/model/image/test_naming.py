"""Tests for BreakHis file-name parsing, on hand-written names and on the real sample."""

from __future__ import annotations

import collections
import csv
import pathlib

import pytest

from model.constants import SUBTYPES
from model.image.naming import basename, is_valid_utf8_name, parse_breakhis_name, printable_path

SAMPLE_PNG_COUNT = 345


@pytest.mark.parametrize(
    ("name", "label", "subtype"),
    [
        ("SOB_B_A-14-22549AB-40-001.png", "benign", "adenosis"),
        ("SOB_B_F-14-9133-100-012.png", "benign", "fibroadenoma"),
        ("SOB_B_PT-14-22704-200-003.png", "benign", "phyllodes_tumor"),
        ("SOB_B_TA-14-3411F-400-020.png", "benign", "tubular_adenoma"),
        ("SOB_M_DC-14-2523-40-010.png", "malignant", "ductal_carcinoma"),
        ("SOB_M_LC-14-12204-100-007.png", "malignant", "lobular_carcinoma"),
        ("SOB_M_MC-14-13418DE-200-001.png", "malignant", "mucinous_carcinoma"),
        ("SOB_M_PC-14-9146-400-015.png", "malignant", "papillary_carcinoma"),
    ],
)
def test_every_subtype_code_parses_to_its_class_and_folder(name, label, subtype):
    info = parse_breakhis_name(name)
    assert info is not None
    assert info.label == label
    assert info.subtype == subtype
    assert SUBTYPES[info.subtype_code] == (subtype, label)
    assert info.label_index == (0 if label == "benign" else 1)


def test_fields_of_a_full_name():
    info = parse_breakhis_name("SOB_B_A-14-22549AB-40-001.png")
    assert info.subtype_code == "A"
    assert info.slide_id == "14-22549AB"
    assert info.specimen == "14-22549"
    assert info.magnification == "40X"
    assert info.sequence == 1


@pytest.mark.parametrize(
    ("name", "slide_id"),
    [
        ("SOB_B_A-14-22549AB-40-001.png", "14-22549AB"),
        ("SOB_B_A-14-22549CD-100-002.png", "14-22549CD"),
        ("SOB_B_A-14-22549G-200-003.png", "14-22549G"),
        ("SOB_B_A-14-22549-400-004.png", "14-22549"),
    ],
)
def test_letter_suffixed_sections_share_their_specimen(name, slide_id):
    info = parse_breakhis_name(name)
    assert info.slide_id == slide_id
    assert info.specimen == "14-22549"


def test_sections_of_one_specimen_are_different_slides():
    names = ["SOB_B_A-14-22549AB-40-001.png", "SOB_B_A-14-22549CD-40-001.png"]
    first, second = (parse_breakhis_name(name) for name in names)
    assert first.slide_id != second.slide_id
    assert first.specimen == second.specimen


@pytest.mark.parametrize(
    ("magnification", "expected"),
    [("40", "40X"), ("100", "100X"), ("200", "200X"), ("400", "400X")],
)
def test_magnification_gets_its_x(magnification, expected):
    info = parse_breakhis_name(f"SOB_M_DC-14-2523-{magnification}-013.png")
    assert info.magnification == expected
    assert info.sequence == 13


@pytest.mark.parametrize(
    "path",
    [
        "/data/BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/"
        "SOB_B_A-14-22549AB-40-001.png",
        "relative/dir/SOB_B_A-14-22549AB-40-001.png",
        "gs://bucket/BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/"
        "SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-001.png",
    ],
)
def test_full_paths_parse_by_their_basename(path):
    assert parse_breakhis_name(path) == parse_breakhis_name("SOB_B_A-14-22549AB-40-001.png")


def test_a_backslash_is_part_of_a_posix_file_name():
    assert basename("/data/a<\\b>.png") == "a<\\b>.png"
    assert basename("gs://bucket/x/a\\b.png") == "a\\b.png"


def test_names_that_are_not_utf8_are_shown_escaped():
    name = b"/data/SOB_\xff\xfe.png".decode("utf-8", "surrogateescape")
    assert not is_valid_utf8_name(name)
    assert printable_path(name) == "/data/SOB_\\xff\\xfe.png"
    printable_path(name).encode("utf-8")  # writable as it is
    assert printable_path("/data/tumeur-é.png") == "/data/tumeur-é.png"


def test_folder_names_do_not_override_the_file_name():
    # The folders say malignant/ductal; the file name, which the dataset guarantees, says benign.
    info = parse_breakhis_name("gs://b/malignant/SOB/ductal_carcinoma/SOB_B_F-14-9133-40-001.png")
    assert (info.label, info.subtype) == ("benign", "fibroadenoma")


@pytest.mark.parametrize(
    "name",
    [
        "SOB_B_A-14-22549AB-40-001.PNG",
        "SOB_B_A-14-22549AB-40-001.jpg",
        "SOB_B_A-14-22549AB-40-001.JPEG",
        "SOB_B_A-14-22549AB-40-001.tif",
        "SOB_B_A-14-22549AB-40-001.tiff",
    ],
)
def test_other_image_extensions_and_upper_case_are_accepted(name):
    info = parse_breakhis_name(name)
    assert info is not None
    assert (info.label, info.slide_id, info.magnification) == ("benign", "14-22549AB", "40X")


@pytest.mark.parametrize(
    "name",
    [
        "SOB_M_A-14-22549AB-40-001.png",  # adenosis is benign, not malignant
        "SOB_B_DC-14-2523-40-001.png",  # ductal carcinoma is malignant, not benign
        "SOB_B_XX-14-22549AB-40-001.png",  # unknown subtype code
        "SOB_X_A-14-22549AB-40-001.png",  # unknown class letter
        "SOB_B_A-14-22549AB-50-001.png",  # no such magnification
        "SOB_B_A-14-22549AB-4000-001.png",
        "SOB_B_A-14-22549AB-40.png",  # no sequence number
        "SOB_B_A-14-22549AB-40-.png",
        "SOB_B_A-22549AB-40-001.png",  # no year
        "SOB_B_A-14-22549AB-40-001.txt",  # not an image
        "SOB_B_A-14-22549AB-40-001.png.txt",
        "SOB_B_A-14-22549AB-40-001",  # no extension
        "SOB_B_A-14-22549AB-40-001.png/",  # a folder
        "SOB_B_A_14-22549AB",  # a patient folder, not a file
        "x_SOB_B_A-14-22549AB-40-001.png",
        "image_0001.png",
        "MANIFEST.csv",
        "gs://bucket/SOB_B_A-14-22549AB-40-001.png/notes.txt",
        ".png",
        "",
    ],
)
def test_names_off_the_convention_are_rejected(name):
    assert parse_breakhis_name(name) is None


def _manifest(sample: pathlib.Path) -> dict[str, dict[str, str]]:
    with open(sample / "MANIFEST.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"relative_path", "label", "subtype", "patient", "magnification"} <= set(rows[0])
    return {row["relative_path"]: row for row in rows}


def test_every_real_sample_file_parses_and_agrees_with_manifest_and_folders(breakhis_sample):
    manifest = _manifest(breakhis_sample)
    files = sorted(breakhis_sample.rglob("*.png"))
    assert len(files) == SAMPLE_PNG_COUNT
    assert {path.relative_to(breakhis_sample).as_posix() for path in files} == set(manifest)

    labels = collections.Counter()
    for path in files:
        relative = path.relative_to(breakhis_sample).as_posix()
        info = parse_breakhis_name(str(path))
        assert info is not None, relative
        row = manifest[relative]
        # The manifest's "patient" is the slide id, e.g. 14-22549AB.
        assert (info.label, info.subtype, info.slide_id, info.magnification) == (
            row["label"],
            row["subtype"],
            row["patient"],
            row["magnification"],
        ), relative
        label_dir, sob, subtype_dir, patient_dir, magnification_dir = path.parent.parts[-5:]
        assert (label_dir, sob, subtype_dir) == (info.label, "SOB", info.subtype)
        letter = info.label[0].upper()
        assert patient_dir == f"SOB_{letter}_{info.subtype_code}_{info.slide_id}"
        assert magnification_dir == info.magnification
        labels[info.label] += 1
    assert labels == {"benign": 160, "malignant": 185}


def test_real_sample_sections_group_into_specimens(breakhis_sample):
    infos = [parse_breakhis_name(str(path)) for path in breakhis_sample.rglob("*.png")]
    slides_by_specimen = collections.defaultdict(set)
    for info in infos:
        slides_by_specimen[info.specimen].add(info.slide_id)
    # 14-22549 is cut into sections AB, CD and G in the dataset.
    assert {"14-22549AB", "14-22549CD", "14-22549G"} <= slides_by_specimen["14-22549"]
    assert len(slides_by_specimen) < len({info.slide_id for info in infos})
    for specimen, slide_ids in slides_by_specimen.items():
        assert all(slide_id.startswith(specimen) for slide_id in slide_ids)
