"""The model card is the export's completion mark: written last, only after all else worked."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from model import storage
from model.atomic import replace_file
from model.constants import MODEL_CARD_FILE
from model.network.model_card import load_exported_model, read_model_card
from pipelines.launch.checks import LaunchError
from pipelines.launch.model_checks import check_model_export
from tests.train_job.run_state.test_resume import KillAfterEpochs, Killed
from tests.train_job.test_train import tiny_config
from train_job import heatmap_scale
from train_job.export import files as export
from train_job.run_state.checkpoint import CHECKPOINT_DIR, STATE_FILE
from train_job.train import train


@pytest.mark.slow
def test_a_training_failing_after_model_keras_leaves_no_card(
    synthetic_data_dir, tmp_path, monkeypatch
):
    config = tiny_config(synthetic_data_dir, tmp_path, epochs=1, fine_tune_epochs=0)

    def failing_report(work_dir, *args, **kwargs):
        assert (tmp_path / "model.keras").is_file()  # the model is written by now
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    monkeypatch.setattr("train_job.export.outputs.write_training_report", failing_report)
    with pytest.raises(UnicodeEncodeError):
        train(config)
    assert (tmp_path / "model.keras").is_file()
    assert not (tmp_path / MODEL_CARD_FILE).exists()
    with pytest.raises(LaunchError, match="not a complete training export: missing "):
        check_model_export(str(tmp_path))
    # The training itself is kept: the rerun only writes the export.
    monkeypatch.undo()
    result = train(config)
    assert result.epochs_run == {"phase1": 0}
    assert check_model_export(str(tmp_path)).image_size == 32


@pytest.mark.slow
def test_a_gs_run_resumes_from_its_bucket_and_uploads_the_card_last(
    gcs_emulator, synthetic_data_dir, monkeypatch
):
    data_dir = f"{gcs_emulator}/resume-data"
    storage.upload_dir(str(synthetic_data_dir), data_dir)
    output_dir = f"{gcs_emulator}/resume-export"
    config = tiny_config(data_dir, output_dir, epochs=2, fine_tune_epochs=0)
    with pytest.raises(Killed):
        train(config, callbacks=[KillAfterEpochs(1)])
    assert storage.exists(f"{output_dir}/{CHECKPOINT_DIR}/{STATE_FILE}")
    assert not storage.exists(f"{output_dir}/{MODEL_CARD_FILE}")

    written = []
    write_bytes = storage.write_bytes

    def recording_write(path, content):
        written.append(path)
        write_bytes(path, content)

    monkeypatch.setattr(storage, "write_bytes", recording_write)
    result = train(config)
    assert result.epochs_run == {"phase1": 1}
    exported = [path for path in written if f"/{CHECKPOINT_DIR}/" not in path]
    assert exported[-1] == f"{output_dir}/{MODEL_CARD_FILE}"
    assert f"{output_dir}/model.keras" in exported[:-1]
    assert not storage.list_files(f"{output_dir}/{CHECKPOINT_DIR}")
    for name in ("metrics.json", "split.csv", "report.html", "plots/roc.png", "history.json"):
        assert f"{output_dir}/{name}" in exported, name
    model, card = load_exported_model(output_dir)
    assert model.output_shape == (None, 1) and card == check_model_export(output_dir)
    split = storage.read_text(f"{output_dir}/split.csv").splitlines()
    assert split[1].split(",")[0].startswith(f"{data_dir}/")


def test_a_replaced_file_keeps_its_old_content_when_the_write_fails(tmp_path):
    target = tmp_path / "state.bin"
    replace_file(str(target), lambda stream: stream.write(b"old"))
    assert (target.stat().st_mode & 0o777) == 0o666 & ~_umask()  # not mkstemp's 0600

    def failing(stream):
        stream.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_file(str(target), failing)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.bin"]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_the_heatmap_tool_names_the_export_split_file():
    assert heatmap_scale.SPLIT_FILE == export.SPLIT_FILE


def test_the_heatmap_tool_records_the_scale_in_an_older_exports_card(trained, tmp_path, capsys):
    _, output_dir = trained
    older = tmp_path / "older"
    shutil.copytree(output_dir, older)
    card = json.loads((older / "model_card.json").read_text())
    expected = card.pop("heatmap_scale")
    (older / "model_card.json").write_text(json.dumps(card))
    assert read_model_card(str(older)).heatmap_scale is None

    assert heatmap_scale.main(["--model_dir", str(older), "--write_card"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["heatmap_scale"] == pytest.approx(expected, rel=1e-5)
    updated = read_model_card(str(older))
    assert updated.heatmap_scale == printed["heatmap_scale"]
    assert updated.model_id == card["model_id"] and updated.threshold == card["threshold"]
    (older / "split.csv").unlink()
    assert heatmap_scale.main(["--model_dir", str(older)]) == 2
    assert capsys.readouterr().err == f"error: --model_dir {older} has no split.csv\n"


def test_the_heatmap_tool_says_which_image_is_missing_and_leaves_the_card(
    trained, tmp_path, capsys
):
    _, output_dir = trained
    older = tmp_path / "older"
    shutil.copytree(output_dir, older)
    card_text = (older / "model_card.json").read_text()
    split = (older / "split.csv").read_text()
    moved = next(line.split(",")[0] for line in split.splitlines() if ",validation," in line)
    (older / "split.csv").write_text(split.replace(moved, moved + ".moved"))
    assert heatmap_scale.main(["--model_dir", str(older), "--write_card"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {older}: ") and error.count("\n") == 1
    assert moved + ".moved" in error
    assert (older / "model_card.json").read_text() == card_text
