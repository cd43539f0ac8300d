"""Scoring with several training exports as one ensemble: its members, and each rule defined once.

- P(malignant) is the sigmoid of the mean logit over members and test-time views: each member's
  logit is its card's `logit_layer` (the calibrated logit, so every member speaks in its own
  calibrated log-odds), and averaging log-odds rather than probabilities keeps one confident
  member from being diluted, as `model.network.tta` does for views.
- `p_std` keeps its meaning (the spread over the views): the standard deviation over views of the
  ensemble's per-view probability, sigmoid(mean over members of that view's logit).
- `member_std` is the standard deviation over members of each member's own P(malignant) (the
  sigmoid of its mean view logit): how much models trained on other patients disagree.
- The threshold is the sigmoid of the mean of the members' thresholds in log-odds
  (`ensemble_threshold`): if every member's logit sits at its own threshold, the ensemble's
  mean logit sits at the ensemble's.
- Grad-CAM: each member's raw map is divided by its card's `heatmap_scale` (the member's
  full-colour level, its own units) and the quotients are averaged, so every member weighs the
  same and the mean map is drawn on a shared scale of 1. When some member has no scale the raw
  maps are averaged and each mean map is shown on its own peak.
- The run's model id is `ensemble-` and 16 hex digits of the SHA-256 of the sorted member ids.

One member is exactly the single-model scorer: its card's threshold and model id, raw maps on
its card's scale, `member_std` empty.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

from model.image.quality import SizeRange

ENSEMBLE_ID_PREFIX = "ensemble-"
SINGLE_THRESHOLD_RULE = "the model card's threshold"
ENSEMBLE_THRESHOLD_RULE = "sigmoid of the mean of the members' thresholds in log-odds"
SINGLE_HEATMAP_UNITS = "the model's raw Grad-CAM of its card's logit_layer"
SCALED_HEATMAP_UNITS = (
    "mean over members of each member's raw map divided by its card's heatmap_scale "
    "(1 = a member's full-colour level)"
)
RAW_HEATMAP_UNITS = (
    "mean of the members' raw maps (some member has no heatmap_scale, so members' units differ)"
)
# Thresholds are clipped this far inside (0, 1) before taking log-odds, so a member threshold of
# 0 or 1 (call everything one way) pulls the mean strongly without making it infinite.
THRESHOLD_CLIP = 1e-7


class Member(NamedTuple):
    """One export of an ensemble, with what its worker and its summary entry need."""

    model_dir: str
    model_id: str
    threshold: float
    last_conv_layer: str
    logit_layer: str
    heatmap_scale: float | None
    eval_tta: int
    temperature: float
    given_as: str  # the --model_dir value it came from (itself, or its cross-validation folder)

    def summary(self) -> dict:
        """The member's entry in summary.json's `members`."""
        return {
            "model_id": self.model_id,
            "model_dir": self.model_dir,
            "given_as": self.given_as,
            "threshold": self.threshold,
            "eval_tta": self.eval_tta,
            "temperature": self.temperature,
            "heatmap_scale": self.heatmap_scale,
        }


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """The members a run scores with, and the run-level values their rules give."""

    members: tuple[Member, ...]
    image_size: int
    expected_sizes: SizeRange | None  # the union of the members' training image sizes

    @property
    def model_id(self) -> str:
        """The run's model id (`ensemble_model_id`)."""
        return ensemble_model_id([member.model_id for member in self.members])

    @property
    def threshold(self) -> float:
        """The run's decision threshold (`ensemble_threshold`)."""
        return ensemble_threshold([member.threshold for member in self.members])

    @property
    def heatmap_scale(self) -> float | None:
        """The display scale of the run's maps (`heatmap_display_scale`)."""
        return heatmap_display_scale(self.members)


def threshold_rule(member_count: int) -> str:
    """How the run's threshold is set, as summary.json and report.html say it."""
    return SINGLE_THRESHOLD_RULE if member_count == 1 else ENSEMBLE_THRESHOLD_RULE


def scaled_maps(members: Sequence[Member]) -> bool:
    """Whether member maps are divided by their scales before averaging: several members,
    every one with a heatmap_scale."""
    return len(members) > 1 and all(member.heatmap_scale is not None for member in members)


def heatmap_display_scale(members: Sequence[Member]) -> float | None:
    """The display scale of the run's maps: the card's for one member, 1 for scaled maps,
    None (each map on its own peak) otherwise."""
    if len(members) == 1:
        return members[0].heatmap_scale
    return 1.0 if scaled_maps(members) else None


def heatmap_units(members: Sequence[Member]) -> str:
    """What a map value (and heatmap_peak) means in a run with these members."""
    if len(members) == 1:
        return SINGLE_HEATMAP_UNITS
    return SCALED_HEATMAP_UNITS if scaled_maps(members) else RAW_HEATMAP_UNITS


def ensemble_model_id(model_ids: Sequence[str]) -> str:
    """One member's own id; for several, a stable id of the set (any order gives the same)."""
    if len(model_ids) == 1:
        return model_ids[0]
    digest = hashlib.sha256("\n".join(sorted(model_ids)).encode("utf-8")).hexdigest()
    return ENSEMBLE_ID_PREFIX + digest[:16]


def _log_odds(p: float) -> float:
    p = min(max(float(p), THRESHOLD_CLIP), 1.0 - THRESHOLD_CLIP)
    return math.log(p / (1.0 - p))


def ensemble_threshold(thresholds: Sequence[float]) -> float:
    """The one threshold for several members: sigmoid(mean(logit(t_k))); one member's own."""
    if len(thresholds) == 1:
        return float(thresholds[0])
    mean = sum(_log_odds(t) for t in thresholds) / len(thresholds)
    return 1.0 / (1.0 + math.exp(-mean))


class EnsembleScores(NamedTuple):
    """The ensemble's answer for N images."""

    p_malignant: np.ndarray  # [N] sigmoid of the mean logit over members and views
    p_std: np.ndarray  # [N] spread over views of the ensemble's per-view probability
    member_std: np.ndarray  # [N] spread over members of their own probabilities


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def combine_logits(view_logits: np.ndarray) -> EnsembleScores:
    """The ensemble's scores from every member's view logits, [members, N, views]."""
    view_logits = np.asarray(view_logits, dtype=np.float64)
    per_view = view_logits.mean(axis=0)  # [N, views]: the ensemble's logit of each view
    per_member = _sigmoid(view_logits.mean(axis=2))  # [members, N]: each member's own p
    return EnsembleScores(
        p_malignant=_sigmoid(per_view.mean(axis=1)),
        p_std=_sigmoid(per_view).std(axis=1),
        member_std=per_member.std(axis=0),
    )


def _resized(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A raw [h, w] map resized bilinearly to shape (unchanged when it has it)."""
    if heatmap.shape == shape:
        return heatmap
    image = Image.fromarray(np.asarray(heatmap, dtype=np.float32))
    return np.asarray(image.resize(shape[::-1], Image.Resampling.BILINEAR), dtype=np.float32)


def combine_heatmaps(
    member_maps: Sequence[np.ndarray], scales: Sequence[float | None]
) -> np.ndarray:
    """The mean map [N, h, w] of the members' [N, h_k, w_k] maps, each divided by its scale
    when every member has one (maps of other sizes are resized to the largest)."""
    shape = max((maps.shape[1:] for maps in member_maps), key=lambda side: side[0] * side[1])
    divide = all(scale is not None for scale in scales)
    total = np.zeros((len(member_maps[0]), *shape), dtype=np.float64)
    for maps, scale in zip(member_maps, scales, strict=True):
        resized = np.stack([_resized(heatmap, shape) for heatmap in maps])
        total += resized / scale if divide else resized
    return (total / len(member_maps)).astype(np.float32)
