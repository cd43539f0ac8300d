"""The keyed RunInference handler of a run: path in, ScoredImage out, for one export or an
ensemble. It reads and prepares an image in preprocessing and writes its overlay in
post-processing, so RunInference's dead letters catch unreadable files and failed writes."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler

from model import storage
from model.image.quality import SizeRange
from pipelines.ensemble.members import Member
from pipelines.ensemble.model_handler import EnsembleModelHandler
from pipelines.scoring.heatmaps import DEFAULT_HEATMAP_FORMAT, prediction_row, writes_heatmap_files
from pipelines.scoring.model_handler import GradCamModelHandler, read_and_prepare


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
    or the run's members (`pipelines.ensemble.members.Member`; one member is that export alone).
    expected_sizes: the training images' size range from the model card, for the
    unexpected_size flag (None: no size check). heatmap_scale is the model card's shared
    Grad-CAM scale (None: each map by its own peak). heatmap_format: the overlay files'
    (`pipelines.scoring.heatmaps.HEATMAP_FORMATS`; "none" keeps no original and writes no file).
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
