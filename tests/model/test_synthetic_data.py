"""Tests for the synthetic BreakHis generator: layout, names, determinism, learnable classes."""

from __future__ import annotations

import collections
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from model.constants import CLASS_NAMES, MAGNIFICATIONS, SUBTYPES
from model.image.naming import parse_breakhis_name
from model.image.preprocessing import load_image
from model.synthetic_data import DATASET_SUBDIR, draw_tile, generate_dataset

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 96, 64
PATIENTS = 4
IMAGES = 3


def _relative(paths: list[str], root: pathlib.Path) -> list[str]:
    return [os.path.relpath(path, root) for path in paths]


def _nucleus_features(path: str) -> list[float]:
    """Mean R, G, B and the fraction of dark (nucleus-coloured) pixels of the 32x32 model input."""
    pixels = load_image(pathlib.Path(path).read_bytes(), 32).astype(np.float64) / 255.0
    dark = pixels.sum(axis=2) < 1.6
    return [*pixels.reshape(-1, 3).mean(axis=0), dark.mean()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[pathlib.Path, list[str]]:
    root = tmp_path_factory.mktemp("synthetic")
    paths = generate_dataset(
        str(root),
        patients_per_class=PATIENTS,
        images_per_magnification=IMAGES,
        width=WIDTH,
        height=HEIGHT,
        seed=0,
    )
    return root, paths


def test_returns_sorted_paths_of_every_png_written(dataset):
    root, paths = dataset
    on_disk = sorted(str(path) for path in root.rglob("*") if path.is_file())
    assert paths == sorted(paths)
    assert paths == on_disk
    assert all(path.endswith(".png") for path in paths)


def test_file_count_is_classes_times_patients_times_magnifications_times_images(dataset):
    _, paths = dataset
    assert len(paths) == 2 * PATIENTS * len(MAGNIFICATIONS) * IMAGES
    per_folder = collections.Counter(os.path.dirname(path) for path in paths)
    assert len(per_folder) == 2 * PATIENTS * len(MAGNIFICATIONS)
    assert set(per_folder.values()) == {IMAGES}


def test_every_name_parses_and_agrees_with_its_folders(dataset):
    root, paths = dataset
    for relative in _relative(paths, root):
        info = parse_breakhis_name(relative)
        assert info is not None, relative
        parts = pathlib.PurePath(relative).parts
        assert parts[:3] == tuple(pathlib.PurePath(DATASET_SUBDIR).parts)
        label_dir, sob, subtype_dir, patient_dir, magnification_dir, name = parts[3:]
        assert label_dir == info.label
        assert sob == "SOB"
        assert subtype_dir == info.subtype == SUBTYPES[info.subtype_code][0]
        letter = info.label[0].upper()
        assert patient_dir == f"SOB_{letter}_{info.subtype_code}_{info.slide_id}"
        assert magnification_dir == info.magnification
        expected = (
            f"SOB_{letter}_{info.subtype_code}-{info.slide_id}-"
            f"{info.magnification[:-1]}-{info.sequence:03d}.png"
        )
        assert name == expected


def test_sequence_numbers_run_from_one_in_every_folder(dataset):
    _, paths = dataset
    sequences = collections.defaultdict(list)
    for path in paths:
        sequences[os.path.dirname(path)].append(parse_breakhis_name(path).sequence)
    assert all(sorted(seqs) == list(range(1, IMAGES + 1)) for seqs in sequences.values())


def test_patients_cycle_through_the_four_subtypes_of_their_class(tmp_path):
    paths = generate_dataset(
        str(tmp_path),
        patients_per_class=5,
        images_per_magnification=1,
        magnifications=["40X"],
        width=16,
        height=16,
    )
    infos = [parse_breakhis_name(path) for path in paths]
    for class_name in CLASS_NAMES:
        codes = [info.subtype_code for info in infos if info.label == class_name]
        class_codes = [code for code, (_, label) in SUBTYPES.items() if label == class_name]
        # Five patients over four subtypes: each subtype once, the first one twice.
        assert collections.Counter(codes) == collections.Counter(class_codes + class_codes[:1])


def test_slide_ids_are_unique_and_shaped_like_the_dataset(dataset):
    _, paths = dataset
    patients = {(info.label, info.slide_id) for info in map(parse_breakhis_name, paths)}
    slide_ids = [slide_id for _, slide_id in patients]
    assert len(slide_ids) == 2 * PATIENTS
    assert len(set(slide_ids)) == len(slide_ids)
    assert all(re.fullmatch(r"22-\d{5}[A-Z]*", slide_id) for slide_id in slide_ids)


def test_each_class_has_a_specimen_cut_into_two_sections(dataset):
    _, paths = dataset
    sections = collections.defaultdict(set)
    for info in map(parse_breakhis_name, paths):
        sections[(info.label, info.specimen)].add(info.slide_id)
    for class_name in CLASS_NAMES:
        split = [
            ids for (label, _), ids in sections.items() if label == class_name and len(ids) > 1
        ]
        assert len(split) == 1, sections
        assert all(re.fullmatch(r"22-\d{5}[A-Z]{2}", slide_id) for slide_id in split[0])
        assert len(split[0]) == 2
    # A specimen never spans the two classes.
    specimens = [specimen for _, specimen in sections]
    assert len(specimens) == len(set(specimens))


def test_same_seed_writes_identical_bytes(tmp_path):
    kwargs = dict(patients_per_class=2, images_per_magnification=2, width=48, height=32, seed=7)
    first = generate_dataset(str(tmp_path / "a"), **kwargs)
    second = generate_dataset(str(tmp_path / "b"), **kwargs)
    assert _relative(first, tmp_path / "a") == _relative(second, tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert pathlib.Path(a).read_bytes() == pathlib.Path(b).read_bytes()


def test_another_seed_gives_other_patients_and_other_images(tmp_path):
    kwargs = dict(patients_per_class=2, images_per_magnification=2, width=48, height=32)
    first = generate_dataset(str(tmp_path / "a"), seed=0, **kwargs)
    second = generate_dataset(str(tmp_path / "b"), seed=1, **kwargs)
    assert len(first) == len(second)
    first_slides = {parse_breakhis_name(path).slide_id for path in first}
    second_slides = {parse_breakhis_name(path).slide_id for path in second}
    assert first_slides != second_slides
    first_bytes = {pathlib.Path(path).read_bytes() for path in first}
    assert not first_bytes & {pathlib.Path(path).read_bytes() for path in second}


def test_no_two_images_are_identical(dataset):
    _, paths = dataset
    contents = [pathlib.Path(path).read_bytes() for path in paths]
    assert len(set(contents)) == len(contents)


def test_images_are_rgb_pngs_of_the_requested_size(dataset):
    _, paths = dataset
    for path in paths[:: len(paths) // 8]:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.mode == "RGB"
            assert image.size == (WIDTH, HEIGHT)


def test_draw_tile_returns_height_by_width_rgb_uint8():
    tile = draw_tile(np.random.default_rng(0), True, width=120, height=80, magnification="200X")
    assert tile.shape == (80, 120, 3)
    assert tile.dtype == np.uint8
    # Not a flat fill: stroma, gaps and nuclei give a spread of values.
    assert tile.std() > 10


def test_draw_tile_is_a_function_of_the_generator_state():
    first = draw_tile(np.random.default_rng(3), False, 64, 48, "100X")
    same = draw_tile(np.random.default_rng(3), False, 64, 48, "100X")
    other = draw_tile(np.random.default_rng(4), False, 64, 48, "100X")
    assert np.array_equal(first, same)
    assert not np.array_equal(first, other)


def _dark_fraction_and_edges(tile: np.ndarray) -> tuple[float, float]:
    """Fraction of dark (nucleus) pixels, and dark-pixel edges per dark pixel (shrinks as
    nuclei grow, since a larger blob has less outline per area)."""
    dark = tile.astype(np.int32).sum(axis=2) < 420
    edges = (dark[:, 1:] != dark[:, :-1]).sum() + (dark[1:, :] != dark[:-1, :]).sum()
    return float(dark.mean()), float(edges / max(dark.sum(), 1))


def test_malignant_tiles_have_more_and_darker_nuclei_than_benign():
    benign, malignant = [], []
    for seed in range(6):
        for magnification in MAGNIFICATIONS:
            benign.append(draw_tile(np.random.default_rng(seed), False, 350, 230, magnification))
            malignant.append(draw_tile(np.random.default_rng(seed), True, 350, 230, magnification))
    benign_dark = np.mean([_dark_fraction_and_edges(tile)[0] for tile in benign])
    malignant_dark = np.mean([_dark_fraction_and_edges(tile)[0] for tile in malignant])
    assert malignant_dark > 3 * benign_dark
    assert np.mean([tile.mean() for tile in malignant]) < np.mean([t.mean() for t in benign]) - 15


def test_higher_magnification_draws_larger_nuclei():
    # The darkest nuclei of both classes are counted, so compare like with like: malignant.
    outline_per_area = {
        magnification: np.mean(
            [
                _dark_fraction_and_edges(
                    draw_tile(np.random.default_rng(seed), True, 350, 230, magnification)
                )[1]
                for seed in range(4)
            ]
        )
        for magnification in MAGNIFICATIONS
    }
    ordered = [outline_per_area[magnification] for magnification in MAGNIFICATIONS]
    assert ordered == sorted(ordered, reverse=True), outline_per_area
    assert ordered[0] > 2 * ordered[-1]


def test_colour_statistics_of_32px_inputs_separate_the_classes(dataset, tmp_path):
    # A learnability proxy without TensorFlow: if four colour statistics of the downscaled model
    # input separate the classes linearly, a small CNN at 32x32 can learn them too.
    _, paths = dataset
    features = np.array([_nucleus_features(path) for path in paths])
    labels = np.array([parse_breakhis_name(path).label_index for path in paths])
    classifier = LogisticRegression(C=100.0, max_iter=2000).fit(features, labels)
    assert classifier.score(features, labels) > 0.9

    # And it carries over to new patients drawn with another seed.
    held_out = generate_dataset(
        str(tmp_path),
        patients_per_class=2,
        images_per_magnification=2,
        width=WIDTH,
        height=HEIGHT,
        seed=1,
    )
    held_features = np.array([_nucleus_features(path) for path in held_out])
    held_labels = np.array([parse_breakhis_name(path).label_index for path in held_out])
    assert classifier.score(held_features, held_labels) > 0.85


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patients_per_class": 0}, "at least 1"),
        ({"images_per_magnification": 0}, "at least 1"),
        ({"magnifications": ["50X"]}, "subset"),
        ({"magnifications": []}, "subset"),
        ({"magnifications": ["40X", "40X"]}, "repeat"),
    ],
)
def test_invalid_arguments_are_rejected_before_writing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(str(tmp_path / "out"), width=16, height=16, **kwargs)
    assert not (tmp_path / "out").exists()


def test_draw_tile_rejects_an_unknown_magnification():
    with pytest.raises(ValueError, match="magnification"):
        draw_tile(np.random.default_rng(0), False, 32, 32, "50X")


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "model.synthetic_data", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_the_requested_dataset_and_logs_a_summary(tmp_path):
    result = _run_cli(
        "--output_dir",
        str(tmp_path),
        "--patients_per_class",
        "2",
        "--images_per_magnification",
        "2",
        "--magnifications",
        "40X",
        "400X",
        "--width",
        "64",
        "--height",
        "48",
        "--seed",
        "3",
    )
    assert result.returncode == 0, result.stderr
    written = sorted(str(path) for path in tmp_path.rglob("*.png"))
    assert len(written) == 2 * 2 * 2 * 2
    assert {parse_breakhis_name(path).magnification for path in written} == {"40X", "400X"}
    with Image.open(written[0]) as image:
        assert image.size == (64, 48)
    assert "wrote 16 synthetic 64x48 images" in result.stderr
    # The CLI and the library draw the same bytes for the same flags.
    library = generate_dataset(
        str(tmp_path / "library"),
        patients_per_class=2,
        images_per_magnification=2,
        magnifications=["40X", "400X"],
        width=64,
        height=48,
        seed=3,
    )
    assert [pathlib.Path(path).read_bytes() for path in library] == [
        pathlib.Path(path).read_bytes() for path in written
    ]


def test_cli_help_documents_every_flag_and_default():
    result = _run_cli("--help")
    assert result.returncode == 0
    for flag in (
        "--output_dir",
        "--patients_per_class",
        "--images_per_magnification",
        "--magnifications",
        "--width",
        "--height",
        "--seed",
    ):
        assert flag in result.stdout
    for default in ("default: 4", "default: 6", "default: 700", "default: 460", "default: 0"):
        assert default in result.stdout


def test_cli_rejects_a_tile_too_small_with_a_message(tmp_path):
    result = _run_cli("--output_dir", str(tmp_path), "--width", "4")
    assert result.returncode == 2
    assert "--width and --height must be at least 8" in result.stderr
    assert not any(tmp_path.iterdir())
