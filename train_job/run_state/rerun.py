"""A run into a folder that already holds work: start over, skip, resume, or refuse, up front.

- `--restart`: delete what the earlier run wrote, by its records (the card first), nothing else
  (`train_job.run_state.earlier_export`).
- A complete export (its card exists): same result-changing flags, nothing to do; other flags,
  refuse.
- Checkpoints of an interrupted run: same flags and replica count, resume; otherwise refuse.
  Once the data is split, a split that differs from the recorded one is refused too.
- Files named like an export's but neither a card nor checkpoints: refuse (they would be
  overwritten) unless --restart.
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
from train_job.launch_checks import LaunchError
from train_job.run_state.checkpoint import Checkpoints
from train_job.run_state.earlier_export import (
    earlier_export,
    export_in_words,
    remove_earlier_export,
    stray_files,
)

logger = logging.getLogger(__name__)

START_OVER = "add --restart to delete its checkpoints and export files and train from scratch"
REPLACE_EXPORT = "add --restart to delete that export and train from scratch"


def prepare_output(
    config: TrainConfig, replicas: int, restart: bool, checkpoints: Checkpoints
) -> ModelCard | None:
    """The card of a complete export made with these flags (nothing to train), else None.

    Raises LaunchError when the folder holds a complete export or checkpoints made with other
    result-changing flags, or (without --restart) files named like an export's and no record.
    """
    output_dir = config.output_dir
    if restart and checkpoints.writer:
        earlier = earlier_export(output_dir, checkpoints)
        if earlier is not None:
            remove_earlier_export(output_dir, earlier)
    card = check_earlier_run(config, checkpoints, replicas, restarted=restart)
    if card is None and checkpoints.recorded_run() is not None:
        logger.info("Checkpoints in %s were made with these flags", checkpoints.location)
    return card


def check_earlier_run(
    config: TrainConfig,
    checkpoints: Checkpoints,
    replicas: int | None = None,
    *,
    restarted: bool = False,
) -> ModelCard | None:
    """The card of a complete export in config.output_dir made with these flags, else None.

    Raises LaunchError when the folder holds a complete export, or checkpoints, made with other
    result-changing flags (or, unless replicas is None, on another number of replicas), or,
    unless --restart just removed an earlier run's files, files named like an export's and
    neither a card nor checkpoints: training would overwrite them.
    """
    output_dir = config.output_dir
    card = _existing_card(output_dir)
    if card is not None:
        differing = differing_settings(card.training_config, config)
        if differing:
            raise LaunchError(
                f"--output_dir {output_dir} holds a complete export made with other settings "
                f"({'; '.join(differing)}): {export_in_words(card)}; use another "
                f"--output_dir, or {REPLACE_EXPORT}"
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
                f"--output_dir {output_dir} holds checkpoints of an interrupted run started "
                f"{recorded.get('started_at') or 'at an unrecorded time'} with other settings "
                f"({'; '.join(differing)}); rerun with its flags to resume it, or "
                f"{START_OVER}"
            )
        return None
    strays = [] if restarted else stray_files(output_dir)
    if strays:
        paths = [storage.join(output_dir, *name.split("/")) for name in strays]
        them = "them" if len(strays) > 1 else "it"
        raise LaunchError(
            f"--output_dir {output_dir} holds {storage.files_in_words(output_dir, paths)} "
            f"named like a training export's, but no {MODEL_CARD_FILE} or checkpoints: "
            f"training would overwrite {them}; move {them}, use another --output_dir, or add "
            f"--restart to delete {them} (found by name)"
        )
    return None


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
