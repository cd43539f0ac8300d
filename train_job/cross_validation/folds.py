"""Read the fold exports of a cross-validation and check that they form one: complete exports
of the same data and settings, each fold once, every fold present, test splits disjoint and
together covering every image. Each problem is one CrossValidationError line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from collections.abc import Sequence
from typing import Any

from model import storage
from model.constants import MODEL_CARD_FILE, MODEL_FILE
from model.evaluation.fold_predictions import (
    TEST_PREDICTIONS_FILE,
    PredictionsFileError,
    read_predictions,
)
from model.evaluation.labels import predicted_label
from model.network.model_card import ModelCard, read_model_card
from train_job.config import RESULT_FLAGS
from train_job.data.discovery import SPLIT_FILE, SPLITS

logger = logging.getLogger(__name__)

# The settings every fold must share: every result-changing flag but the fold itself.
SHARED_SETTINGS: tuple[str, ...] = tuple(name for name in RESULT_FLAGS if name != "fold")
RETRAIN = "retrain that fold (python train_job/main.py ... --fold I --restart)"


class CrossValidationError(ValueError):
    """Fold folders that do not form one cross-validation; says which and why."""


@dataclasses.dataclass
class Fold:
    """One fold's export as the aggregation reads it."""

    folder: str
    index: int
    card: ModelCard
    split: dict[str, str]  # image_path -> train / validation / test, from split.csv
    predictions: list[dict[str, Any]]  # test_predictions.csv rows, in file order

    @property
    def folds(self) -> int:
        """K of the cross-validation this fold belongs to."""
        return int(self.card.training_config["folds"])


def read_fold(folder: str) -> Fold:
    """A fold export's card, split and test predictions, each checked."""
    card_path = storage.join(folder, MODEL_CARD_FILE)
    if not storage.is_remote(folder) and not os.path.isdir(folder):
        raise CrossValidationError(f"{folder} does not exist or is not a folder")
    if not storage.exists(card_path):
        raise CrossValidationError(
            f"{folder} is not a complete training export (no {MODEL_CARD_FILE}: an unfinished "
            "run, or not an export)"
        )
    try:
        card = read_model_card(folder)
    except Exception as error:  # bad JSON or wrong types
        raise CrossValidationError(
            f"{folder} has an unreadable {MODEL_CARD_FILE} ({error})"
        ) from None
    if not storage.exists(storage.join(folder, MODEL_FILE)):
        raise CrossValidationError(f"{folder} has a card but no {MODEL_FILE}")
    folds, index = _fold_settings(folder, card)
    split = _read_split(folder)
    predictions = _read_predictions(folder, card, split)
    logger.info("%s: fold %d of %d, %d test images", folder, index, folds, len(predictions))
    return Fold(folder, index, card, split, predictions)


def _fold_settings(folder: str, card: ModelCard) -> tuple[int, int]:
    config = card.training_config if isinstance(card.training_config, dict) else {}
    folds, index = config.get("folds"), config.get("fold")
    if not isinstance(folds, int) or not isinstance(index, int):
        raise CrossValidationError(f"{folder}'s card records no --folds/--fold")
    if folds < 2:
        raise CrossValidationError(
            f"{folder} was trained on a single split (--folds {folds}), not as a fold of a "
            "cross-validation"
        )
    if not 0 <= index < folds:
        raise CrossValidationError(f"{folder}'s card records --fold {index} of --folds {folds}")
    return folds, index


def _read_text(folder: str, name: str, advice: str) -> str:
    path = storage.join(folder, name)
    if not storage.exists(path):
        raise CrossValidationError(f"{folder} has no {name}; {advice}")
    try:
        return storage.read_text(path)
    except UnicodeDecodeError:
        raise CrossValidationError(f"{path} is not UTF-8 text") from None


def _read_split(folder: str) -> dict[str, str]:
    text = _read_text(folder, SPLIT_FILE, RETRAIN)
    reader = csv.DictReader(io.StringIO(text))
    if not {"image_path", "split"} <= set(reader.fieldnames or ()):
        raise CrossValidationError(f"{folder}/{SPLIT_FILE} has no image_path and split columns")
    split = {}
    for row in reader:
        if row["split"] not in SPLITS:
            raise CrossValidationError(f"{folder}/{SPLIT_FILE} has a row in split {row['split']!r}")
        split[row["image_path"]] = row["split"]
    return split


def _read_predictions(folder: str, card: ModelCard, split: dict[str, str]) -> list[dict]:
    text = _read_text(
        folder,
        TEST_PREDICTIONS_FILE,
        f"exports made before cross-validation did not write it: {RETRAIN}",
    )
    try:
        rows = read_predictions(text, f"{folder}/{TEST_PREDICTIONS_FILE}")
    except PredictionsFileError as error:
        raise CrossValidationError(str(error)) from None
    paths = [row["image_path"] for row in rows]
    test = {path for path, side in split.items() if side == "test"}
    if len(set(paths)) != len(paths) or set(paths) != test:
        outside = sorted(set(paths) - test)
        raise CrossValidationError(
            f"{folder}/{TEST_PREDICTIONS_FILE} does not list exactly the test split of its "
            f"{SPLIT_FILE} ({len(paths)} rows for {len(test)} test images"
            + (f"; {outside[0]} is not in the test split" if outside else "")
            + ")"
        )
    for row in rows:
        if row["predicted_label"] != predicted_label(row["p_malignant"], card.threshold):
            raise CrossValidationError(
                f"{folder}/{TEST_PREDICTIONS_FILE} calls {row['image_path']} "
                f"{row['predicted_label']} at p {row['p_malignant']}, which its card's threshold "
                f"{card.threshold} does not"
            )
    return rows


def read_folds(folders: Sequence[str]) -> list[Fold]:
    """Every fold of one cross-validation, in fold order, checked as one whole."""
    if not folders:
        raise CrossValidationError("no fold folder given")
    seen: dict[str, str] = {}
    for folder in folders:
        key = folder.rstrip("/") if storage.is_remote(folder) else os.path.realpath(folder)
        if key in seen:
            raise CrossValidationError(f"{folder} is given twice")
        seen[key] = folder
    folds = [read_fold(folder) for folder in folders]
    _check_same_settings(folds)
    _check_each_fold_once(folds)
    ordered = sorted(folds, key=lambda fold: fold.index)
    _check_same_images(ordered)
    _check_test_splits_partition(ordered)
    return ordered


def _check_same_settings(folds: Sequence[Fold]) -> None:
    first = folds[0]
    for fold in folds[1:]:
        differing = [
            f"--{name} {_shown(first.card.training_config.get(name))} -> "
            f"{_shown(fold.card.training_config.get(name))}"
            for name in SHARED_SETTINGS
            if first.card.training_config.get(name) != fold.card.training_config.get(name)
        ]
        if differing:
            raise CrossValidationError(
                f"{fold.folder} was trained with other settings than {first.folder} "
                f"({'; '.join(differing)}): the folds of one cross-validation share the data, "
                "K, the seed and the recipe"
            )


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return "(not recorded)" if value is None else str(value)


def _check_each_fold_once(folds: Sequence[Fold]) -> None:
    by_index: dict[int, Fold] = {}
    for fold in folds:
        if fold.index in by_index:
            raise CrossValidationError(
                f"fold {fold.index} is given twice: {by_index[fold.index].folder} and {fold.folder}"
            )
        by_index[fold.index] = fold
    k = folds[0].folds
    missing = [str(index) for index in range(k) if index not in by_index]
    if missing:
        raise CrossValidationError(
            f"fold{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {k} "
            f"{'are' if len(missing) > 1 else 'is'} missing: give the export of every fold"
        )


def _check_same_images(folds: Sequence[Fold]) -> None:
    first = set(folds[0].split)
    for fold in folds[1:]:
        images = set(fold.split)
        if images != first:
            raise CrossValidationError(
                f"fold {fold.index} ({fold.folder}) split other images than fold "
                f"{folds[0].index} ({len(images - first)} not in fold {folds[0].index}, "
                f"{len(first - images)} missing): the data changed between the folds"
            )


def _check_test_splits_partition(folds: Sequence[Fold]) -> None:
    """Each image in exactly one fold's test split (the out-of-fold predictions rely on it)."""
    tested_by: dict[str, int] = {}
    for fold in folds:
        for row in fold.predictions:
            path = row["image_path"]
            if path in tested_by:
                raise CrossValidationError(
                    f"folds {tested_by[path]} and {fold.index} both hold {path} in their test "
                    "split: they are not folds of one cross-validation (folds trained before "
                    "2026-11-28 could overlap on real data: retrain them with --restart)"
                )
            tested_by[path] = fold.index
    untested = sorted(set(folds[0].split) - set(tested_by))
    if untested:
        raise CrossValidationError(
            f"{len(untested)} images are in no fold's test split (e.g. {untested[0]})"
        )
