"""HED stain jitter: identity at 0, the round trip, the range, and bounded moves on real tissue."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from model.image import quality
from model.image.stain import (
    DAB_OD,
    jitter_factors,
    optical_density,
    perturb_stains,
    rgb_from_concentrations,
    stain_concentrations,
    stain_jitter,
    stain_matrix,
)


def _random_image(seed: int = 0, size: int = 24) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (size, size, 3)), tf.float32)


def _seed(*values: int) -> tf.Tensor:
    return tf.constant(values, tf.int64)


def test_optical_density_is_the_quality_checks_definition():
    # One definition of OD: the stain jitter and the QC stain_score read colours the same way.
    levels = tf.constant(np.arange(256), tf.float32)
    np.testing.assert_allclose(optical_density(levels).numpy(), quality._OD_BY_LEVEL, atol=1e-6)


def test_the_stain_matrix_holds_the_quality_checks_h_and_e_and_ruifroks_dab():
    matrix = stain_matrix()
    for row, vector in zip(
        matrix, (quality.HAEMATOXYLIN_OD, quality.EOSIN_OD, DAB_OD), strict=True
    ):
        np.testing.assert_allclose(row, np.array(vector) / np.linalg.norm(vector))
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0)


def test_rgb_to_stains_and_back_is_exact_within_rounding():
    image = _random_image()
    back = rgb_from_concentrations(stain_concentrations(image)).numpy()
    np.testing.assert_allclose(back, image.numpy(), atol=0.02)
    assert np.array_equal(np.round(back), image.numpy())  # every uint8 level comes back


def test_pure_stains_deconvolve_into_their_own_channel():
    # A pixel with only eosin (OD = 0.5 x the eosin vector) has no haematoxylin and no DAB.
    eosin_only = 256.0 * 10.0 ** (-0.5 * stain_matrix()[1]) - 1.0
    concentrations = stain_concentrations(tf.constant(eosin_only, tf.float32)).numpy()
    np.testing.assert_allclose(concentrations, [0.0, 0.5, 0.0], atol=1e-5)


def test_strength_0_is_the_identity():
    image = _random_image(1)
    for seed in range(3):
        jittered = stain_jitter(image, 0.0, _seed(seed, 7)).numpy()
        np.testing.assert_allclose(jittered, image.numpy(), atol=0.02)


def test_outputs_stay_within_0_and_255_even_at_extreme_strengths():
    image = _random_image(2)
    for strength in (0.3, 0.9):
        for seed in range(5):
            jittered = stain_jitter(image, strength, _seed(seed, 1)).numpy()
            assert jittered.min() >= 0.0 and jittered.max() <= 255.0
            assert np.isfinite(jittered).all()
    darkest = perturb_stains(image, tf.constant([1.9] * 3), tf.constant([0.9] * 3)).numpy()
    palest = perturb_stains(image, tf.constant([0.1] * 3), tf.constant([-0.9] * 3)).numpy()
    assert darkest.min() == 0.0 and palest.max() == 255.0  # the clip is reached, and holds


def test_factors_fall_in_their_ranges_and_depend_only_on_the_seed():
    scales, shifts = zip(*(jitter_factors(0.1, _seed(seed, 3)) for seed in range(200)), strict=True)
    scales, shifts = np.stack(scales), np.stack(shifts)
    assert scales.shape == shifts.shape == (200, 3)
    assert scales.min() >= 0.9 and scales.max() <= 1.1
    assert shifts.min() >= -0.1 and shifts.max() <= 0.1
    # The draws use the range (not a constant) and differ between stains of one image.
    assert scales.max() - scales.min() > 0.15 and shifts.max() - shifts.min() > 0.15
    assert not np.allclose(scales[:, 0], scales[:, 1])
    again = jitter_factors(0.1, _seed(17, 3))
    np.testing.assert_array_equal(again[0], scales[17])
    np.testing.assert_array_equal(again[1], shifts[17])


def test_a_shift_never_takes_a_stain_below_none():
    # A pale pinkish pixel (little stain): a large negative shift leaves it white, not green.
    pale = tf.constant([[[235.0, 200.0, 225.0]]])
    before = stain_concentrations(pale).numpy()
    after = stain_concentrations(
        perturb_stains(pale, tf.ones([3]), tf.constant([-0.5, -0.5, -0.5]))
    ).numpy()
    assert (before[..., :2] > 0).all()
    np.testing.assert_allclose(after, np.minimum(before, 0.0), atol=1e-4)


def _real_image(breakhis_sample) -> np.ndarray:
    """The most tissue-filled of the first sample images, at the training size."""
    from model.image.preprocessing import load_image

    images = [load_image(p.read_bytes(), 128) for p in sorted(breakhis_sample.rglob("*.png"))[:10]]
    return max(images, key=lambda rgb: quality.tissue_mask(rgb).mean())


@pytest.mark.parametrize("strength", [0.05, 0.2])
def test_stain_statistics_of_real_tissue_move_no_more_than_the_strength_allows(
    breakhis_sample, strength
):
    rgb = _real_image(breakhis_sample)
    image = tf.constant(rgb, tf.float32)
    before = stain_concentrations(image).numpy().reshape(-1, 3)
    moved = []
    for seed in range(8):
        scale, shift = (v.numpy() for v in jitter_factors(strength, _seed(seed, 11)))
        jittered = stain_jitter(image, strength, _seed(seed, 11)).numpy()
        after = stain_concentrations(tf.constant(jittered)).numpy().reshape(-1, 3)
        # Pixels the RGB clip left alone: their stains are exactly c * scale + shift or the floor.
        kept = ((jittered > 0.0) & (jittered < 255.0)).all(axis=-1).reshape(-1)
        assert kept.sum() > 1000  # (a draw that whitens a pale image clips most of it)
        b, a = before[kept], after[kept]
        tolerance = 1e-3
        change = np.abs(a.mean(axis=0) - b.mean(axis=0))
        assert (change <= strength * np.abs(b).mean(axis=0) + strength + tolerance).all()
        spread = a.std(axis=0) / b.std(axis=0)
        assert (spread <= 1.0 + strength + tolerance).all()
        # Where the floor did not apply, the jitter is exactly the drawn scale and shift.
        exact = (b * scale + shift >= np.minimum(b, 0.0)).all(axis=-1)
        np.testing.assert_allclose(a[exact], b[exact] * scale + shift, atol=2e-3)
        moved.append(change.max())
    assert max(moved) > strength / 4  # the statistics do move


def test_jitter_keeps_real_tissue_looking_like_h_and_e_at_the_default_strength(breakhis_sample):
    from model.constants import DEFAULT_STAIN_JITTER

    rgb = _real_image(breakhis_sample)
    image = tf.constant(rgb, tf.float32)
    for seed in range(8):
        jittered = stain_jitter(image, DEFAULT_STAIN_JITTER, _seed(seed, 5)).numpy()
        flat = np.round(jittered).astype(np.uint8).reshape(-1, 3)
        assert quality.stain_agreement(flat[quality.tissue_mask(flat)]) > quality.MIN_STAIN_SCORE
