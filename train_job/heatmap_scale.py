"""The Grad-CAM heatmap scale of an existing export, from its own validation split (split.csv).

    python -m train_job.heatmap_scale --model_dir EXPORT [--write_card]

Exports made before the training job recorded `heatmap_scale` show each map on its own peak.
This computes the scale exactly as training does (`model.network.gradcam.heatmap_scale` on the
validation images, with the card's layers and eval_tta), prints it as JSON, and with
`--write_card` records it in the export's model_card.json (nothing else changes; the card is
replaced whole, so a kill leaves the old one or the new). Exit 2 when the folder has no
split.csv or card, 1 when a validation image cannot be read (moved since training: the scale
would not be the training split's).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from model import storage
from model.atomic import replace_file
from model.constants import MODEL_CARD_FILE
from model.image.preprocessing import preprocess_image
from model.network.model_card import ModelCard, load_exported_model
from model.network.tensorflow_runtime import load_tensorflow, set_verbosity

# train_job.export.files's name for the file; not imported, so TensorFlow loads after set_verbosity.
SPLIT_FILE = "split.csv"

logger = logging.getLogger(__name__)

BATCH_SIZE = 32


def validation_paths(model_dir: str) -> list[str]:
    """The image paths split.csv puts in the validation split."""
    text = storage.read_text(storage.join(model_dir, SPLIT_FILE))
    return [
        row["image_path"]
        for row in csv.DictReader(io.StringIO(text))
        if row["split"] == "validation"
    ]


def _batches(paths: Sequence[str], image_size: int, max_bytes: int) -> Iterator[np.ndarray]:
    for start in range(0, len(paths), BATCH_SIZE):
        yield np.stack(
            [
                preprocess_image(storage.read_bytes(path, max_bytes=max_bytes), image_size)
                for path in paths[start : start + BATCH_SIZE]
            ]
        )


def export_heatmap_scale(
    model_dir: str, max_bytes: int = storage.DEFAULT_MAX_BYTES
) -> tuple[ModelCard, float | None, int]:
    """(the export's card, its heatmap scale from its validation split, validation images)."""
    load_tensorflow()
    from model.network.gradcam import gradcam_model, heatmap_scale
    from model.network.tta import pass_chunks

    model, card = load_exported_model(model_dir)
    paths = validation_paths(model_dir)
    grad_model = gradcam_model(model, card.last_conv_layer, card.logit_layer)
    batches = pass_chunks(_batches(paths, card.image_size, max_bytes), card.eval_tta)
    return card, heatmap_scale(grad_model, batches, card.eval_tta), len(paths)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the export's scale as JSON; with --write_card, record it in its card."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model_dir", required=True, help="a training export, local or gs://")
    parser.add_argument(
        "--write_card", action="store_true", help="record the scale in model_card.json"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="TensorFlow's own messages")
    args = parser.parse_args(argv)
    set_verbosity(args.verbose)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in (SPLIT_FILE, MODEL_CARD_FILE):
        if not storage.exists(storage.join(args.model_dir, name)):
            print(f"error: --model_dir {args.model_dir} has no {name}", file=sys.stderr)
            return 2
    try:
        card, scale, images = export_heatmap_scale(args.model_dir)
    except (OSError, ValueError) as error:  # a moved or unreadable validation image, a bad card
        print(f"error: {args.model_dir}: {error}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "model_id": card.model_id,
                "heatmap_scale": scale,
                "validation_images": images,
                "eval_tta": card.eval_tta,
            }
        )
    )
    if args.write_card:
        updated = dataclasses.replace(card, heatmap_scale=scale)
        # Replaced whole: the card marks the export complete, so a kill must not leave half of it.
        text = updated.to_json().encode("utf-8")
        replace_file(
            storage.join(args.model_dir, MODEL_CARD_FILE), lambda stream: stream.write(text)
        )
        logger.info("Recorded heatmap_scale %s in %s", scale, args.model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
