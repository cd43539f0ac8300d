"""cv_metrics.json: every metric of K fold reports as per-fold values, mean and sample standard
deviation, beside its value on the pooled out-of-fold predictions.

The fold reports and the out-of-fold report are `model.evaluation.evaluate.evaluate` reports; this
module only arranges them. A metric undefined in some fold (an AUC where a fold's test split holds
one class at a magnification) is None there, and the mean and sd are over the folds where it is
defined (`folds_defined` says how many); the sd needs two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model.evaluation.evaluate import magnification_order

SD_RULE = "sample standard deviation over the folds (ddof=1), as papers report the spread"
BLOCKS: tuple[tuple[str, ...], ...] = (
    ("image_level",),
    ("patient_level",),
    ("baseline", "image_level"),
    ("baseline", "patient_level"),
)
"""The sections of an evaluation report that hold metrics, as key paths."""


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """per_fold values (None where undefined), their mean and sample sd (ddof=1) over the
    defined ones, and how many are defined."""
    defined = [float(value) for value in values if _is_number(value)]
    mean = float(np.mean(defined)) if defined else None
    sd = float(np.std(defined, ddof=1)) if len(defined) >= 2 else None
    return {
        "per_fold": [float(v) if _is_number(v) else None for v in values],
        "mean": mean,
        "sd": sd,
        "folds_defined": len(defined),
    }


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _section(report: Mapping[str, Any], path: Sequence[str]) -> Mapping[str, Any]:
    for key in path:
        report = report.get(key) or {}
    return report


def _metric_names(blocks: Sequence[Mapping[str, Any]]) -> list[str]:
    """The numeric metrics of some report blocks, in their first appearance order."""
    names: list[str] = []
    for block in blocks:
        for name, value in block.items():
            if name not in names and (_is_number(value) or value is None):
                names.append(name)
    return names


def _group(
    fold_blocks: Sequence[Mapping[str, Any] | None], oof_block: Mapping[str, Any] | None
) -> dict[str, Any]:
    """{metric: spread(...) + "oof"} for one group (pooled or one magnification) of one block."""
    present = [block for block in (*fold_blocks, oof_block) if block]
    result = {}
    for name in _metric_names(present):
        entry = spread([(block or {}).get(name) for block in fold_blocks])
        value = (oof_block or {}).get(name)
        entry["oof"] = float(value) if _is_number(value) else None
        result[name] = entry
    return result


def cv_metrics(fold_reports: Sequence[Mapping[str, Any]], oof_report: Mapping[str, Any]) -> dict:
    """The metric part of cv_metrics.json from K fold reports (in fold order) and the
    out-of-fold report: the blocks of `evaluate` (image_level, patient_level, baseline), each
    "pooled" and "by_magnification", every metric as per_fold / mean / sd / folds_defined /
    oof; plus counts per fold and out of fold."""
    result: dict[str, Any] = {"sd": SD_RULE, "folds": len(fold_reports)}
    for path in BLOCKS:
        folds = [_section(report, path) for report in fold_reports]
        oof = _section(oof_report, path)
        magnifications = set(oof.get("by_magnification") or {})
        for block in folds:
            magnifications |= set(block.get("by_magnification") or {})
        entry = {
            "pooled": _group([block.get("pooled") for block in folds], oof.get("pooled")),
            "by_magnification": {
                key: _group(
                    [(block.get("by_magnification") or {}).get(key) for block in folds],
                    (oof.get("by_magnification") or {}).get(key),
                )
                for key in sorted(magnifications, key=magnification_order)
            },
        }
        target = result
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = entry
    result["counts"] = {
        "per_fold": [report.get("counts") for report in fold_reports],
        "oof": oof_report.get("counts"),
    }
    return result
