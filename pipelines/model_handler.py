"""The RunInference model handler: one batched forward pass gives P(malignant) and Grad-CAM.

Beam's own TensorFlow handler imports `tensorflow_hub` and loads SavedModels; ours loads the
training export's `model.keras` (through `model.model_card`, so `gs://` works), builds the
Grad-CAM model once per worker process (RunInference shares it between the process's threads),
and scores a batch of `--batch_size` images with one call per forward pass. With `--tta K` a
pass takes every one of the K views of each of its images, and at most `--batch_size` views
(`model.tta.images_per_pass`), so the pass's memory does not grow with K. Reading and decoding
happen in `prepare_image`, the handler's preprocessing function (which also takes the input
quality measures of the decoded image), and turning a result into its predictions.csv row
(writing the Grad-CAM overlay, raising the quality flags) its post-processing function, so
RunInference's exception handling routes unreadable files and failed writes to its dead-letter
outputs.

Several exports (`pipelines.ensemble`) are scored by `EnsembleModelHandler`: every member is
loaded once per worker process, and each chunk of images goes through one batched pass per
member (all views of its images); the members' view logits and maps are combined by the rules of
`pipelines.ensemble`. One export is always scored by `GradCamModelHandler`, as before ensembles.

Before a worker process loads a model, TensorFlow's GPU memory growth is turned on
(`pipelines.worker_devices`), so the several SDK processes of a GPU VM can share its GPU. With
`--model_copies N` the handlers ask Beam to load exactly N copies per machine, shared by all its
processes (Beam's `model_copies`; 1 is its `large_model`): the loaded models then live in a
process of their own and RunInference reaches them through Beam's proxy, which forwards method
calls only, so a batch is scored by calling the loaded object's `score` method, never by reading
its fields.
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
from pipelines.ensemble import Member, combine_heatmaps, combine_logits, ensemble_model_id
from pipelines.heatmaps import DEFAULT_HEATMAP_FORMAT, prediction_row, writes_heatmap_files
from pipelines.worker_devices import enable_gpu_memory_growth

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
    # keras.Model mapping input -> logit: test-time views without Grad-CAM, else None
    logit_model: Any | None = None

    def scored_model_id(self) -> str:
        """The model id the results are reported under (a method: see the module docstring)."""
        return self.model_id

    def score(self, images: np.ndarray, tta: int) -> list[ImageScore]:
        """The scores of one forward pass over every one of the tta views of images."""
        from model.gradcam import predict_with_gradcam
        from model.overlay import heatmap_peaks
        from model.tta import predict_with_tta

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
    from model.gradcam import gradcam_model
    from model.model_card import load_exported_model
    from model.tta import logit_model

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
        return _scored_in_passes(batch, model, self._batch_size, self._tta)

    def get_num_bytes(self, batch: Sequence[PreparedImage]) -> int:
        """Array bytes of the batch (the default pickles it, which costs as much as scoring)."""
        return _array_bytes(batch)

    def get_metrics_namespace(self) -> str:
        """Namespace of RunInference's own metrics (load latency, inference counts)."""
        return METRICS_NAMESPACE


@dataclasses.dataclass
class LoadedEnsemble:
    """What `EnsembleModelHandler.load_model` returns: every member, loaded, in member order."""

    members: tuple[LoadedScorer, ...]
    model_id: str  # the ensemble's (pipelines.ensemble.ensemble_model_id)
    heatmap_scales: tuple[float | None, ...]  # each member's card's, in member order

    def scored_model_id(self) -> str:
        """The model id the results are reported under (a method: see the module docstring)."""
        return self.model_id

    def score(self, images: np.ndarray, tta: int) -> list[ImageScore]:
        """The ensemble's scores of images: each member's pass over the tta views, combined."""
        from model.gradcam import predict_view_logits_with_gradcam
        from model.overlay import heatmap_peaks
        from model.tta import predict_view_logits

        view_logits, maps = [], []
        for member in self.members:
            if member.grad_model is not None:
                logits, heatmaps = predict_view_logits_with_gradcam(
                    member.grad_model, images, tta=tta
                )
                view_logits.append(logits)
                maps.append(heatmaps)
            else:
                view_logits.append(predict_view_logits(member.logit_model, images, tta))
        combined = combine_logits(np.stack(view_logits))
        if not maps:
            return [
                ImageScore(float(p), None, float(spread), None, float(disagreement))
                for p, spread, disagreement in zip(
                    combined.p_malignant, combined.p_std, combined.member_std, strict=True
                )
            ]
        heatmaps = combine_heatmaps(maps, list(self.heatmap_scales))
        return [
            ImageScore(float(p), heatmap, float(spread), float(peak), float(disagreement))
            for p, spread, heatmap, peak, disagreement in zip(
                combined.p_malignant,
                combined.p_std,
                heatmaps,
                heatmap_peaks(heatmaps),
                combined.member_std,
                strict=True,
            )
        ]


class EnsembleModelHandler(ModelHandler[PreparedImage, PredictionResult, LoadedEnsemble]):
    """Loads several exports once per worker process and scores each batch with all of them.

    Each chunk of images (at most --batch_size views a pass) goes through one batched pass per
    member, so a pass's memory is the single model's whatever the number of members; the
    weights of every member stay loaded (see the module docstring).
    """

    def __init__(
        self,
        members: Sequence[Member],
        gradcam: bool = True,
        batch_size: int = 32,
        tta: int = 1,
        model_copies: int | None = None,
    ):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        super().__init__(
            min_batch_size=batch_size, max_batch_size=batch_size, model_copies=model_copies
        )
        self._members = tuple(members)
        self._batch_size = batch_size
        self._tta = tta
        self._gradcam = gradcam

    def load_model(self) -> LoadedEnsemble:
        """Load every member (Grad-CAM models with Grad-CAM, logit models without)."""
        loaded = tuple(
            load_scorer(
                member.model_dir,
                gradcam=self._gradcam,
                last_conv_layer=member.last_conv_layer,
                logit_layer=member.logit_layer,
                logits=True,
            )
            for member in self._members
        )
        model_id = ensemble_model_id([member.model_id for member in loaded])
        logger.info(
            "Worker process %d holds ensemble %s of %d models", os.getpid(), model_id, len(loaded)
        )
        return LoadedEnsemble(
            members=loaded,
            model_id=model_id,
            heatmap_scales=tuple(member.heatmap_scale for member in self._members),
        )

    def run_inference(
        self,
        batch: Sequence[PreparedImage],
        model: LoadedEnsemble,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """Score a batch: per chunk of images whose views fit in --batch_size, one pass per
        member (under a gradient tape with Grad-CAM), then the members' answers combined."""
        return _scored_in_passes(batch, model, self._batch_size, self._tta)

    def get_num_bytes(self, batch: Sequence[PreparedImage]) -> int:
        """Array bytes of the batch (the default pickles it, which costs as much as scoring)."""
        return _array_bytes(batch)

    def get_metrics_namespace(self) -> str:
        """Namespace of RunInference's own metrics (load latency, inference counts)."""
        return METRICS_NAMESPACE


def _scored_in_passes(
    batch: Sequence[PreparedImage],
    model: LoadedScorer | LoadedEnsemble,
    batch_size: int,
    tta: int,
) -> list[PredictionResult]:
    """The batch's results, `model.score` called once per chunk of images whose views fit in
    batch_size (`model.tta.images_per_pass`), so a pass's memory does not grow with tta."""
    from model.tta import images_per_pass

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


def _array_bytes(batch: Sequence[PreparedImage]) -> int:
    return sum(
        item.model_input.nbytes + (item.original.nbytes if item.original is not None else 0)
        for item in batch
    )


def scoring_handler(
    members: Sequence[Member],
    gradcam: bool = True,
    batch_size: int = 32,
    tta: int = 1,
    model_copies: int | None = None,
) -> ModelHandler:
    """The handler for a run's members: the single-model handler for one, else the ensemble's.

    model_copies: models loaded per machine and shared by its processes (None: one per process).
    """
    if len(members) == 1:
        (member,) = members
        return GradCamModelHandler(
            member.model_dir,
            gradcam=gradcam,
            batch_size=batch_size,
            last_conv_layer=member.last_conv_layer,
            logit_layer=member.logit_layer,
            tta=tta,
            model_copies=model_copies,
        )
    return EnsembleModelHandler(
        members, gradcam=gradcam, batch_size=batch_size, tta=tta, model_copies=model_copies
    )


def keyed_scoring_handler(
    model: str | Sequence[Member],
    image_size: int,
    threshold: float,
    heatmap_dir: str,
    gradcam: bool = True,
    batch_size: int = 32,
    max_bytes: int = storage.DEFAULT_MAX_BYTES,
    last_conv_layer: str | None = None,
    logit_layer: str | None = None,
    expected_sizes: SizeRange | None = None,
    tta: int = 1,
    heatmap_scale: float | None = None,
    heatmap_format: str = DEFAULT_HEATMAP_FORMAT,
    model_copies: int | None = None,
) -> ModelHandler:
    """Path -> ScoredImage: reads in preprocessing, writes the overlay in post-processing.

    model: one export folder (scored with last_conv_layer and logit_layer, by default its card's),
    or the run's members (`pipelines.ensemble.Member`; one member is that export alone).
    expected_sizes: the training images' size range from the model card, for the
    unexpected_size flag (None: no size check). heatmap_scale is the model card's shared
    Grad-CAM scale (None: each map by its own peak). heatmap_format: the overlay files'
    (`pipelines.heatmaps.HEATMAP_FORMATS`; "none" keeps no original and writes no file).
    model_copies: models per machine shared by its processes (None: one per worker process).
    """
    if isinstance(model, str):
        scorer = GradCamModelHandler(
            model,
            gradcam=gradcam,
            batch_size=batch_size,
            last_conv_layer=last_conv_layer,
            logit_layer=logit_layer,
            tta=tta,
            model_copies=model_copies,
        )
    else:
        scorer = scoring_handler(
            model, gradcam=gradcam, batch_size=batch_size, tta=tta, model_copies=model_copies
        )
    handler = KeyedModelHandler(scorer)
    return handler.with_preprocess_fn(
        functools.partial(
            read_and_prepare,
            image_size=image_size,
            keep_original=gradcam and writes_heatmap_files(heatmap_format),
            max_bytes=max_bytes,
        )
    ).with_postprocess_fn(
        functools.partial(
            prediction_row,
            heatmap_dir=heatmap_dir,
            threshold=threshold,
            expected_sizes=expected_sizes,
            heatmap_scale=heatmap_scale,
            heatmap_format=heatmap_format,
        )
    )
