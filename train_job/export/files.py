"""The files of a training export, written with `model_card.json` last as the completion mark.

An export is complete exactly when its card exists: the card is written after every other file
succeeded (atomically; on gs:// uploaded after every other file), and deleted first when an
export is removed. The scorer refuses a folder without a card. The card lists the files the
run wrote (`files_written`), so --restart removes those and no file of a user's.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Collection, Sequence

import keras
import tensorflow as tf

from model import storage
from model.atomic import replace_file, temporary_prefix
from model.constants import MODEL_CARD_FILE, MODEL_FILE, SAVED_MODEL_DIR
from model.evaluation.fold_predictions import TEST_PREDICTIONS_FILE
from model.image.preprocessing import normalize
from model.network.model_card import ModelCard
from model.reports.assets import REPORT_ASSETS_DIR
from model.reports.plots import EVALUATION_PLOTS, TRAINING_CURVES_PLOT
from train_job.data.discovery import SPLIT_FILE
from train_job.run_state.checkpoint import CHECKPOINT_DIR, is_checkpoint_file

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
REPORT_FILE = "report.html"
LOG_DIR = "logs"  # TensorBoard, one folder per phase
PHASES = ("phase1", "phase2")

EXPORT_FILES: tuple[str, ...] = (
    MODEL_CARD_FILE,  # first, so a removal starts by marking the export incomplete
    MODEL_FILE,
    METRICS_FILE,
    TEST_PREDICTIONS_FILE,
    SPLIT_FILE,
    HISTORY_FILE,
    REPORT_FILE,
    *EVALUATION_PLOTS.values(),
    TRAINING_CURVES_PLOT,
)
"""Every fixed file of an export ('/'-separated, relative to the output folder)."""
EXPORT_FOLDERS: tuple[str, ...] = (
    SAVED_MODEL_DIR,
    *(f"{LOG_DIR}/{phase}" for phase in PHASES),
)
"""Folders whose whole content the training job writes."""
_REPORT_ASSET = re.compile(rf"^{REPORT_ASSETS_DIR}/\d{{3}}_(original|overlay)\.png$")


def is_export_file(relative: str) -> bool:
    """Whether a '/'-separated path inside an output folder is named like one the training job
    writes (the export, its TensorBoard logs and its checkpoints)."""
    parent, _, name = relative.rpartition("/")
    return (
        relative in EXPORT_FILES
        or relative.startswith(temporary_prefix(MODEL_CARD_FILE))  # a card write a kill cut
        or (parent == CHECKPOINT_DIR and is_checkpoint_file(name))
        or any(relative.startswith(folder + "/") for folder in EXPORT_FOLDERS)
        or _REPORT_ASSET.match(relative) is not None
    )


def is_bookkeeping_file(relative: str) -> bool:
    """A checkpoint file or a card's temporary file: the job's own by name, whatever a record
    says, and never part of the export itself."""
    return relative.startswith(CHECKPOINT_DIR + "/") or relative.startswith(
        temporary_prefix(MODEL_CARD_FILE)
    )


def export_looking_files(output_dir: str) -> list[str]:
    """The files in output_dir named like the training job's ('/'-separated, relative), the
    card first."""
    found = [name for name in storage.relative_files(output_dir) if is_export_file(name)]
    return sorted(found, key=lambda relative: (relative != MODEL_CARD_FILE, relative))


def files_written(work_dir: str, foreign: Collection[str]) -> list[str]:
    """What a finished run wrote into work_dir besides its card and checkpoints, for the card:
    the export-looking files less the foreign ones (there before the run), except the fixed
    names the export always writes (a foreign file of that name was replaced)."""
    return [
        relative
        for relative in export_looking_files(work_dir)
        if relative != MODEL_CARD_FILE
        and not is_bookkeeping_file(relative)
        and (relative not in foreign or relative in EXPORT_FILES)
    ]


def delete_files(output_dir: str, names: Sequence[str]) -> None:
    """Delete these files of output_dir ('/'-separated, relative) one by one in this order,
    then the export's folders they leave empty."""
    for relative in names:
        storage.delete([storage.join(output_dir, *relative.split("/"))])
    if not storage.is_remote(output_dir):
        storage.remove_empty_folders(output_dir, _is_export_folder)


def _is_export_folder(relative: str) -> bool:
    """Whether a folder (relative, '/'-separated) is one the export creates."""
    return relative in ("plots", REPORT_ASSETS_DIR, LOG_DIR, CHECKPOINT_DIR) or any(
        relative == owned or relative.startswith(owned + "/") for owned in EXPORT_FOLDERS
    )


def write_model_files(model: keras.Model, image_size: int, directory: str) -> None:
    """model.keras and saved_model/ (the serving signature) into a local folder."""
    os.makedirs(directory, exist_ok=True)
    model.save(os.path.join(directory, MODEL_FILE))
    _write_saved_model(model, image_size, os.path.join(directory, SAVED_MODEL_DIR))


def write_card(card: ModelCard, directory: str) -> None:
    """model_card.json into a local folder, atomically: it appears whole or not at all."""
    text = card.to_json()
    replace_file(os.path.join(directory, MODEL_CARD_FILE), lambda s: s.write(text.encode()))


def publish(local_dir: str, output_dir: str) -> None:
    """Upload a finished local export to a remote output folder, the card after all else."""
    card = os.path.join(local_dir, MODEL_CARD_FILE)
    files = [path for path in storage.list_files(local_dir) if path != card]
    for path in [*files, card]:
        relative = os.path.relpath(path, local_dir).replace(os.sep, "/")
        with open(path, "rb") as handle:
            storage.write_bytes(storage.join(output_dir, *relative.split("/")), handle.read())
    logger.debug("Uploaded %d files to %s", len(files) + 1, output_dir)


def write_export(model: keras.Model, card: ModelCard, output_dir: str) -> None:
    """Save the classifier in both formats with its card into output_dir (local or remote)."""
    with tempfile.TemporaryDirectory() as scratch:
        local_dir = output_dir if not storage.is_remote(output_dir) else scratch
        write_model_files(model, card.image_size, local_dir)
        write_card(card, local_dir)
        if local_dir != output_dir:
            publish(local_dir, output_dir)
    logger.info("Exported model to %s", output_dir)


def _write_saved_model(model: keras.Model, image_size: int, path: str) -> None:
    """A SavedModel whose `serving_default` takes RGB images in [0, 255] and returns P(malignant).

    The signature applies the same VGG16 normalisation as `model.image.preprocessing`, so TF Serving
    or Vertex AI clients send resized RGB pixels, not normalised tensors.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        probability = model(normalize(tf.cast(images, tf.float32)), training=False)
        return {"p_malignant": tf.reshape(probability, [-1])}

    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
        ],
    )
    archive.write_out(path, verbose=False)
