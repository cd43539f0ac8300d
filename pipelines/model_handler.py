"""The RunInference model handler: one batched forward pass gives P(malignant) and Grad-CAM.

Beam's own TensorFlow handler imports `tensorflow_hub` and loads SavedModels; ours loads the
training export's `model.keras` (through `model.model_card`, so `gs://` works), builds the
Grad-CAM model once per worker process (RunInference shares it between the process's threads),
and scores a whole batch with one call. Reading and decoding happen in `prepare_image`, the
handler's preprocessing function (which also takes the input quality measures of the decoded
image), and turning a result into its predictions.csv row (writing the Grad-CAM overlay, raising
the quality flags) its post-processing function, so RunInference's exception handling routes
unreadable files and failed writes to its dead-letter outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult

from model import storage
from model.preprocessing import OVERLAY_MAX_SIDE, prepare_measured_image
from model.quality import QualityMeasures, SizeRange
from model.tensorflow_runtime import load_tensorflow
from pipelines.heatmaps import prediction_row

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "ScoreImages"


class PreparedImage(NamedTuple):
    """One image ready for the model, plus the decoded original the heatmap overlay needs."""

    model_input: np.ndarray  # float32 [size, size, 3], normalised as in training
    original: np.ndarray | None  # uint8 [H, W, 3] RGB, longer side <= OVERLAY_MAX_SIDE, or None
    quality: QualityMeasures | None = None  # input quality measures of the decoded image


class ImageScore(NamedTuple):
    """The model's answer for one image."""

    p_malignant: float
    heatmap: np.ndarray | None  # float32 [h, w] in [0, 1] at the last conv layer's resolution


def read_and_prepare(
    path: str, image_size: int, keep_original: bool, max_bytes: int
) -> tuple[str, PreparedImage]:
    """Read and decode a file once: (path, model input, the original for Grad-CAM, quality).

    The model input is exactly `model.preprocessing.preprocess_image`'s; the original is kept
    (at most OVERLAY_MAX_SIDE on its longer side) for the overlay without a second decode; the
    quality measures are the training job's for the same file (`model.quality`).
    """
    data = storage.read_bytes(path, max_bytes=max_bytes)
    overlay_side = OVERLAY_MAX_SIDE if keep_original else None
    return path, PreparedImage(*prepare_measured_image(data, image_size, overlay_side))


@dataclasses.dataclass
class LoadedScorer:
    """What `load_model` returns: the classifier, its Grad-CAM view and the card's model id."""

    model: Any  # keras.Model
    grad_model: Any | None  # keras.Model mapping input -> [conv maps, logit], or None
    model_id: str


class GradCamModelHandler(ModelHandler[PreparedImage, PredictionResult, LoadedScorer]):
    """Loads a training export and scores batches with (optionally) Grad-CAM in one pass."""

    def __init__(
        self,
        model_dir: str,
        threshold: float,
        gradcam: bool = True,
        batch_size: int = 32,
        last_conv_layer: str | None = None,
        logit_layer: str | None = None,
    ):
        # Fixed-size batches (the last of a bundle may be smaller): the traced Grad-CAM
        # function accepts any batch size, and equal sizes keep throughput predictable.
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self._model_dir = model_dir
        self._threshold = float(threshold)
        self._gradcam = gradcam
        self._last_conv_layer = last_conv_layer
        self._logit_layer = logit_layer

    def load_model(self) -> LoadedScorer:
        """Load the export (staged from `gs://` if needed) and build the Grad-CAM model."""
        load_tensorflow()
        from model.gradcam import gradcam_model
        from model.model_card import load_exported_model

        start = time.perf_counter()
        model, card = load_exported_model(self._model_dir)
        grad_model = None
        if self._gradcam:
            grad_model = gradcam_model(
                model,
                last_conv_layer=self._last_conv_layer or card.last_conv_layer,
                logit_layer=self._logit_layer or card.logit_layer,
            )
        logger.info(
            "Worker process %d loaded model %s from %s in %.1fs",
            os.getpid(),
            card.model_id,
            self._model_dir,
            time.perf_counter() - start,
        )
        return LoadedScorer(model=model, grad_model=grad_model, model_id=card.model_id)

    def run_inference(
        self,
        batch: Sequence[PreparedImage],
        model: LoadedScorer,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """Score a batch with one forward pass (under a gradient tape when Grad-CAM is on)."""
        from model.gradcam import predict_with_gradcam

        images = np.stack([item.model_input for item in batch])
        if model.grad_model is not None:
            probabilities, heatmaps = predict_with_gradcam(
                model.grad_model, images, threshold=self._threshold
            )
        else:
            probabilities = np.asarray(model.model.predict_on_batch(images)).reshape(-1)
            heatmaps = [None] * len(batch)
        return [
            PredictionResult(item, ImageScore(float(p), heatmap), model.model_id)
            for item, p, heatmap in zip(batch, probabilities, heatmaps, strict=True)
        ]

    def get_num_bytes(self, batch: Sequence[PreparedImage]) -> int:
        """Array bytes of the batch (the default pickles it, which costs as much as scoring)."""
        return sum(
            item.model_input.nbytes + (item.original.nbytes if item.original is not None else 0)
            for item in batch
        )

    def get_metrics_namespace(self) -> str:
        """Namespace of RunInference's own metrics (load latency, inference counts)."""
        return METRICS_NAMESPACE


def keyed_scoring_handler(
    model_dir: str,
    image_size: int,
    threshold: float,
    heatmap_dir: str,
    gradcam: bool = True,
    batch_size: int = 32,
    max_bytes: int = storage.DEFAULT_MAX_BYTES,
    last_conv_layer: str | None = None,
    logit_layer: str | None = None,
    expected_sizes: SizeRange | None = None,
) -> ModelHandler:
    """Path -> ScoredImage: reads in preprocessing, writes the overlay in post-processing.

    expected_sizes: the training images' size range from the model card, for the
    unexpected_size flag (None: no size check).
    """
    handler = KeyedModelHandler(
        GradCamModelHandler(
            model_dir,
            threshold,
            gradcam=gradcam,
            batch_size=batch_size,
            last_conv_layer=last_conv_layer,
            logit_layer=logit_layer,
        )
    )
    return handler.with_preprocess_fn(
        functools.partial(
            read_and_prepare, image_size=image_size, keep_original=gradcam, max_bytes=max_bytes
        )
    ).with_postprocess_fn(
        functools.partial(
            prediction_row,
            heatmap_dir=heatmap_dir,
            threshold=threshold,
            expected_sizes=expected_sizes,
        )
    )
