"""What --restart removes, by the earlier run's records, and the files it keeps."""

from __future__ import annotations

import json
import logging

import pytest

from model.network.model_card import ModelCard
from tests.train_job.test_train import tiny_config
from train_job.export.files import files_written
from train_job.launch_checks import LaunchError
from train_job.run_state.checkpoint import Checkpoints
from train_job.run_state.earlier_export import earlier_export, remove_earlier_export
from train_job.run_state.rerun import check_earlier_run

EXPORT = [
    "model.keras",
    "metrics.json",
    "report.html",
    "plots/roc.png",
    "report_assets/000_overlay.png",
    "saved_model/saved_model.pb",
    "logs/phase1/events.out.tfevents.1.host",
]
# A user's files named like the training job's (the old name rule deleted every one of them).
USERS_LOOKALIKES = [
    "logs/phase1/notes.txt",
    "report_assets/999_overlay.png",
    "saved_model/README.txt",
]
USERS_OTHERS = ["notes.txt", "checkpoints/mine.txt", "plots/mine.png"]


def _write(folder, names, text="ours"):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{text} {name}")


def _files(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _card(folder, export_files, model_id="abc123"):
    card = ModelCard(
        model_id=model_id,
        image_size=32,
        threshold=0.5,
        created_at="2026-12-01T10:00:00+00:00",
        export_files=export_files,
    )
    (folder / "model_card.json").write_text(card.to_json())


@pytest.fixture
def export_with_users_files(tmp_path):
    """A complete export whose card lists its files, and a user's files beside them."""
    _write(tmp_path, EXPORT)
    _card(tmp_path, EXPORT)
    _write(tmp_path, USERS_LOOKALIKES + USERS_OTHERS, text="the user's")
    return tmp_path


def test_a_complete_export_loses_exactly_its_listed_files(export_with_users_files, caplog):
    folder = export_with_users_files
    earlier = earlier_export(str(folder), Checkpoints(str(folder)))
    assert earlier.files[0] == "model_card.json"  # the completion mark goes first
    assert set(earlier.files) == {"model_card.json", *EXPORT}
    assert set(earlier.kept) == set(USERS_LOOKALIKES) and not earlier.by_name
    assert earlier.run == "export abc123 (created 2026-12-01T10:00:00+00:00)"
    with caplog.at_level(logging.INFO):
        remove_earlier_export(str(folder), earlier)
    assert _files(folder) == set(USERS_LOOKALIKES + USERS_OTHERS)
    for name in USERS_LOOKALIKES + USERS_OTHERS:
        assert (folder / name).read_text() == f"the user's {name}"
    said = [record.getMessage() for record in caplog.records]
    assert any(
        "deleting 8 files (model_card.json, logs/phase1/events.out.tfevents.1.host, "
        "metrics.json and 5 more) of export abc123 (created 2026-12-01T10:00:00+00:00)" in line
        for line in said
    ), said
    assert any("keeping 3 files" in line for line in said)
    assert not any(record.levelno >= logging.WARNING for record in caplog.records)
    assert not (folder / "plots" / "roc.png").exists() and (folder / "plots").is_dir()


def test_checkpoints_left_beside_a_complete_export_go_with_it(export_with_users_files):
    # A kill between the card and the checkpoints' removal leaves both.
    folder = export_with_users_files
    _write(folder, ["checkpoints/run.json", "checkpoints/state.npz", "checkpoints/.state.npz.x"])
    earlier = earlier_export(str(folder), Checkpoints(str(folder)))
    remove_earlier_export(str(folder), earlier)
    assert _files(folder) == set(USERS_LOOKALIKES + USERS_OTHERS)


def _record_run(folder, foreign):
    Checkpoints(str(folder)).record_run({"seed": 1}, 1, "image_path,split\n", foreign)


def test_an_interrupted_run_loses_what_appeared_since_its_launch(tmp_path):
    _write(tmp_path, USERS_LOOKALIKES + USERS_OTHERS, text="the user's")
    _record_run(tmp_path, foreign=USERS_LOOKALIKES)
    partial = ["logs/phase1/events.out.tfevents.2.host", "model.keras", "saved_model/x.pb"]
    _write(tmp_path, [*partial, "checkpoints/state.npz"])
    recorded = json.loads((tmp_path / "checkpoints" / "run.json").read_text())
    earlier = earlier_export(str(tmp_path), Checkpoints(str(tmp_path)))
    assert earlier.run == f"an interrupted run started {recorded['started_at']}"
    assert earlier.files[-1] == "checkpoints/run.json"  # last: a cut removal stays exact
    assert set(earlier.files) == {
        *partial,
        "checkpoints/state.npz",
        "checkpoints/split.csv",
        "checkpoints/run.json",
    }
    remove_earlier_export(str(tmp_path), earlier)
    assert _files(tmp_path) == set(USERS_LOOKALIKES + USERS_OTHERS)


def test_a_folder_without_records_keeps_the_name_rule_with_a_warning(tmp_path, caplog):
    _write(tmp_path, EXPORT)
    _card(tmp_path, export_files=[])  # a card from before cards listed their files
    _write(tmp_path, USERS_LOOKALIKES + USERS_OTHERS, text="the user's")
    earlier = earlier_export(str(tmp_path), Checkpoints(str(tmp_path)))
    assert earlier.by_name and earlier.run.startswith("export abc123")
    with caplog.at_level(logging.INFO):
        remove_earlier_export(str(tmp_path), earlier)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "found by name" in warnings[0]
    assert _files(tmp_path) == set(USERS_OTHERS)  # the lookalikes go too, as warned


def test_an_unreadable_card_is_removed_by_name(tmp_path):
    _write(tmp_path, EXPORT)
    (tmp_path / "model_card.json").write_text("{not json")
    earlier = earlier_export(str(tmp_path), Checkpoints(str(tmp_path)))
    assert earlier.by_name and earlier.files[0] == "model_card.json"
    assert earlier.run == "an earlier run"


def test_an_empty_folder_has_no_earlier_run(tmp_path):
    _write(tmp_path, USERS_OTHERS)
    assert earlier_export(str(tmp_path), Checkpoints(str(tmp_path))) is None
    assert earlier_export(str(tmp_path / "missing"), Checkpoints(str(tmp_path))) is None


def test_the_card_lists_what_the_run_wrote_and_not_what_was_there(tmp_path):
    _write(tmp_path, [*EXPORT, "checkpoints/state.npz", ".model_card.json.tmp"])
    _write(tmp_path, USERS_LOOKALIKES + USERS_OTHERS, text="the user's")
    foreign = [*USERS_LOOKALIKES, "metrics.json"]  # metrics.json: a fixed name it rewrote
    assert files_written(str(tmp_path), foreign) == sorted(EXPORT)


def test_lookalike_files_without_records_stop_a_run_without_restart(tmp_path, no_decoding):
    output_dir = tmp_path / "out"
    _write(output_dir, ["metrics.json", "report.html", "logs/phase1/notes.txt", "model.keras"])
    config = tiny_config(tmp_path / "data", output_dir)
    checkpoints = Checkpoints(str(output_dir))
    with pytest.raises(LaunchError) as refused:
        check_earlier_run(config, checkpoints)
    message = str(refused.value)
    assert "holds 4 files (logs/phase1/notes.txt, metrics.json, model.keras and 1 more)" in message
    assert "training would overwrite them" in message and "--restart" in message
    assert check_earlier_run(config, checkpoints, restarted=True) is None
    _write(tmp_path / "one", ["metrics.json"])
    with pytest.raises(LaunchError) as refused:
        check_earlier_run(
            tiny_config(tmp_path / "data", tmp_path / "one"), Checkpoints(str(tmp_path / "one"))
        )
    assert "holds 1 file (metrics.json)" in str(refused.value)
    assert "would overwrite it; move it, " in str(refused.value)
    # The job's own bookkeeping (a record cut by a kill) is not a user's file.
    _write(tmp_path / "out2", ["checkpoints/split.csv", ".model_card.json.tmp", "notes.txt"])
    config = tiny_config(tmp_path / "data", tmp_path / "out2")
    assert check_earlier_run(config, Checkpoints(config.output_dir)) is None
