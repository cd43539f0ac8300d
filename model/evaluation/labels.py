"""The class rules of both jobs, each defined once: label name <-> index, the call a score makes
at a threshold, and the majority vote of a group of images (ties go to malignant).

Malignant is the positive class. Ties go to malignant everywhere (a patient's label from its
images, a patient's call from its image calls, the majority-class baseline): missing a cancer
costs more than a second look at a benign slide.
"""

from __future__ import annotations

import numpy as np

from model.constants import CLASS_NAMES

BENIGN, MALIGNANT = CLASS_NAMES


def label_index(name: str) -> int:
    """0 for "benign", 1 for "malignant"; ValueError for anything else."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown class name {name!r}; expected one of {CLASS_NAMES}") from None


def label_name(index: int) -> str:
    """ "benign" for 0, "malignant" for 1."""
    return CLASS_NAMES[int(index)]


def predicted_index(p_malignant, threshold: float):
    """1 (malignant) where p_malignant >= threshold, else 0; for a number or an array."""
    calls = np.asarray(p_malignant) >= threshold
    return calls.astype(int) if calls.ndim else int(calls)


def predicted_label(p_malignant: float, threshold: float) -> str:
    """The call for one score: "malignant" when p_malignant >= threshold, else "benign"."""
    return label_name(predicted_index(float(p_malignant), threshold))


def majority_index(n_malignant: int, n: int) -> int:
    """The majority class of n items of which n_malignant are malignant; ties go to malignant."""
    return int(2 * n_malignant >= n)
