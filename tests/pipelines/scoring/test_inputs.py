"""MatchImages and manifests: patterns expand on a worker into distinct image paths."""

from __future__ import annotations

import os

import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.scoring.inputs import (
    MatchImages,
    is_manifest,
    normalize_pattern,
    read_manifest,
    read_manifest_header,
    resolve_entry,
)


@pytest.fixture()
def image_tree(tmp_path):
    """a/x.png, a/b/y.jpg, a/b/c/x.png, a/readme.md, other/z.tif."""
    files = ["a/x.png", "a/b/y.jpg", "a/b/c/x.png", "a/readme.md", "other/z.tif"]
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path


def _expand(patterns, output_dir="/nonexistent/out"):
    """MatchImages over the normalised patterns, as the job applies it."""
    return MatchImages([normalize_pattern(pattern) for pattern in patterns], output_dir)


def test_double_star_crosses_folders_and_skips_non_images(image_tree):
    root = str(image_tree)
    with test_pipeline.TestPipeline() as pipeline:
        matches = pipeline | _expand([os.path.join(root, "a", "**")])
        assert_that(
            matches["images"],
            equal_to([f"{root}/a/x.png", f"{root}/a/b/y.jpg", f"{root}/a/b/c/x.png"]),
            label="Images",
        )
        assert_that(matches["skipped"], equal_to([f"{root}/a/readme.md"]), label="Skipped")


def test_single_star_stays_in_its_folder_and_overlaps_are_scored_once(image_tree):
    root = str(image_tree)
    with test_pipeline.TestPipeline() as pipeline:
        matches = pipeline | _expand(
            [os.path.join(root, "a", "*.png"), os.path.join(root, "a", "x.png"), root + "/other"]
        )
        assert_that(matches["images"], equal_to([f"{root}/a/x.png", f"{root}/other/z.tif"]))


def test_manifest_entries_resolve_against_the_manifest_folder(image_tree):
    root = str(image_tree)
    manifest = image_tree / "lists" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "\ufeffimage_path,label\n"  # a BOM, as spreadsheet exports write
        "../a/x.png,benign\n"
        f"{root}/a/b/y.jpg,malignant\n"
        ",blank entries are skipped\n"
        '"../a/b/c/x.png","quoted, with comma"\n'
        "missing.png,listed but absent\n"
    )
    assert is_manifest(str(manifest))
    assert read_manifest_header(str(manifest)) == (["image_path", "label"], True)
    expected = [
        f"{root}/a/x.png",
        f"{root}/a/b/y.jpg",
        f"{root}/a/b/c/x.png",
        f"{root}/lists/missing.png",  # kept: the scorer reports it as an error
    ]
    assert list(read_manifest(str(manifest))) == expected
    with test_pipeline.TestPipeline() as pipeline:
        matches = pipeline | _expand([str(manifest)])
        assert_that(matches["images"], equal_to(expected), label="Images")
        assert_that(matches["skipped"], equal_to([]), label="Skipped")


def test_manifest_without_image_path_column_is_rejected(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\nx.png\n")
    with pytest.raises(ValueError, match="image_path"):
        list(read_manifest(str(manifest)))


def test_patterns_are_normalised_to_absolute_recursive_forms(image_tree, monkeypatch):
    monkeypatch.chdir(image_tree)
    assert normalize_pattern("a") == os.path.join(str(image_tree), "a", "**")
    assert normalize_pattern("a/*.png") == os.path.join(str(image_tree), "a", "*.png")
    assert normalize_pattern("gs://bucket/images/") == "gs://bucket/images/**"
    assert normalize_pattern("gs://bucket/images/*.png") == "gs://bucket/images/*.png"
    assert not is_manifest("gs://bucket/lists/*.csv")  # a glob of CSVs is not one manifest


def test_remote_manifest_entries_resolve_within_the_bucket():
    assert resolve_entry("gs://b/lists/m.csv", "../img/x.png") == "gs://b/img/x.png"
    assert resolve_entry("gs://b/lists/m.csv", "gs://c/y.png") == "gs://c/y.png"
    assert resolve_entry("/data/lists/m.csv", "/abs/z.png") == "/abs/z.png"


def test_every_glob_match_lands_in_exactly_one_output(image_tree):
    root = str(image_tree)
    output_dir = image_tree / "a" / "scores"
    (output_dir / "heatmaps").mkdir(parents=True)
    (output_dir / "heatmaps" / "x-0123456789abcdef.png").write_bytes(b"x")
    (output_dir / "summary.json").write_bytes(b"{}")
    invalid = os.fsencode(image_tree / "a") + b"/\xff.png"
    with open(invalid, "wb") as handle:
        handle.write(b"x")
    os.symlink(image_tree / "nowhere.png", image_tree / "a" / "dangling.png")
    with test_pipeline.TestPipeline() as pipeline:
        matches = pipeline | _expand([os.path.join(root, "a", "**")], str(output_dir))
        assert_that(
            matches["images"],
            equal_to(
                [f"{root}/a/x.png", f"{root}/a/b/y.jpg", f"{root}/a/b/c/x.png"]
                + [f"{root}/a/dangling.png"]  # listed, so the scorer reports it
            ),
            label="Images",
        )
        assert_that(matches["invalid_names"], equal_to([f"{root}/a/\\xff.png"]), label="Invalid")
        assert_that(matches["skipped"], equal_to([f"{root}/a/readme.md"]), label="Skipped")
        assert_that(
            matches["excluded"],
            equal_to(
                [f"{output_dir}/heatmaps/x-0123456789abcdef.png", f"{output_dir}/summary.json"]
            ),
            label="Excluded",
        )
