"""The RunInference model handler: one batched forward pass gives P(malignant) and Grad-CAM.

Beam's own TensorFlow handler imports `tensorflow_hub` and loads SavedModels; ours loads the
training export's `model.keras` (through `model.network.model_card`, so `gs://` works), builds the
Grad-CAM model once per worker process (RunInference shares it between the process's threads),
and scores a batch of `--batch_size` images with one call per forward pass. With `--tta K` a
pass takes every one of the K views of each of its images, and at most `--batch_size` views
(`model.network.tta.images_per_pass`), so the pass's memory does not grow with K. Reading and
decoding happen in `prepare_image`, the handler's preprocessing function (which also takes the input
quality measures of the decoded image), and turning a result into its predictions.csv row
(writing the Grad-CAM overlay, raising the quality flags) its post-processing function, so
RunInference's exception handling routes unreadable files and failed writes to its dead-letter
outputs.

Several exports are scored by `pipelines.ensemble.model_handler.EnsembleModelHandler`, which
shares this module's reading, passes and results; `pipelines.scoring.keyed_handler` picks the
handler of a run and keys it by path. One export is always scored by `GradCamModelHandler`.

Before a worker process loads a model, TensorFlow's GPU memory growth is turned on
(`pipelines.scoring.worker_devices`), so the several SDK processes of a GPU VM can share its GPU.
With `--model_copies N` the handlers ask Beam to load exactly N copies per machine, shared by all
its processes (Beam's `model_copies`; 1 is its `large_model`): the loaded models then live in a
process of their own and RunInference reaches them through Beam's proxy, which forwards method
calls only, so a batch is scored by calling the loaded object's `score` method, never by reading
its fields.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from model import storage
from model.image.preprocessing import OVERLAY_MAX_SIDE, prepare_measured_image
from model.image.quality import QualityMeasures
from pipelines.scoring.worker_devices import enable_gpu_memory_growth

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "ScoreImages"


class PreparedImage(NamedTuple):
    """One image ready for the model, plus the decoded original the heatmap overlay needs."""

    model_input: np.ndarray  # float32 [size, size, 3], normalised as in training
    original: np.ndarray | None  # uint8 [H, W, 3] RGB, longer side <= OVERLAY_MAX_SIDE, or None
    quality: QualityMeasures | None = None  # input quality measures of the decoded image


class ImageScore(NamedTuple):
    """The model's answer for one image."""

    p_malignant: float  # sigmoid of the mean logit over the test-time views
    heatmap: np.ndarray | None  # raw Grad-CAM of the malignant logit, float32 [h, w] >= 0
    p_std: float = 0.0  # standard deviation of the views' probabilities
    heatmap_peak: float | None = None  # the raw map's maximum (None without Grad-CAM)
    member_std: float | None = None  # spread of the ensemble members' p (None: one model)


def read_and_prepare(
    path: str, image_size: int, keep_original: bool, max_bytes: int
) -> tuple[str, PreparedImage]:
    """Read and decode a file once: (path, model input, the original for Grad-CAM, quality).

    The model input is exactly `model.image.preprocessing.preprocess_image`'s; the original is kept
    (at most OVERLAY_MAX_SIDE on its longer side) for the overlay without a second decode; the
    quality measures are the training job's for the same file (`model.image.quality`).
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
    # keras.Model mapping input -> logit: test-time views without Grad-CAM, else None
    logit_model: Any | None = None

    def scored_model_id(self) -> str:
        """The model id the results are reported under (a method: see the module docstring)."""
        return self.model_id

    def score(self, images: np.ndarray, tta: int) -> list[ImageScore]:
        """The scores of one forward pass over every one of the tta views of images."""
        from model.image.overlay import heatmap_peaks
        from model.network.gradcam import predict_with_gradcam
        from model.network.tta import predict_with_tta

        if self.grad_model is not None:
            result = predict_with_gradcam(self.grad_model, images, tta=tta)
            return [
                ImageScore(float(p), heatmap, float(spread), float(peak))
                for p, spread, heatmap, peak in zip(
                    result.p_malignant,
                    result.p_std,
                    result.heatmaps,
                    heatmap_peaks(result.heatmaps),
                    strict=True,
                )
            ]
        if tta == 1:  # the classifier's own output, as before test-time views
            probabilities = np.asarray(self.model.predict_on_batch(images)).reshape(-1)
            spreads = np.zeros_like(probabilities)
        else:
            probabilities, spreads = predict_with_tta(self.logit_model, images, tta)
        return [
            ImageScore(float(p), None, float(spread))
            for p, spread in zip(probabilities, spreads, strict=True)
        ]


def load_scorer(
    model_dir: str,
    gradcam: bool,
    last_conv_layer: str | None = None,
    logit_layer: str | None = None,
    logits: bool = False,
) -> LoadedScorer:
    """One export loaded for scoring: its Grad-CAM model (with gradcam), else its logit model
    when `logits` (test-time views, or an ensemble's member); layer names default to the card's.
    """
    enable_gpu_memory_growth()  # before the first model of the process touches a GPU
    from model.network.gradcam import gradcam_model
    from model.network.model_card import load_exported_model
    from model.network.tta import logit_model

    start = time.perf_counter()
    model, card = load_exported_model(model_dir)
    logit_layer = logit_layer or card.logit_layer
    grad_model = logits_of = None
    if gradcam:
        grad_model = gradcam_model(
            model,
            last_conv_layer=last_conv_layer or card.last_conv_layer,
            logit_layer=logit_layer,
        )
    elif logits:
        logits_of = logit_model(model, logit_layer)
    logger.info(
        "Worker process %d loaded model %s from %s in %.1fs",
        os.getpid(),
        card.model_id,
        model_dir,
        time.perf_counter() - start,
    )
    return LoadedScorer(
        model=model, grad_model=grad_model, model_id=card.model_id, logit_model=logits_of
    )


class GradCamModelHandler(ModelHandler[PreparedImage, PredictionResult, LoadedScorer]):
    """Loads a training export and scores batches with (optionally) Grad-CAM in one pass."""

    def __init__(
        self,
        model_dir: str,
        gradcam: bool = True,
        batch_size: int = 32,
        last_conv_layer: str | None = None,
        logit_layer: str | None = None,
        tta: int = 1,
        model_copies: int | None = None,
    ):
        # Fixed-size batches of images (the last of a bundle may be smaller): the traced
        # functions accept any batch size, and equal sizes keep throughput predictable.
        # model_copies None: one model per worker process (Beam's default).
        super().__init__(
            min_batch_size=batch_size, max_batch_size=batch_size, model_copies=model_copies
        )
        self._model_dir = model_dir
        self._batch_size = batch_size
        self._tta = tta
        self._gradcam = gradcam
        self._last_conv_layer = last_conv_layer
        self._logit_layer = logit_layer

    def load_model(self) -> LoadedScorer:
        """Load the export (staged from `gs://` if needed) and build the Grad-CAM model."""
        return load_scorer(
            self._model_dir,
            gradcam=self._gradcam,
            last_conv_layer=self._last_conv_layer,
            logit_layer=self._logit_layer,
            logits=self._tta > 1,
        )

    def run_inference(
        self,
        batch: Sequence[PreparedImage],
        model: LoadedScorer,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """Score a batch: one forward pass (under a gradient tape with Grad-CAM) per chunk of
        images whose views fit in --batch_size, each image's views in the same pass."""
        return scored_in_passes(batch, model, self._batch_size, self._tta)

    def get_num_bytes(self, batch: Sequence[PreparedImage]) -> int:
        """Array bytes of the batch (the default pickles it, which costs as much as scoring)."""
        return array_bytes(batch)

    def get_metrics_namespace(self) -> str:
        """Namespace of RunInference's own metrics (load latency, inference counts)."""
        return METRICS_NAMESPACE


def scored_in_passes(
    batch: Sequence[PreparedImage],
    model: Any,  # LoadedScorer, or an ensemble's (pipelines.ensemble.model_handler)
    batch_size: int,
    tta: int,
) -> list[PredictionResult]:
    """The batch's results, `model.score` called once per chunk of images whose views fit in
    batch_size (`model.network.tta.images_per_pass`), so a pass's memory does not grow with tta."""
    from model.network.tta import images_per_pass

    step = images_per_pass(batch_size, tta)
    scores: list[ImageScore] = []
    for start in range(0, len(batch), step):
        scores += model.score(
            np.stack([item.model_input for item in batch[start : start + step]]), tta
        )
    model_id = model.scored_model_id()
    return [
        PredictionResult(item, result, model_id) for item, result in zip(batch, scores, strict=True)
    ]


def array_bytes(batch: Sequence[PreparedImage]) -> int:
    return sum(
        item.model_input.nbytes + (item.original.nbytes if item.original is not None else 0)
        for item in batch
    )
