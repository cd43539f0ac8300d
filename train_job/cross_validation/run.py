"""K-fold cross-validation in one command: train every fold in turn into
`<output_dir>/fold-<i>/` (each a complete training export, as `--fold i` writes it), then
aggregate them into `<output_dir>/cv/` (`train_job.cross_validation.aggregate`).

Reruns follow each fold's own rules (`train_job.run_state.rerun`): a complete fold export made with
these flags is skipped, an interrupted one resumes from its checkpoints, and any fold folder made
with other result-changing flags stops the job before any fold is trained.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from model import storage
from model.constants import CV_DIR, fold_dir_name
from train_job.config import TrainConfig, normalized
from train_job.cross_validation.folds import CrossValidationError
from train_job.launch_checks import LaunchError, check_flags
from train_job.run_state.checkpoint import Checkpoints
from train_job.run_state.rerun import check_earlier_run

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class CrossValidationResult:
    """Where the folds and the aggregate are, and which folds this run trained."""

    fold_dirs: list[str]
    cv_dir: str
    trained: list[int]  # folds this run trained or finished (the others were complete)
    cv_metrics: dict


def fold_config(config: TrainConfig, fold: int) -> TrainConfig:
    """The configuration of one fold: the same flags, --fold `fold`, its own folder."""
    return dataclasses.replace(
        config, fold=fold, output_dir=storage.join(config.output_dir, fold_dir_name(fold))
    )


def check_fold_folders(config: TrainConfig) -> None:
    """Refuse, before any training, fold folders holding a run made with other flags."""
    for fold in range(config.folds):
        folder_config = fold_config(config, fold)
        check_earlier_run(folder_config, Checkpoints(folder_config.output_dir, writer=False))


def cross_validate(
    config: TrainConfig, *, restart: bool = False, callbacks: Sequence = ()
) -> CrossValidationResult:
    """Train every fold of config.folds in turn, then write the aggregate into
    <output_dir>/cv/. config.fold is ignored. restart=True starts every fold from scratch
    (and replaces the aggregate). Raises LaunchError for flags or earlier runs that stop the
    job, CrossValidationError if the folds cannot be aggregated."""
    from train_job.cross_validation.aggregate import write_cv
    from train_job.train import train  # TensorFlow: only once the cheap checks passed

    config = normalized(dataclasses.replace(config, fold=0))
    check_flags(config)
    if config.folds < 2:
        raise LaunchError(f"cross-validation needs --folds K of at least 2, got {config.folds}")
    if not restart:
        check_fold_folders(config)
    cv_dir = storage.join(config.output_dir, CV_DIR)
    if restart:
        delete_aggregate(cv_dir)
    fold_dirs, trained = [], []
    for fold in range(config.folds):
        folder_config = fold_config(config, fold)
        logger.info(
            "Fold %d of %d (%s): %d of %d folds done",
            fold + 1,
            config.folds,
            folder_config.output_dir,
            fold,
            config.folds,
        )
        result = train(folder_config, restart=restart, callbacks=callbacks)
        if not result.already_complete:
            trained.append(fold)
        fold_dirs.append(folder_config.output_dir)
    logger.info(
        "All %d folds done (%d trained by this run); aggregating into %s",
        config.folds,
        len(trained),
        cv_dir,
    )
    try:
        metrics = write_cv(fold_dirs, cv_dir)
    except CrossValidationError as error:
        raise LaunchError(f"the folds cannot be aggregated: {error}") from None
    return CrossValidationResult(fold_dirs, cv_dir, trained, metrics)


def delete_aggregate(cv_dir: str) -> None:
    """--restart: delete the aggregate's files (cv_metrics.json first) and nothing else."""
    from train_job.cross_validation.aggregate_files import remove_earlier_aggregate

    remove_earlier_aggregate(cv_dir, "--restart")
