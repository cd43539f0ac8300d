"""train(config): split by specimen, fit in two phases under a tf.distribute strategy, export.

The steps, in order: check the flags; settle what the output folder already holds (restart,
complete export, checkpoints); discover and split the data; fit (resuming from checkpoints);
fit the calibration temperature on validation, choose the threshold on the calibrated validation
scores and evaluate on test; write the export (T built into the model), card last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import keras
import tensorflow as tf

from model import storage
from model.constants import CALIBRATED_LOGIT_LAYER
from model.evaluation.labels import label_index
from model.network.architecture import build_classifier
from model.network.model_card import ModelCard
from model.storage import max_bytes_from_mb
from train_job.config import TrainConfig, normalized, result_settings
from train_job.data import discovery as data
from train_job.data.dataset import class_weights_for, evaluation_dataset, training_stream
from train_job.export.evaluation import (
    calibrate,
    decision_threshold,
    evaluation_report,
    predict,
    validation_heatmap_scale,
)
from train_job.export.files import HISTORY_FILE, LOG_DIR, export_looking_files, publish
from train_job.export.outputs import TrainingOutcome, write_outputs
from train_job.fitting.distribute import choose_strategy
from train_job.fitting.fit import fit_phases
from train_job.fitting.worker_sync import (
    checkpoints_for,
    chief_decides,
    chief_model_here,
    same_on_every_worker,
    text_fingerprint,
    wait_for_every_worker,
)
from train_job.launch_checks import check_flags
from train_job.run_state.checkpoint import Checkpoints
from train_job.run_state.rerun import check_same_split, prepare_output

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What train() produced: where, the threshold, test metrics and the per-phase histories."""

    output_dir: str
    threshold: float
    test_metrics: dict
    history: dict
    replicas: int
    epochs_run: dict
    already_complete: bool = False  # the folder held a complete export made with these flags
    writer: bool = True  # this process writes the export (the chief, or the only worker)


def train(
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    *,
    restart: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Run the whole training job and write its export to config.output_dir.

    Rerun with the same flags and folder, it resumes an interrupted run or, when the export is
    complete, returns at once; restart=True deletes an earlier run's checkpoints and export
    files first. Extra Keras callbacks join every phase's fit.
    """
    config = normalized(config)
    check_flags(config)
    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _train(config, strategy, restart, callbacks)
    finally:  # the policy is process-global; leave it as we found it
        keras.mixed_precision.set_global_policy(previous_policy)


def _record_launch(
    config: TrainConfig, replicas: int, split_text: str, checkpoints: Checkpoints
) -> list[str]:
    """The export-looking files in --output_dir that are not this run's: recorded in
    checkpoints/run.json at its first launch, read back from there on a resume."""
    if not checkpoints.writer:
        return []
    recorded = checkpoints.recorded_run()
    if recorded is not None:
        return list(recorded.get("foreign_files", []))
    foreign = export_looking_files(config.output_dir)
    checkpoints.record_run(result_settings(config), replicas, split_text, foreign_files=foreign)
    return foreign


def _train(config, strategy, restart, callbacks) -> TrainResult:
    keras.utils.set_random_seed(config.seed)
    strategy = strategy or choose_strategy()
    replicas = strategy.num_replicas_in_sync
    # Over several workers, only the chief reads and writes --output_dir; the others follow it.
    checkpoints = checkpoints_for(strategy, config.output_dir)
    card_json = chief_decides(
        strategy, lambda: _complete_card_json(config, replicas, restart, checkpoints)
    )
    if card_json is not None:
        logger.info(
            "%s already holds a complete export made with these flags: nothing to do",
            config.output_dir,
        )
        checkpoints.delete()  # left behind if a run stopped between its card and this cleanup
        wait_for_every_worker(strategy)
        result = _complete_result(config.output_dir, ModelCard.from_json(card_json))
        return dataclasses.replace(result, writer=checkpoints.writer)
    split = same_on_every_worker(
        strategy,
        lambda: _checked_split(config, checkpoints),
        lambda split: text_fingerprint(json.dumps(result_settings(config)) + split.text),
        "settings or images (result-changing flags, or the images under --data_dir)",
    )
    foreign = _record_launch(config, replicas, split.text, checkpoints)
    with _work_dir(config.output_dir, checkpoints.writer) as work_dir:
        model, outcome = _fit_and_evaluate(
            config, strategy, split, checkpoints, work_dir, callbacks
        )
        if checkpoints.writer:
            write_outputs(config, work_dir, model, outcome, foreign)
            if work_dir != config.output_dir:
                publish(work_dir, config.output_dir)
            checkpoints.delete()
            logger.info("Export complete in %s", config.output_dir)
    wait_for_every_worker(strategy)
    return TrainResult(
        config.output_dir,
        outcome.threshold,
        outcome.report,
        outcome.history,
        replicas,
        outcome.epochs_run,
        writer=checkpoints.writer,
    )


def _complete_card_json(config, replicas, restart, checkpoints) -> str | None:
    """The card of a complete export made with these flags, as JSON, or None (train)."""
    card = prepare_output(config, replicas, restart, checkpoints)
    return None if card is None else card.to_json()


def _checked_split(config: TrainConfig, checkpoints: Checkpoints) -> _Split:
    """The split, refused by the chief when it differs from its checkpoints' split."""
    split = _split(config)
    if checkpoints.writer:
        check_same_split(checkpoints, split.text)
    return split


def _fit_and_evaluate(config, strategy, split, checkpoints, work_dir, callbacks):
    """Build and fit the model; calibrate it and choose the threshold on validation; evaluate
    the calibrated model on test. Returns the calibrated model and the outcome."""
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    logger.info("Global batch %d (%d per replica x %d)", global_batch, config.batch_size, replicas)
    class_weights = class_weights_for(_labels(split.by_split["train"]))
    with strategy.scope():
        model = build_classifier(
            config.image_size, config.weights, config.dense_units, config.dropout
        )
    stream, evaluation = _inputs(config, split.by_split, global_batch, class_weights)
    fitted = fit_phases(
        config,
        strategy,
        model,
        stream,
        evaluation["validation"],
        checkpoints,
        storage.join(work_dir, LOG_DIR),
        callbacks,
    )
    # One rule: the temperature is fitted and the threshold chosen on p computed as the p they
    # are applied to (the test split's, and the scorer's at its default --tta, the card's
    # eval_tta): the mean logit over the views, divided by T.
    model = chief_model_here(strategy, model)
    # So the calibrated model predicts on the replicas the fitted one lives on.
    with model.distribute_strategy.scope():
        model, calibration, validation_p = calibrate(
            model,
            split.by_split["validation"],
            evaluation["validation"],
            config.calibration,
            config.eval_tta,
        )
    threshold, rule = decision_threshold(split.by_split["validation"], validation_p)
    test_p = predict(model, evaluation["test"], config.eval_tta, CALIBRATED_LOGIT_LAYER)
    report = evaluation_report(split.by_split["test"], test_p, threshold)
    _log_headline(report)
    scale = validation_heatmap_scale(
        model, evaluation["validation"], config.eval_tta, CALIBRATED_LOGIT_LAYER
    )
    outcome = TrainingOutcome(
        rows=split.rows,
        by_split=split.by_split,
        discovery=split.discovery,
        report=report,
        history=fitted.history,
        epochs_run=fitted.epochs_run,
        threshold=threshold,
        threshold_rule=rule,
        replicas=replicas,
        global_batch=global_batch,
        class_weights=class_weights,
        test_p=test_p,
        calibration=calibration,
        heatmap_scale=scale,
    )
    return model, outcome


@contextlib.contextmanager
def _work_dir(output_dir: str, writer: bool) -> Iterator[str]:
    """The local folder the export is written in: output_dir, or a temporary one for gs://
    and for a worker that writes nothing (its TensorBoard logs go there and are dropped)."""
    if writer and not storage.is_remote(output_dir):
        yield output_dir
        return
    local = tempfile.mkdtemp(prefix="breakhis-train-")
    try:
        yield local
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _complete_result(output_dir: str, card: ModelCard) -> TrainResult:
    history_path = storage.join(output_dir, HISTORY_FILE)
    history = json.loads(storage.read_text(history_path)) if storage.exists(history_path) else {}
    return TrainResult(
        output_dir=output_dir,
        threshold=card.threshold,
        test_metrics=card.test_metrics,
        history=history,
        replicas=card.training_config.get("replicas", 0),
        epochs_run={},
        already_complete=True,
    )


@dataclasses.dataclass
class _Split:
    """The images found and how they are split."""

    rows: list[dict]
    by_split: dict[str, list[dict]]
    discovery: data.Discovery

    @property
    def text(self) -> str:
        """split.csv's text: what checkpoints record and workers compare."""
        return data.split_csv_text(self.rows)


def _split(config: TrainConfig) -> _Split:
    discovery = data.discover_images(
        config.data_dir,
        config.magnifications,
        max_bytes=max_bytes_from_mb(config.max_file_mb),
        exclude_dir=config.output_dir,
    )
    if config.folds:
        assignment = data.fold_by_specimen(
            discovery.images, config.folds, config.fold, config.val_fraction, config.seed
        )
    else:
        assignment = data.split_by_specimen(
            discovery.images, config.val_fraction, config.test_fraction, config.seed
        )
    rows = data.split_rows(discovery.images, assignment)
    for split, classes in data.summarize_split(rows).items():
        logger.info(
            "%s: %s",
            split,
            ", ".join(
                f"{name} {counts['images']} images / {counts['patients']} patients"
                for name, counts in classes.items()
            ),
        )
    by_split = {name: [row for row in rows if row["split"] == name] for name in data.SPLITS}
    return _Split(rows, by_split, discovery)


def _labels(rows: list[dict]) -> list[int]:
    return [label_index(row["label"]) for row in rows]


def _inputs(config, by_split, global_batch, class_weights):
    """The training stream, and the validation and test datasets in split order."""
    max_bytes = max_bytes_from_mb(config.max_file_mb)
    train_rows = by_split["train"]
    labels = _labels(train_rows)
    logger.info(
        "Class weights from the training split (benign %d, malignant %d images): "
        "benign %.3f, malignant %.3f",
        labels.count(0),
        labels.count(1),
        class_weights[0],
        class_weights[1],
    )
    stream = training_stream(
        [row["image_path"] for row in train_rows],
        labels,
        config.image_size,
        global_batch,
        seed=config.seed,
        cache=config.cache,
        augment=config.augment,
        class_weights=class_weights,
        steps_per_epoch=config.steps_per_epoch,
        max_bytes=max_bytes,
        stain_jitter=config.stain_jitter,
    )
    evaluation = {
        split: evaluation_dataset(
            [row["image_path"] for row in by_split[split]],
            _labels(by_split[split]),
            config.image_size,
            global_batch,
            cache=config.cache,
            max_bytes=max_bytes,
        )
        for split in ("validation", "test")
    }
    return stream, evaluation


def _log_headline(report: dict) -> None:
    pooled = report["image_level"]["pooled"]
    patients = report["patient_level"]["pooled"]
    baseline = report["baseline"]["image_level"]["pooled"]

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    logger.info(
        "Test split: image accuracy %s (majority baseline %s), balanced accuracy %s, ROC AUC %s, "
        "patient recognition rate %s, patient-level accuracy %s",
        fmt(pooled["accuracy"]),
        fmt(baseline["accuracy"]),
        fmt(pooled["balanced_accuracy"]),
        fmt(pooled["roc_auc"]),
        fmt(pooled.get("patient_recognition_rate")),
        fmt(patients["accuracy"]),
    )
