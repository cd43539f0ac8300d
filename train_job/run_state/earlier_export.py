"""Which files an earlier training run left in its --output_dir, and which run that was.

A run records what is its own twice:
- at its first launch (not on resume), `checkpoints/run.json` records when it started and
  `foreign_files`: the export-looking files already in the folder (after --restart removed an
  earlier run's), which are not its own;
- the finished export's `model_card.json` lists `export_files`, every file the run wrote
  besides the card (`train_job.export.files.files_written`).

So --restart removes exactly (`earlier_export`): a complete export's card, the files it lists
and its checkpoint files; an interrupted run's export-looking files less its foreign ones. A
folder with neither record (an export from an older release, or a removal that a kill cut
short) keeps the file-name rule (`is_export_file`), with a warning. Files named like an
export's in a folder with no record stop a run that is not a --restart (`stray_files`): it
would overwrite them.
"""

from __future__ import annotations

import dataclasses
import logging

from model import storage
from model.constants import MODEL_CARD_FILE
from model.network.model_card import ModelCard, read_model_card
from train_job.export.files import delete_files, export_looking_files, is_bookkeeping_file
from train_job.run_state.checkpoint import CHECKPOINT_DIR, RUN_FILE, Checkpoints

logger = logging.getLogger(__name__)

_RUN_RECORD = f"{CHECKPOINT_DIR}/{RUN_FILE}"


@dataclasses.dataclass(frozen=True)
class EarlierExport:
    """The files an earlier training run left, in removal order, and which run that was."""

    run: str  # which run, in words
    files: tuple[str, ...]  # '/'-separated, relative: the card first, the run record last
    by_name: bool  # no record of what the run wrote: found by file name
    kept: tuple[str, ...] = ()  # export-looking files the run's record says are not its own


def stray_files(output_dir: str) -> list[str]:
    """Export-looking files besides the job's bookkeeping ('/'-separated, relative)."""
    return [name for name in export_looking_files(output_dir) if not is_bookkeeping_file(name)]


def _in_removal_order(names: list[str]) -> tuple[str, ...]:
    """The card first (nothing half-removed reads as complete), the run record last (a removal
    cut short is finished exactly by the next --restart)."""
    first = [MODEL_CARD_FILE] if MODEL_CARD_FILE in names else []
    last = [_RUN_RECORD] if _RUN_RECORD in names else []
    return tuple(first + sorted(set(names) - set(first) - set(last)) + last)


def earlier_export(output_dir: str, checkpoints: Checkpoints) -> EarlierExport | None:
    """What an earlier run left in output_dir (None: nothing), by its records where it has them.

    Records are read leniently: an unreadable one means the file-name rule, not a refusal."""
    present = export_looking_files(output_dir)
    if not present:
        return None
    try:
        card = read_model_card(output_dir) if MODEL_CARD_FILE in present else None
    except Exception:  # a card this job cannot read is still removed, found by name
        card = None
    if card is not None and card.export_files:
        listed = set(card.export_files)
        ours = [name for name in present if name in listed or is_bookkeeping_file(name)]
        return EarlierExport(
            run=export_in_words(card),
            files=_in_removal_order([MODEL_CARD_FILE, *ours]),
            by_name=False,
            kept=tuple(name for name in present if name not in ours and name != MODEL_CARD_FILE),
        )
    try:
        recorded = checkpoints.recorded_run()
    except Exception:  # an unreadable run.json: found by name
        recorded = None
    if MODEL_CARD_FILE not in present and recorded and "foreign_files" in recorded:
        foreign = set(recorded["foreign_files"])
        started = recorded.get("started_at") or "at an unrecorded time"
        return EarlierExport(
            run=f"an interrupted run started {started}",
            files=_in_removal_order([name for name in present if name not in foreign]),
            by_name=False,
            kept=tuple(name for name in present if name in foreign),
        )
    run = export_in_words(card) if card is not None else "an earlier run"
    return EarlierExport(run=run, files=_in_removal_order(present), by_name=True)


def export_in_words(card: ModelCard) -> str:
    """Which export a card is, for one-line messages: its model id and date."""
    return f"export {card.model_id} (created {card.created_at or 'at an unrecorded time'})"


def remove_earlier_export(output_dir: str, earlier: EarlierExport) -> None:
    """--restart: delete exactly what an earlier run left, saying which run and what."""
    if earlier.by_name:
        logger.warning(
            "--restart: %s has no record of the files its run wrote (an export from an older "
            "release, or a removal cut short), so they are found by name and a file of yours "
            "named like one goes too",
            output_dir,
        )
    paths = [storage.join(output_dir, *name.split("/")) for name in earlier.files]
    logger.info(
        "--restart: deleting %s of %s in %s",
        storage.files_in_words(output_dir, paths),
        earlier.run,
        output_dir,
    )
    if earlier.kept:
        kept = [storage.join(output_dir, *name.split("/")) for name in earlier.kept]
        logger.info(
            "--restart: keeping %s that %s did not write",
            storage.files_in_words(output_dir, kept),
            earlier.run,
        )
    delete_files(output_dir, earlier.files)
