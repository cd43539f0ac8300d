"""Write a training export: `model.keras`, `saved_model/` (serving signature) and the model card."""

from __future__ import annotations

import logging
import os
import tempfile

import keras
import tensorflow as tf

from model import storage
from model.constants import MODEL_CARD_FILE, MODEL_FILE, SAVED_MODEL_DIR
from model.model_card import ModelCard
from model.preprocessing import normalize

logger = logging.getLogger(__name__)


def write_export(model: keras.Model, card: ModelCard, output_dir: str) -> None:
    """Save the classifier in both formats with its card into output_dir (local or remote)."""
    with tempfile.TemporaryDirectory() as scratch:
        local_dir = output_dir if not storage.is_remote(output_dir) else scratch
        os.makedirs(local_dir, exist_ok=True)
        model.save(os.path.join(local_dir, MODEL_FILE))
        _write_saved_model(model, card.image_size, os.path.join(local_dir, SAVED_MODEL_DIR))
        with open(os.path.join(local_dir, MODEL_CARD_FILE), "w", encoding="utf-8") as handle:
            handle.write(card.to_json())
        if local_dir != output_dir:
            storage.upload_dir(local_dir, output_dir)
    logger.info("Exported model to %s", output_dir)


def _write_saved_model(model: keras.Model, image_size: int, path: str) -> None:
    """A SavedModel whose `serving_default` takes RGB images in [0, 255] and returns P(malignant).

    The signature applies the same VGG16 normalisation as `model.preprocessing`, so TF Serving or
    Vertex AI clients send resized RGB pixels, not normalised tensors.
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
