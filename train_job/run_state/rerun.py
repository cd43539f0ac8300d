"""A run into a folder that already holds work: start over, skip, resume, or refuse, up front.

- `--restart`: delete the checkpoints and the export's files (the card first), nothing else.
- A complete export (its card exists): same result-changing flags, nothing to do; other flags,
  refuse.
- Checkpoints of an interrupted run: same flags and replica count, resume; otherwise refuse.
  Once the data is split, a split that differs from the recorded one is refused too.
Every refusal is one line naming what differs and how to start over.
"""

from __future__ import annotations

import csv
import io
import logging

from model import storage
from model.constants import MODEL_CARD_FILE
from model.network.model_card import ModelCard, read_model_card
from train_job.config import TrainConfig, differing_settings
from train_job.export.files import delete_export
from train_job.launch_checks import LaunchError
from train_job.run_state.checkpoint import Checkpoints

logger = logging.getLogger(__name__)

START_OVER = "add --restart to delete its checkpoints and export files and train from scratch"
REPLACE_EXPORT = "add --restart to delete that export and train from scratch"


def prepare_output(
    config: TrainConfig, replicas: int, restart: bool, checkpoints: Checkpoints
) -> ModelCard | None:
    """The card of a complete export made with these flags (nothing to train), else None.

    Raises LaunchError when the folder holds a complete export or checkpoints made with other
    result-changing flags.
    """
    output_dir = config.output_dir
    if restart and checkpoints.writer:
        earlier = _earlier_run_in_words(output_dir, checkpoints)
        deleted = delete_export(output_dir)
        logger.info("--restart: deleted %d files of %s in %s", deleted, earlier, output_dir)
    card = check_earlier_run(config, checkpoints, replicas)
    if card is None and checkpoints.recorded_run() is not None:
        logger.info("Checkpoints in %s were made with these flags", checkpoints.location)
    return card


def check_earlier_run(
    config: TrainConfig, checkpoints: Checkpoints, replicas: int | None = None
) -> ModelCard | None:
    """The card of a complete export in config.output_dir made with these flags, else None.

    Raises LaunchError when the folder holds a complete export, or checkpoints, made with other
    result-changing flags (or, unless replicas is None, on another number of replicas).
    """
    output_dir = config.output_dir
    card = _existing_card(output_dir)
    if card is not None:
        differing = differing_settings(card.training_config, config)
        if differing:
            raise LaunchError(
                f"--output_dir {output_dir} holds a complete export made with other settings "
                f"({'; '.join(differing)}); use another --output_dir, or {REPLACE_EXPORT}"
            )
        return card
    recorded = checkpoints.recorded_run()
    if recorded is not None:
        differing = differing_settings(recorded.get("settings", {}), config)
        if replicas is not None and recorded.get("replicas") != replicas:
            differing.append(
                f"replicas {recorded.get('replicas')} -> {replicas} (global batch and learning "
                "rate)"
            )
        if differing:
            raise LaunchError(
                f"--output_dir {output_dir} holds checkpoints of an interrupted run with other "
                f"settings ({'; '.join(differing)}); rerun with its flags to resume it, or "
                f"{START_OVER}"
            )
    return None


def _earlier_run_in_words(output_dir: str, checkpoints: Checkpoints) -> str:
    """Which earlier run --restart removes: the export's model id and date, or an interrupted
    run's checkpoints; read leniently (a broken card or record is still removed)."""
    try:
        card = read_model_card(output_dir)
        return f"export {card.model_id} (created {card.created_at or 'at an unrecorded time'})"
    except Exception:  # no card, or one this job cannot read: what is there is removed anyway
        pass
    try:
        recorded = checkpoints.recorded_run()
    except Exception:
        recorded = None
    if recorded is not None:
        return "an interrupted run (its checkpoints)"
    return "an earlier run"


def _existing_card(output_dir: str) -> ModelCard | None:
    if not storage.exists(storage.join(output_dir, MODEL_CARD_FILE)):
        return None
    try:
        return read_model_card(output_dir)
    except Exception as error:  # bad JSON or wrong types: not a card this job can compare
        raise LaunchError(
            f"--output_dir {output_dir} has an unreadable {MODEL_CARD_FILE} ({error}); "
            f"{REPLACE_EXPORT}"
        ) from error


def check_same_split(checkpoints: Checkpoints, split_text: str) -> None:
    """Refuse to resume on a split that differs from the one the checkpoints were trained on."""
    recorded = checkpoints.recorded_split()
    if recorded is None or recorded == split_text:
        return
    before, now = _sides(recorded), _sides(split_text)
    added = len(now.keys() - before.keys())
    removed = len(before.keys() - now.keys())
    moved = sum(1 for path in now.keys() & before.keys() if now[path] != before[path])
    raise LaunchError(
        f"the data under --data_dir changed since the checkpoints in {checkpoints.location} "
        f"were written ({added} images added, {removed} removed or unreadable, {moved} on "
        f"another side of the split); {START_OVER}"
    )


def _sides(split_text: str) -> dict[str, str]:
    """image_path -> split of a split.csv text."""
    return {row["image_path"]: row["split"] for row in csv.DictReader(io.StringIO(split_text))}
