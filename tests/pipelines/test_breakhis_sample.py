"""Scoring the real BreakHis sample with a model briefly trained on synthetic tiles."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from tests.pipelines.conftest import IMAGE_SIZE, load_inputs, run_scoring
from tests.pipelines.helpers import prediction_rows, read_csv, read_json


@pytest.fixture(scope="module")
def synthetic_trained_export(tmp_path_factory, scoring_inputs) -> str:
    """A 32x32 classifier fit for two steps on the synthetic tiles, exported."""
    import keras

    from model.network.architecture import build_classifier
    from model.network.model_card import ModelCard
    from train_job.export.files import write_export

    keras.utils.set_random_seed(1)
    images = load_inputs(scoring_inputs.labelled)
    labels = np.array([float("/malignant/" in path) for path in scoring_inputs.labelled])
    model = build_classifier(IMAGE_SIZE, weights="none", dense_units=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="binary_crossentropy")
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    export_dir = tmp_path_factory.mktemp("synthetic_trained_export")
    card = ModelCard(model_id="synthetic-trained", image_size=IMAGE_SIZE, threshold=0.5)
    write_export(model, card, str(export_dir))
    return str(export_dir)


def test_every_real_image_is_scored_with_its_breakhis_fields(
    breakhis_sample, synthetic_trained_export, tmp_path
):
    manifest = read_csv(str(breakhis_sample / "MANIFEST.csv"))
    output_dir = tmp_path / "out"
    run_scoring(
        [
            "--input",
            str(breakhis_sample),  # a folder: scored recursively, README/MANIFEST skipped
            "--model_dir",
            synthetic_trained_export,
            "--output_dir",
            str(output_dir),
            "--batch_size",
            "64",
        ]
    )
    rows = {
        os.path.relpath(row["image_path"], breakhis_sample): row
        for row in prediction_rows(str(output_dir))
    }
    assert read_csv(str(output_dir / "errors.csv")) == []
    assert sorted(rows) == sorted(entry["relative_path"] for entry in manifest)
    for entry in manifest:
        row = rows[entry["relative_path"]]
        assert (row["true_label"], row["patient_id"], row["magnification"], row["subtype"]) == (
            entry["label"],
            entry["patient"],
            entry["magnification"],
            entry["subtype"],
        )
        with Image.open(row["heatmap_path"]) as heatmap:
            assert heatmap.size == (int(entry["width"]), int(entry["height"]))

    summary = read_json(str(output_dir / "summary.json"))
    assert summary["inputs_matched"] == summary["scored"] == len(manifest)
    assert summary["non_image_files_skipped"] == 2  # README.md and MANIFEST.csv
    report = read_json(str(output_dir / "metrics.json"))
    assert report["counts"]["images"] == len(manifest)
    assert report["counts"]["patients"] == len({entry["patient"] for entry in manifest})
    assert set(report["image_level"]["by_magnification"]) == {"40X", "100X", "200X", "400X"}
