"""HED stain colour jitter (Tellez et al. 2018) as TensorFlow graph ops, for the training input.

An RGB image (floats in [0, 255]) is turned into optical density with `model.image.quality`'s
definition, OD = -log10((I + 1) / 256) per channel, and split into haematoxylin, eosin and DAB
concentrations by Ruifrok-Johnston colour deconvolution: OD = C @ M, where the rows of M are
the unit OD vectors of the three stains, so C = OD @ inv(M). The jitter scales each stain's
concentration by a factor in [1 - s, 1 + s] and shifts it by an amount in [-s, s] (one draw per
image and stain), and the result goes back to RGB, clipped to [0, 255].

One addition to Tellez et al.: a jitter never takes a stain below none (a pixel's concentration
c becomes max(c * scale + shift, min(c, 0))). Without it a negative shift gives every pale pixel
a negative amount of stain, which shows as the stain's complementary colour: on the BreakHis
sample at s = 0.05, 7.4% of jittered images turned green enough to fail the input QC's H&E check
(`model.image.quality` stain_score); with the floor, 2.3%. The floor only moves a concentration back
towards its original value, so no statistic moves further than s allows.

Concentrations are in log10 OD units along each stain's unit vector. The default strength
(`model.constants.DEFAULT_STAIN_JITTER`, 0.05) comes from benchmarks/stain_variation.py on the
345 sample images (40 slides, one lab): across slides the mean tissue haematoxylin has median
0.12 and eosin 0.05; reaching the middle half of the slides needs s = 0.027 (H) and 0.098 (E),
their 5-95% range 0.087 and 0.154. The share of jittered images that fail the QC's H&E check
(none of the real ones do) is 0.3% at 0.02, 2.3% at 0.05, 5.3% at 0.1 and 7.5% at 0.15. 0.05
is the strongest of those that keeps it under 5%: it spans the middle half of the slides'
haematoxylin and half of that of their eosin.

D. Tellez et al., "Whole-slide mitosis detection in H&E breast histology using PHH3 as a
reference to train distilled stain-invariant convolutional networks", IEEE Transactions on
Medical Imaging 37(9):2126-2136, 2018 (the HED perturbation of their section II-D).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from model.image.quality import EOSIN_OD, HAEMATOXYLIN_OD

# DAB's OD vector from A. C. Ruifrok and D. A. Johnston (2001), Table 1, as in scikit-image's
# rgb_from_hed; H&E slides carry no DAB, so this channel holds what H and E leave unexplained.
DAB_OD = (0.268, 0.570, 0.776)
STAIN_NAMES: tuple[str, str, str] = ("haematoxylin", "eosin", "dab")

# 256: the OD of model/image/quality.py treats level I as (I + 1) / 256 of the incident light.
_LIGHT = 256.0
_MAX_LEVEL = 255.0
_LN10 = float(np.log(10.0))


def stain_matrix() -> np.ndarray:
    """M (3 x 3, float64): the unit OD vectors of haematoxylin, eosin and DAB as rows."""
    rows = np.array([HAEMATOXYLIN_OD, EOSIN_OD, DAB_OD], dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# NumPy, not tf.constant: a tensor made at import would start TensorFlow's eager context, and a
# multi-worker strategy must configure collective ops before that (train_job.fitting.distribute).
_STAINS_FROM_OD = np.linalg.inv(stain_matrix()).astype(np.float32)
_OD_FROM_STAINS = stain_matrix().astype(np.float32)


def optical_density(rgb: tf.Tensor) -> tf.Tensor:
    """-log10((I + 1) / 256) per channel of float RGB levels in [0, 255]."""
    return tf.math.log((rgb + 1.0) / _LIGHT) * (-1.0 / _LN10)


def rgb_from_optical_density(od: tf.Tensor) -> tf.Tensor:
    """The RGB levels of an optical density (the inverse of `optical_density`), unclipped."""
    return _LIGHT * tf.exp(od * -_LN10) - 1.0


def _times(values: tf.Tensor, matrix: np.ndarray) -> tf.Tensor:
    """values (any shape, last axis 3) @ matrix, as one 2-D matmul (a batched matvec over every
    pixel is several times slower)."""
    return tf.reshape(tf.matmul(tf.reshape(values, [-1, 3]), matrix), tf.shape(values))


def stain_concentrations(rgb: tf.Tensor) -> tf.Tensor:
    """Haematoxylin, eosin and DAB concentrations (last axis) of float RGB levels (last axis)."""
    return _times(optical_density(rgb), _STAINS_FROM_OD)


def rgb_from_concentrations(concentrations: tf.Tensor) -> tf.Tensor:
    """The RGB levels (unclipped) of H, E and DAB concentrations (last axis)."""
    return rgb_from_optical_density(_times(concentrations, _OD_FROM_STAINS))


def jitter_factors(strength: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(scale, shift), each of shape [3]: U[1 - s, 1 + s] and U[-s, s], determined by `seed`."""
    draws = tf.random.stateless_uniform([2, 3], seed, minval=-1.0, maxval=1.0)
    return 1.0 + strength * draws[0], strength * draws[1]


def perturb_stains(rgb: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """rgb (H x W x 3 floats in [0, 255]) with each stain's concentration c -> c * scale + shift
    (but not below min(c, 0)), back in RGB and clipped to [0, 255]."""
    concentrations = stain_concentrations(rgb)
    perturbed = tf.maximum(concentrations * scale + shift, tf.minimum(concentrations, 0.0))
    return tf.clip_by_value(rgb_from_concentrations(perturbed), 0.0, _MAX_LEVEL)


def stain_jitter(rgb: tf.Tensor, strength: float, seed: tf.Tensor) -> tf.Tensor:
    """A random HED colour variant of a float RGB image, fully determined by `seed` ([2] ints).

    strength s: every stain is scaled by a factor in [1 - s, 1 + s] and shifted by an amount in
    [-s, s] (log10 OD units); s = 0 returns the image (within float rounding).
    """
    scale, shift = jitter_factors(strength, seed)
    return perturb_stains(rgb, scale, shift)
