"""The RunInference handler of an ensemble: every member loaded once per worker process, and
each chunk of images through one batched pass per member (all views of its images); the
members' view logits and maps are combined by the rules of `pipelines.ensemble.members`.
Reading, passes and results are the single model's (`pipelines.scoring.model_handler`)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipelines.ensemble.members import Member, combine_heatmaps, combine_logits, ensemble_model_id
from pipelines.scoring.model_handler import (
    METRICS_NAMESPACE,
    ImageScore,
    LoadedScorer,
    PreparedImage,
    array_bytes,
    load_scorer,
    scored_in_passes,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedEnsemble:
    """What `EnsembleModelHandler.load_model` returns: every member, loaded, in member order."""

    members: tuple[LoadedScorer, ...]
    model_id: str  # the ensemble's (pipelines.ensemble.members.ensemble_model_id)
    heatmap_scales: tuple[float | None, ...]  # each member's card's, in member order

    def scored_model_id(self) -> str:
        """The model id results are reported under (a method: `pipelines.scoring.model_handler`)."""
        return self.model_id

    def score(self, images: np.ndarray, tta: int) -> list[ImageScore]:
        """The ensemble's scores of images: each member's pass over the tta views, combined."""
        from model.image.overlay import heatmap_peaks
        from model.network.gradcam import predict_view_logits_with_gradcam
        from model.network.tta import predict_view_logits

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
    weights of every member stay loaded (see `pipelines.scoring.model_handler`).
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
        return scored_in_passes(batch, model, self._batch_size, self._tta)

    def get_num_bytes(self, batch: Sequence[PreparedImage]) -> int:
        """Array bytes of the batch (the default pickles it, which costs as much as scoring)."""
        return array_bytes(batch)

    def get_metrics_namespace(self) -> str:
        """Namespace of RunInference's own metrics (load latency, inference counts)."""
        return METRICS_NAMESPACE
