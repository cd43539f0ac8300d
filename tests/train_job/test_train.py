"""The real train() on tiny synthetic data: export, evaluation, resume, distribution, gs://."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from model.image.preprocessing import preprocess_image
from model.network.model_card import load_exported_model, read_model_card
from train_job.config import FROM_SCRATCH_LEARNING_RATE, TrainConfig
from train_job.train import train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# The shared run (conftest `trained`): phase 1 may stop early (patience 1), so the resume tests,
# which compare against it, cover the early-stopping state too. (4 epochs: since --weights none
# trains every layer in phase 1, its validation AUC first falls at epoch 3.)
SHARED_RUN = {"epochs": 4, "fine_tune_epochs": 2, "patience": 1}


def tiny_config(data_dir, output_dir, **overrides) -> TrainConfig:
    """32x32 input, random init, a couple of epochs: seconds, not minutes."""
    values = dict(
        data_dir=str(data_dir),
        output_dir=str(output_dir),
        image_size=32,
        weights="none",
        batch_size=8,
        dense_units=16,
        epochs=2,
        fine_tune_epochs=1,
        fine_tune_from="block5",
        val_fraction=0.2,
        test_fraction=0.2,
        patience=10,
        seed=1,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_train_exports_a_reloadable_model_with_its_card(trained):
    result, output_dir = trained
    for name in (
        "model.keras",
        "model_card.json",
        "metrics.json",
        "split.csv",
        "plots/roc.png",
        "plots/pr.png",
        "plots/confusion_matrix.png",
        "plots/training_curves.png",
        "saved_model/saved_model.pb",
    ):
        assert (output_dir / name).is_file(), name
    model, card = load_exported_model(str(output_dir))
    assert card.image_size == 32 and card.class_names == ["benign", "malignant"]
    assert card.threshold == pytest.approx(result.threshold) and 0 <= card.threshold <= 1
    assert card.last_conv_layer == "block5_conv3"
    model.get_layer(card.last_conv_layer)
    assert card.training_config["replicas"] == 1 and card.training_config["global_batch_size"] == 8
    flags = {field.name for field in dataclasses.fields(TrainConfig)}
    assert flags <= set(card.training_config) and "stop_after_epochs" not in card.training_config
    assert card.test_metrics == json.loads((output_dir / "metrics.json").read_text())
    assert set(card.versions) >= {"tensorflow", "keras", "apache_beam"}
    # The reloaded model scores exactly like the trained one did on the test split.
    rows = [r for r in csv.DictReader(open(output_dir / "split.csv")) if r["split"] == "test"]
    batch = np.stack([preprocess_image(open(r["image_path"], "rb").read(), 32) for r in rows])
    reloaded = model.predict(batch, verbose=0).ravel()
    labels = np.array([r["label"] == "malignant" for r in rows], int)
    predicted = (reloaded >= card.threshold).astype(int)
    pooled = card.test_metrics["image_level"]["pooled"]
    assert pooled["n"] == len(rows)
    assert pooled["accuracy"] == pytest.approx(float(np.mean(predicted == labels)), abs=1e-6)


def test_saved_model_signature_takes_rgb_images(trained):
    import tensorflow as tf

    _, output_dir = trained
    model, _ = load_exported_model(str(output_dir))
    loaded = tf.saved_model.load(str(output_dir / "saved_model"))
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    served = loaded.signatures["serving_default"](images=tf.constant(images))["p_malignant"]
    from model.image.preprocessing import normalize

    expected = model.predict(normalize(images), verbose=0).ravel()
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-5)


def test_split_csv_keeps_specimens_on_one_side_and_covers_all_images(trained, synthetic_data_dir):
    _, output_dir = trained
    rows = list(csv.DictReader(open(output_dir / "split.csv")))
    assert len(rows) == len(list(synthetic_data_dir.rglob("*.png")))
    sides: dict[str, set] = {}
    for row in rows:
        sides.setdefault(row["specimen"], set()).add(row["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert {row["split"] for row in rows} == {"train", "validation", "test"}


def test_metrics_report_patient_level_and_baseline(trained):
    _, output_dir = trained
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert set(metrics["image_level"]["by_magnification"]) == {"40X", "100X"}
    assert metrics["patient_level"]["pooled"]["n"] == metrics["counts"]["patients"]
    baseline = metrics["baseline"]["image_level"]["pooled"]
    n_benign = metrics["image_level"]["pooled"]["n_benign"]
    n_malignant = metrics["image_level"]["pooled"]["n_malignant"]
    assert baseline["accuracy"] == pytest.approx(
        max(n_benign, n_malignant) / (n_benign + n_malignant)
    )


def test_history_has_both_phases(trained):
    result, output_dir = trained
    phase1, phase2 = result.epochs_run["phase1"], result.epochs_run["phase2"]
    assert 1 <= phase1 <= SHARED_RUN["epochs"] and phase2 == SHARED_RUN["fine_tune_epochs"]
    assert len(result.history["loss"]) == phase1 + phase2
    assert result.history["phase_boundary"] == phase1
    assert json.loads((output_dir / "history.json").read_text()) == result.history


@pytest.mark.slow
def test_mirrored_strategy_over_two_cpu_devices(synthetic_data_dir, tmp_path):
    script = f"""
import json, sys
sys.path.insert(0, {REPO_ROOT!r})
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests.train_job.test_train import tiny_config
from train_job.train import train
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = train(tiny_config({str(synthetic_data_dir)!r}, {str(tmp_path)!r}, epochs=1,
                           fine_tune_epochs=0), strategy=strategy)
print("RESULT", json.dumps({{"replicas": result.replicas}}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT"))
    assert json.loads(line.split(" ", 1)[1])["replicas"] == 2
    card = read_model_card(str(tmp_path))
    assert card.training_config["replicas"] == 2
    assert card.training_config["global_batch_size"] == 16
    # tiny_config trains from scratch: the per-replica default times 2 replicas.
    assert card.training_config["effective_learning_rate"] == pytest.approx(
        2 * FROM_SCRATCH_LEARNING_RATE
    )
    # The stain jitter (on by default) ran in the distributed input, every layer trained.
    assert card.training_config["stain_jitter"] > 0 and card.training_config["from_scratch"]


@pytest.mark.slow
def test_training_report_shows_the_test_metrics_and_a_gallery(trained):
    from tests.browser import broken_images, find_chromium, inspect_page

    _, output_dir = trained
    html = (output_dir / "report.html").read_text()
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert "Grad-CAM" in html and "report_assets/000_overlay.png" in html
    assert (output_dir / "report_assets" / "000_overlay.png").is_file()
    if find_chromium() is None:
        pytest.skip("no Chromium binary to render the report")
    page = inspect_page(str(output_dir / "report.html"))
    assert page["images"] and not broken_images(page)
    shown = page["metrics"]["image_level.pooled.accuracy"]
    assert shown == f"{metrics['image_level']['pooled']['accuracy']:.4f}"


@pytest.mark.slow
def test_mixed_precision_exports_a_float32_scorer(synthetic_data_dir, tmp_path):
    import keras

    from model.network.gradcam import gradcam_model, predict_with_gradcam

    train(
        tiny_config(
            synthetic_data_dir, tmp_path, epochs=1, fine_tune_epochs=0, mixed_precision=True
        )
    )
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    model, card = load_exported_model(str(tmp_path))
    assert model.get_layer("block1_conv1").dtype_policy.name == "mixed_float16"
    images = np.zeros((2, 32, 32, 3), np.float32)
    for tta in (1, 8):
        p, p_std, heatmaps = predict_with_gradcam(gradcam_model(model), images, tta)
        assert p.dtype == p_std.dtype == heatmaps.dtype == np.float32
        assert np.isfinite(p).all() and np.isfinite(p_std).all() and np.isfinite(heatmaps).all()


def test_threshold_rule_warns_when_validation_has_few_patients(trained):
    result, output_dir = trained
    card = read_model_card(str(output_dir))
    rows = [r for r in csv.DictReader(open(output_dir / "split.csv")) if r["split"] == "validation"]
    benign = {r["slide_id"] for r in rows if r["label"] == "benign"}
    malignant = {r["slide_id"] for r in rows if r["label"] == "malignant"}
    few = min(len(benign), len(malignant)) < 3
    assert ("Caution" in card.threshold_rule) == few
    assert few  # 5 patients a class: the tiny split leaves one or two per class for validation


def test_validation_caution_names_the_classes_with_few_patients():
    from train_job.export.evaluation import few_validation_patients

    def rows(benign: int, malignant: int) -> list[dict]:
        return [{"slide_id": f"b{i}", "label": "benign"} for i in range(benign)] + [
            {"slide_id": f"m{i}", "label": "malignant"} for i in range(malignant)
        ]

    assert few_validation_patients(rows(3, 4)) == ""
    caution = few_validation_patients(rows(1, 5))
    assert "only 1 benign patient" in caution and "malignant" not in caution


def test_card_records_training_sizes_and_what_each_quality_flag_would_have_caught(trained):
    from model.image.preprocessing import measure_image
    from model.image.quality import count_flags, quality_flags, size_range

    _, output_dir = trained
    card = read_model_card(str(output_dir))
    with open(output_dir / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    measured = {
        row["image_path"]: measure_image(open(row["image_path"], "rb").read()) for row in rows
    }
    sizes = size_range(
        (m.width, m.height) for path, m in measured.items() if _split_of(rows, path) == "train"
    )
    assert card.training_image_sizes == sizes.to_card()
    assert sizes.images == sum(row["split"] == "train" for row in rows)
    by_split = card.data_summary["quality_control"]["by_split"]
    assert set(by_split) == {"train", "validation", "test"}
    for split, counts in by_split.items():
        expected = count_flags(
            quality_flags(measured[row["image_path"]], sizes)
            for row in rows
            if row["split"] == split
        )
        assert counts == expected, split
    assert sum(counts["flags"]["out_of_focus"] for counts in by_split.values()) > 0


def _split_of(rows, path: str) -> str:
    return next(row["split"] for row in rows if row["image_path"] == path)


def _split_rows(output_dir, split: str) -> list[dict]:
    return [r for r in csv.DictReader(open(output_dir / "split.csv")) if r["split"] == split]


def test_the_card_records_one_view_and_the_validation_heatmap_scale(trained):
    from train_job.heatmap_scale import export_heatmap_scale

    _, output_dir = trained
    card = read_model_card(str(output_dir))
    assert card.eval_tta == 1 and card.training_config["eval_tta"] == 1
    # The scale is the 95th percentile of the exported model's malignant-map peaks on the
    # validation split: the tool for older exports recomputes the same number from split.csv.
    _, recomputed, images = export_heatmap_scale(str(output_dir))
    assert images == len(_split_rows(output_dir, "validation"))
    assert card.heatmap_scale is not None and card.heatmap_scale > 0
    assert card.heatmap_scale == pytest.approx(recomputed, rel=1e-5)


@pytest.mark.slow
def test_eval_tta_chooses_the_threshold_and_scores_the_test_split_on_view_averaged_p(
    synthetic_data_dir, tmp_path
):
    from model.evaluation.labels import label_index
    from model.evaluation.metrics import choose_threshold
    from model.network.tta import logit_model, predict_with_tta

    result = train(
        tiny_config(synthetic_data_dir, tmp_path, epochs=2, fine_tune_epochs=0, eval_tta=4)
    )
    model, card = load_exported_model(str(tmp_path))
    assert card.eval_tta == 4 and card.training_config["eval_tta"] == 4
    logits_of = logit_model(model, card.logit_layer)  # the calibrated logit

    def view_p(rows):
        images = np.stack([preprocess_image(open(r["image_path"], "rb").read(), 32) for r in rows])
        return predict_with_tta(logits_of, images, 4)[0].astype(np.float64)

    validation = _split_rows(tmp_path, "validation")
    threshold, _ = choose_threshold(
        [label_index(r["label"]) for r in validation], view_p(validation)
    )
    assert card.threshold == pytest.approx(threshold, abs=1e-6)
    test = _split_rows(tmp_path, "test")
    p = view_p(test)
    single = model.predict(
        np.stack([preprocess_image(open(r["image_path"], "rb").read(), 32) for r in test]),
        verbose=0,
    ).ravel()
    assert np.abs(p - single).max() > 1e-4, "four views give another p than one"
    labels = np.array([label_index(r["label"]) for r in test])
    pooled = result.test_metrics["image_level"]["pooled"]
    assert pooled["accuracy"] == pytest.approx(float(np.mean((p >= card.threshold) == labels)))
    assert pooled["brier"] == pytest.approx(float(np.mean((p - labels) ** 2)), abs=1e-6)
