"""Run the README's 5-fold cross-validation on the real BreakHis sample and print its tables.

    PYTHONPATH=$PWD python benchmarks/cv_table.py --output_dir runs/cv-sample [TRAINING FLAGS]
    PYTHONPATH=$PWD python benchmarks/cv_table.py --output_dir runs/cv-sample --table_only

Trains with `python train_job/main.py --folds 5` and the README's recipe (`--weights none
--learning_rate 1e-4 --epochs 8 --fine_tune_epochs 4 --fine_tune_learning_rate 1e-5
--patience 4`, any other training flag appended, e.g. `--stain_jitter 0`), which resumes or
skips folds already done, then prints from `cv/cv_metrics.json` the Markdown tables the README
shows: mean ± sd over the folds (sample sd) of every headline metric at image and patient level,
beside the majority baseline and the pooled out-of-fold value, and the same per magnification.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger("cv_table")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "breakhis-sample")
RECIPE: tuple[str, ...] = (
    "--folds", "5",
    "--weights", "none",
    "--learning_rate", "1e-4",
    "--epochs", "8",
    "--fine_tune_epochs", "4",
    "--fine_tune_learning_rate", "1e-5",
    "--patience", "4",
)  # fmt: skip
# (row label, block of cv_metrics.json, metric) of the pooled table.
POOLED_ROWS: tuple[tuple[str, str, str], ...] = (
    ("image accuracy", "image_level", "accuracy"),
    ("balanced accuracy", "image_level", "balanced_accuracy"),
    ("sensitivity", "image_level", "sensitivity"),
    ("specificity", "image_level", "specificity"),
    ("ROC AUC (images)", "image_level", "roc_auc"),
    ("PR AUC (images)", "image_level", "pr_auc"),
    ("Brier score", "image_level", "brier"),
    ("ECE (15 bins)", "image_level", "ece"),
    ("patient recognition rate", "image_level", "patient_recognition_rate"),
    ("patient-level accuracy", "patient_level", "accuracy"),
    ("patient-level balanced accuracy", "patient_level", "balanced_accuracy"),
    ("patient-level ROC AUC", "patient_level", "roc_auc"),
)
# (column label, block, metric, whether the baseline's value goes beside it).
MAGNIFICATION_COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("image accuracy (baseline)", "image_level", "accuracy", True),
    ("balanced accuracy", "image_level", "balanced_accuracy", False),
    ("ROC AUC", "image_level", "roc_auc", False),
    ("patient recognition rate", "image_level", "patient_recognition_rate", False),
    ("patient-level accuracy (baseline)", "patient_level", "accuracy", True),
)


def mean_sd(entry: Mapping[str, Any] | None) -> str:
    """ "0.551 ± 0.084" from a cv_metrics.json entry; n/a where undefined, the folds counted
    when some fold could not define it."""
    if not entry or entry.get("mean") is None:
        return "n/a"
    text = f"{entry['mean']:.3f}"
    if entry.get("sd") is not None:
        text += f" ± {entry['sd']:.3f}"
    per_fold = entry.get("per_fold") or []
    if entry.get("folds_defined", len(per_fold)) < len(per_fold):
        text += f" ({entry['folds_defined']} of {len(per_fold)} folds)"
    return text


def _value(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def pooled_table(metrics: Mapping[str, Any]) -> str:
    """The headline table: model and baseline mean ± sd over the folds, and out-of-fold."""
    k = metrics["folds"]
    lines = [
        f"| metric | model, mean ± sd over {k} folds | majority baseline, mean ± sd | "
        "out-of-fold (pooled) |",
        "|---|---|---|---|",
    ]
    for label, block, key in POOLED_ROWS:
        entry = metrics[block]["pooled"].get(key)
        # The baseline has no patient recognition rate (a dash): it calls every image alike.
        baseline = metrics["baseline"][block]["pooled"].get(key)
        lines.append(
            f"| {label} | {mean_sd(entry)} | {mean_sd(baseline) if baseline else '—'} | "
            f"{_value((entry or {}).get('oof'))} |"
        )
    return "\n".join(lines)


def magnification_table(metrics: Mapping[str, Any]) -> str:
    """Per magnification: images and patients (out-of-fold), then mean ± sd of each column."""
    header = "| magnification | images (patients) | " + " | ".join(
        label for label, *_ in MAGNIFICATION_COLUMNS
    )
    lines = [header + " |", "|---" * (len(MAGNIFICATION_COLUMNS) + 2) + "|"]
    counts = (metrics.get("counts") or {}).get("oof") or {}
    groups = [("pooled", counts)] + [
        (name, (counts.get("by_magnification") or {}).get(name) or {})
        for name in metrics["image_level"]["by_magnification"]
    ]
    for name, count in groups:
        cells = []
        for _, block, key, with_baseline in MAGNIFICATION_COLUMNS:
            section = metrics[block]["pooled" if name == "pooled" else "by_magnification"]
            entry = section if name == "pooled" else section.get(name, {})
            text = mean_sd(entry.get(key))
            if with_baseline:
                base = metrics["baseline"][block][
                    "pooled" if name == "pooled" else "by_magnification"
                ]
                base = base if name == "pooled" else base.get(name, {})
                text += f" ({mean_sd(base.get(key))})"
            cells.append(text)
        label = "all" if name == "pooled" else name
        lines.append(
            f"| {label} | {count.get('images', 'n/a')} ({count.get('patients', 'n/a')}) | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def tables(metrics: Mapping[str, Any]) -> str:
    """Both tables with a line saying what the spread is."""
    return (
        f"{pooled_table(metrics)}\n\n{magnification_table(metrics)}\n\n"
        f"mean ± sd: the {metrics['sd']}; out-of-fold: every fold's test predictions pooled, "
        "each called at its fold's threshold.\n"
    )


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The script's flags, and the training flags to pass on."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=DEFAULT_DATA, help="The BreakHis sample")
    parser.add_argument("--output_dir", required=True, help="The cross-validation folder")
    parser.add_argument(
        "--table_only", action="store_true", help="Print the tables of an existing run; no training"
    )
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train (unless --table_only), then print the tables; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args, training_flags = parse_args(argv)
    if not args.table_only:
        command = [
            sys.executable,
            os.path.join(REPO_ROOT, "train_job", "main.py"),
            "--data_dir", args.data_dir,
            "--output_dir", args.output_dir,
            *RECIPE,
            *training_flags,
        ]  # fmt: skip
        logger.info("Running: %s", " ".join(command[1:]))
        started = time.monotonic()
        code = subprocess.run(command, check=False).returncode
        logger.info(
            "Training and aggregation took %.0f s (exit %d)", time.monotonic() - started, code
        )
        if code:
            return code
    path = os.path.join(args.output_dir, "cv", "cv_metrics.json")
    if not os.path.isfile(path):
        print(f"error: {path} does not exist: no finished cross-validation there", file=sys.stderr)
        return 2
    with open(path, encoding="utf-8") as handle:
        sys.stdout.write(tables(json.load(handle)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
