"""Launch checks of --model_dir DIR [DIR ...]: which exports the run scores with, and that they fit.

Each value is a training export, or a cross-validation output folder standing for all its folds
(`model.evaluation.cv_folders`). Every member passes the single-export checks
(`check_model_export`); then the set must be usable as one ensemble: no export twice, no model
twice, and one image size, preprocessing and class list (one input tensor per image serves every
member). Members trained with different test-time views need an explicit --tta. Each refusal is one
line (exit 2).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from model import storage
from model.constants import FOLD_DIR_PREFIX, MODEL_CARD_FILE, MODEL_FILE
from model.evaluation.cv_folders import (
    CrossValidationFolderError,
    complete_fold_exports,
    fold_exports,
    has_cv_aggregates,
)
from model.image.quality import SizeRange, size_range_from_card
from model.network.model_card import ModelCard
from pipelines.ensemble.members import Ensemble, Member
from pipelines.launch.checks import LaunchError
from pipelines.launch.model_checks import check_model_export

logger = logging.getLogger(__name__)


def _is_export(folder: str) -> bool:
    """Whether the folder holds an export's files directly (complete or not)."""
    return any(storage.exists(storage.join(folder, name)) for name in (MODEL_CARD_FILE, MODEL_FILE))


def member_dirs(given: str) -> list[str]:
    """The export folders one --model_dir value stands for: itself, or its folds."""
    if not storage.is_remote(given) and not os.path.isdir(given):
        raise LaunchError(f"--model_dir {given} does not exist")
    try:
        if _is_export(given):
            return [given]
        if not fold_exports(given) and not has_cv_aggregates(given):
            raise LaunchError(
                f"--model_dir {given} is neither a training export (no {MODEL_FILE}, no "
                f"{MODEL_CARD_FILE}) nor a cross-validation folder (no {FOLD_DIR_PREFIX}<i>/)"
            )
        return complete_fold_exports(given)
    except CrossValidationFolderError as error:
        raise LaunchError(f"--model_dir {error}") from error
    except LaunchError:
        raise
    except Exception as error:  # a listing that failed: permissions, a missing bucket
        raise LaunchError(f"--model_dir {given} cannot be read: {error}") from error


def _identity(folder: str) -> str:
    """The same folder however it is spelled (a trailing slash, a relative path, a link)."""
    if storage.is_remote(folder):
        return folder.rstrip("/")
    return os.path.realpath(folder)


def _disagreement(
    members: Sequence[tuple[str, ModelCard]], field: str, value_of: Callable[[ModelCard], Any]
) -> str | None:
    """'field: value (first folder with it) vs ...' when the members' values differ, else None."""
    first_with: dict[str, tuple[Any, str]] = {}
    for folder, card in members:
        value = value_of(card)
        first_with.setdefault(json.dumps(value, sort_keys=True), (value, folder))
    if len(first_with) < 2:
        return None
    shown = " vs ".join(f"{value!r} ({folder})" for value, folder in first_with.values())
    return f"{field}: {shown}"


def _union_sizes(cards: Sequence[ModelCard]) -> SizeRange | None:
    """The union of the members' training image size ranges (those that record one): an image
    is unexpected only if no member was trained on its like."""
    ranges = [size_range_from_card(card.training_image_sizes) for card in cards]
    ranges = [found for found in ranges if found is not None]
    if not ranges:
        return None
    return SizeRange(
        min_width=min(found.min_width for found in ranges),
        max_width=max(found.max_width for found in ranges),
        min_height=min(found.min_height for found in ranges),
        max_height=max(found.max_height for found in ranges),
        images=sum(found.images for found in ranges),
    )


def check_model_dirs(model_dirs: Sequence[str], gradcam: bool = True) -> Ensemble:
    """The checked members of every --model_dir value, as one Ensemble (of one, for one export).

    Raises LaunchError for a folder that is neither an export nor a cross-validation folder with
    every fold complete, an export that fails `check_model_export`, an export listed twice (also
    through its cross-validation folder), two members with one model id, and members that
    disagree on image size, preprocessing or class names.
    """
    members: list[tuple[str, ModelCard, str]] = []
    seen: dict[str, str] = {}
    for given in model_dirs:
        for folder in member_dirs(given):
            identity = _identity(folder)
            if identity in seen:
                raise LaunchError(
                    f"--model_dir {folder} is listed twice (as {seen[identity]} and as {given}); "
                    "an ensemble takes each export once"
                )
            seen[identity] = given
            members.append((folder, check_model_export(folder, gradcam=gradcam), given))
    ids: dict[str, str] = {}
    for folder, card, _ in members:
        if card.model_id in ids:
            raise LaunchError(
                f"--model_dir {ids[card.model_id]} and {folder} hold the same model "
                f"(model_id {card.model_id!r}); an ensemble takes each model once"
            )
        ids[card.model_id] = folder
    pairs = [(folder, card) for folder, card, _ in members]
    for field, value_of in (
        ("image_size", lambda card: card.image_size),
        ("preprocessing", lambda card: card.preprocessing),
        ("class_names", lambda card: card.class_names),
    ):
        problem = _disagreement(pairs, field, value_of)
        if problem:
            raise LaunchError(f"--model_dir members disagree on {problem}")
    calibration = _disagreement(
        pairs,
        "calibration",
        lambda card: [
            card.logit_layer,
            card.calibration.get("method") if isinstance(card.calibration, dict) else None,
        ],
    )
    if calibration:
        logger.warning(
            "Members were calibrated differently (%s): each contributes the logit of its own "
            "card's logit_layer, its own best log-odds",
            calibration,
        )
    cards = [card for _, card, _ in members]
    return Ensemble(
        members=tuple(
            Member(
                model_dir=folder,
                model_id=card.model_id,
                threshold=float(card.threshold),
                last_conv_layer=card.last_conv_layer,
                logit_layer=card.logit_layer,
                heatmap_scale=card.heatmap_scale,
                eval_tta=card.eval_tta,
                temperature=float(card.temperature),
                given_as=given,
            )
            for folder, card, given in members
        ),
        image_size=cards[0].image_size,
        expected_sizes=(
            size_range_from_card(cards[0].training_image_sizes)
            if len(cards) == 1
            else _union_sizes(cards)
        ),
    )


def default_views(ensemble: Ensemble, tta: int | None) -> int:
    """The run's test-time views: --tta when given, else the members' common eval_tta.

    Raises LaunchError when members were evaluated with different views and --tta is not given:
    no count is right for every member's threshold, so the user chooses.
    """
    if tta is not None:
        return tta
    views = sorted({member.eval_tta for member in ensemble.members})
    if len(views) > 1:
        shown = "; ".join(
            f"{count}: {', '.join(m.model_dir for m in ensemble.members if m.eval_tta == count)}"
            for count in views
        )
        raise LaunchError(
            f"--model_dir members disagree on eval_tta ({shown}); pass --tta to choose the views"
        )
    return views[0]
