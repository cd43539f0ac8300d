"""A cross-validation output folder: its fold exports, and whether all of them are complete.

The layout (model.constants): `<output_dir>/fold-<i>/` holds fold i's training export, complete
when its `model_card.json` exists (written last); `<output_dir>/cv/` holds the aggregates. A
folder stands for its folds only when every fold 0..K-1 is complete, K being the `folds` its
cards' `training_config` records, so a scorer never silently uses a smaller set of folds.
"""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

from model import storage
from model.constants import CV_DIR, FOLD_DIR_PREFIX, MODEL_CARD_FILE, fold_dir_name

_FOLD_NAME = re.compile(rf"{re.escape(FOLD_DIR_PREFIX)}(0|[1-9][0-9]*)")


class CrossValidationFolderError(ValueError):
    """A cross-validation folder whose folds cannot all be used (the message names the fold)."""


class FoldExport(NamedTuple):
    """One `fold-<i>/` folder of a cross-validation output folder."""

    index: int
    path: str  # the fold's export folder
    complete: bool  # its model_card.json exists


def _relative_parts(folder: str, path: str) -> list[str]:
    """path's components below folder ('/'-separated remotely, os.sep locally)."""
    if storage.is_remote(folder):
        return path[len(folder.rstrip("/")) + 1 :].split("/")
    return os.path.relpath(path, folder).split(os.sep)


def fold_exports(folder: str) -> list[FoldExport]:
    """The `fold-<i>/` folders holding any file, by fold index (empty when there are none)."""
    found: dict[int, bool] = {}
    for path in storage.match(storage.join(folder, f"{FOLD_DIR_PREFIX}*", "**")):
        parts = _relative_parts(folder, path)
        named = _FOLD_NAME.fullmatch(parts[0]) if len(parts) > 1 else None
        if named:
            index = int(named.group(1))
            found[index] = found.get(index, False) or parts[1:] == [MODEL_CARD_FILE]
    return [
        FoldExport(index, storage.join(folder, fold_dir_name(index)), complete)
        for index, complete in sorted(found.items())
    ]


def has_cv_aggregates(folder: str) -> bool:
    """Whether the folder holds a `cv/` folder with any file in it."""
    return bool(storage.match(storage.join(folder, CV_DIR, "**"), limit=1))


def _fold_settings(fold: FoldExport) -> tuple[int | None, int | None]:
    """(folds, fold) from a complete fold's card; None where the card does not say (an
    unreadable card is the scorer's model check's to report)."""
    try:
        values = json.loads(storage.read_text(storage.join(fold.path, MODEL_CARD_FILE)))
        config = values.get("training_config") or {}
        folds, index = config.get("folds"), config.get("fold")
    except Exception:  # unreadable or malformed: said elsewhere, with the card's own error
        return None, None

    def integer(value):
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return integer(folds), integer(index)


def complete_fold_exports(folder: str) -> list[str]:
    """The export folders of every fold of a cross-validation folder, fold 0 first.

    Raises CrossValidationFolderError, naming the fold, when a fold is incomplete (no
    model_card.json) or missing (the cards' `folds` says K but fold i < K has no folder), when
    the cards disagree on K, or when a fold's card says it was trained as another fold.
    """
    folds = fold_exports(folder)
    if not folds:
        raise CrossValidationFolderError(
            f"{folder} holds no {FOLD_DIR_PREFIX}<i>/ folder with a {MODEL_CARD_FILE}"
        )
    incomplete = [fold for fold in folds if not fold.complete]
    if incomplete:
        names = ", ".join(fold_dir_name(fold.index) for fold in incomplete)
        raise CrossValidationFolderError(
            f"{folder}: {names} is incomplete (no {MODEL_CARD_FILE}: training did not finish); "
            "finish it (rerun the same training command) or list the complete folds' folders"
        )
    settings = {fold.index: _fold_settings(fold) for fold in folds}
    counts = sorted({folds_count for folds_count, _ in settings.values() if folds_count})
    if len(counts) > 1:
        raise CrossValidationFolderError(
            f"{folder}: the folds' cards disagree on --folds ({', '.join(map(str, counts))})"
        )
    for fold in folds:
        trained_as = settings[fold.index][1]
        if counts and trained_as is not None and trained_as != fold.index:
            raise CrossValidationFolderError(
                f"{folder}: {fold_dir_name(fold.index)}/{MODEL_CARD_FILE} is the card of fold "
                f"{trained_as}"
            )
    expected = counts[0] if counts else folds[-1].index + 1
    present = {fold.index for fold in folds}
    missing = [index for index in range(expected) if index not in present]
    if missing:
        names = ", ".join(fold_dir_name(index) for index in missing)
        raise CrossValidationFolderError(
            f"{folder}: {names} is missing (the folds' cards say --folds {expected})"
        )
    beyond = [fold.index for fold in folds if fold.index >= expected]
    if beyond:
        names = ", ".join(fold_dir_name(index) for index in beyond)
        raise CrossValidationFolderError(
            f"{folder}: {names} is beyond the folds' --folds {expected}"
        )
    return [fold.path for fold in folds]
