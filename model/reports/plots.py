"""Evaluation and training plots as PNG bytes, so callers write them through `model.storage`."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: training VMs and Dataflow workers have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from model.constants import CLASS_NAMES  # noqa: E402

logger = logging.getLogger(__name__)

Curve = tuple[np.ndarray, np.ndarray, float | None]

# Where both jobs write their plots, relative to their output folder ("/"-separated).
ROC_PLOT = "plots/roc.png"
PR_PLOT = "plots/pr.png"
CONFUSION_MATRIX_PLOT = "plots/confusion_matrix.png"
RELIABILITY_PLOT = "plots/reliability.png"
TRAINING_CURVES_PLOT = "plots/training_curves.png"
EVALUATION_PLOTS: dict[str, str] = {
    "ROC": ROC_PLOT,
    "Precision-recall": PR_PLOT,
    "Confusion matrix": CONFUSION_MATRIX_PLOT,
    "Reliability": RELIABILITY_PLOT,
}
"""Caption -> file of the evaluation plots, as report.html shows them."""
_DPI = 100
_PANELS = (("loss", "Loss"), ("auc", "AUC"), ("acc", "Accuracy"))


def _to_png(figure: plt.Figure) -> bytes:
    """Render and close the figure; closing matters in long jobs that plot many figures."""
    try:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def _legend_label(name: str, metric: str, value: float | None, points: int) -> str:
    if not points:
        return f"{name} (no curve: one class only)"
    return f"{name} ({metric} {'n/a' if value is None else f'{value:.3f}'})"


def _unit_square(axes, title: str, xlabel: str, ylabel: str, legend_loc: str) -> None:
    """Axes, labels, legend and grid of a curve plot on [0, 1] x [0, 1]."""
    axes.set(xlim=(0, 1), ylim=(0, 1.02), title=title, xlabel=xlabel, ylabel=ylabel)
    axes.legend(loc=legend_loc, fontsize="small")
    axes.grid(alpha=0.3)


def roc_png(curves: Mapping[str, Curve], title: str = "ROC") -> bytes:
    """ROC curves, one line per name (e.g. "pooled", "40X"), with their AUCs and the chance line."""
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, (fpr, tpr, auc) in curves.items():
        fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
        axes.plot(fpr, tpr, linewidth=1.5, label=_legend_label(name, "AUC", auc, fpr.size))
    _unit_square(
        axes,
        title,
        "False positive rate (1 - specificity)",
        "True positive rate (sensitivity)",
        "lower right",
    )
    return _to_png(figure)


def pr_png(
    curves: Mapping[str, Curve], prevalence: float | None = None, title: str = "Precision-recall"
) -> bytes:
    """Precision-recall curves with their average precision and, if given, the no-skill line."""
    figure, axes = plt.subplots(figsize=(5, 5))
    for name, (recall, precision, ap) in curves.items():
        recall, precision = np.asarray(recall, dtype=float), np.asarray(precision, dtype=float)
        order = np.argsort(recall, kind="stable")
        # Recall ascending, "steps-pre" draws the step function average precision integrates.
        axes.plot(
            recall[order],
            precision[order],
            drawstyle="steps-pre",
            linewidth=1.5,
            label=_legend_label(name, "AP", ap, recall.size),
        )
    if prevalence is not None:
        axes.axhline(
            prevalence,
            linestyle="--",
            color="grey",
            linewidth=1,
            label=f"no skill ({prevalence:.2f})",
        )
    _unit_square(axes, title, "Recall (sensitivity)", "Precision", "lower left")
    return _to_png(figure)


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "Confusion matrix",
) -> bytes:
    """Confusion matrix (rows true, columns predicted) with counts and row percentages."""
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"matrix shape {counts.shape} does not match {len(class_names)} classes")
    totals = counts.sum(axis=1, keepdims=True)
    # Row shares colour the cells so a rare class's errors are as visible as a common one's.
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure, axes = plt.subplots(figsize=(4.5, 4))
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(counts.shape[0]):
        for col in range(counts.shape[1]):
            text = f"{counts[row, col]}"
            if totals[row, 0]:
                text += f"\n({100 * shares[row, col]:.1f}%)"
            colour = "white" if shares[row, col] > 0.5 else "black"
            axes.text(col, row, text, ha="center", va="center", color=colour)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, labels=list(class_names))
    axes.set_yticks(ticks, labels=list(class_names))
    axes.set(xlabel="Predicted", ylabel="True", title=title)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    return _to_png(figure)


def reliability_png(
    bins: Sequence[Mapping[str, object]], ece: float | None, title: str = "Reliability"
) -> bytes:
    """Reliability diagram: fraction malignant against mean P(malignant) per bin, over the
    diagonal of perfect calibration, with the images per bin below.

    bins are metrics.json's `reliability.pooled` entries (lower, upper, count, mean_p,
    fraction_malignant), so both jobs draw the figure from the numbers they report.
    """
    figure, (curve, histogram) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": (3, 1)}
    )
    curve.plot(
        [0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated"
    )
    filled = [b for b in bins if b["count"]]
    if filled:
        label = f"model (ECE {'n/a' if ece is None else f'{ece:.3f}'})"
        curve.plot(
            [b["mean_p"] for b in filled],
            [b["fraction_malignant"] for b in filled],
            marker="o",
            linewidth=1.5,
            label=label,
        )
    else:
        curve.text(0.5, 0.5, "no images", ha="center", va="center", transform=curve.transAxes)
    _unit_square(curve, title, "", "Fraction malignant", "upper left")
    lower = np.array([float(b["lower"]) for b in bins])
    upper = np.array([float(b["upper"]) for b in bins])
    histogram.bar(
        lower, [int(b["count"]) for b in bins], width=upper - lower, align="edge", edgecolor="white"
    )
    histogram.set(xlim=(0, 1), xlabel="P(malignant)", ylabel="Images")
    histogram.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    histogram.grid(alpha=0.3)
    figure.tight_layout()
    return _to_png(figure)


def _panel_of(key: str) -> str | None:
    base = key.removeprefix("val_")
    for panel, _ in _PANELS:
        if panel in base:
            return panel
    return None


def training_curves_png(history: Mapping[str, object]) -> bytes:
    """Loss, AUC and accuracy per epoch, train vs validation, with the fine-tuning start marked."""
    figure, all_axes = plt.subplots(1, len(_PANELS), figsize=(13, 3.8))
    boundary = history.get("phase_boundary")
    for axes, (panel, heading) in zip(all_axes, _PANELS, strict=True):
        plotted = 0
        for key, values in history.items():
            if not isinstance(values, (list, tuple, np.ndarray)) or _panel_of(key) != panel:
                continue
            values = np.asarray(values, dtype=float)
            style = "--" if key.startswith("val_") else "-"
            axes.plot(np.arange(values.size), values, style, marker=".", label=key)
            plotted += 1
        if isinstance(boundary, (int, np.integer)) and not isinstance(boundary, bool):
            # phase_boundary is the index of the first fine-tuning epoch: mark the gap before it.
            axes.axvline(boundary - 0.5, color="grey", linestyle=":", label="fine-tuning starts")
        if not plotted:
            axes.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes.transAxes)
        axes.set(title=heading, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if plotted:
            axes.legend(fontsize="small")
    figure.tight_layout()
    return _to_png(figure)


def exact_curves(y_true: Sequence[int], p: Sequence[float]) -> dict[str, tuple[np.ndarray, ...]]:
    """{"roc": (fpr, tpr), "pr": (recall, precision)} from exact scores; empty when undefined."""
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    scores = np.asarray(p, dtype=np.float64).reshape(-1)
    empty = (np.array([]), np.array([]))
    n_pos = int(np.sum(y == 1))
    result: dict[str, tuple[np.ndarray, ...]] = {"roc": empty, "pr": empty}
    if n_pos and n_pos < y.size:
        fpr, tpr, _ = roc_curve(y, scores)
        result["roc"] = (fpr, tpr)
    if n_pos:
        precision, recall, _ = precision_recall_curve(y, scores)
        # sklearn returns recall descending; ascending matches StreamingSummary.pr_curve.
        result["pr"] = (recall[::-1], precision[::-1])
    return result


def metric_spread_png(
    panels: Mapping[str, Mapping[str, Mapping[str, object]]], title: str = "Metrics over folds"
) -> bytes:
    """One panel per metric; in each, per group (pooled, 40X, ...): the mean over folds as a bar
    with a +-1 sd error bar, each fold's value as a dot, the pooled out-of-fold value as a
    diamond and the majority baseline's mean as a dash.

    panels maps a metric's label to {group: {"per_fold", "mean", "sd", "oof", "baseline"}}
    (cv_metrics.json entries plus the baseline's mean); None values are left out.
    """
    figure, all_axes = plt.subplots(
        1, len(panels), figsize=(3.4 * len(panels), 3.6), sharey=True, squeeze=False
    )
    labelled: set[str] = set()  # each legend entry once, whichever panel draws it first

    def once(text: str) -> str | None:
        if text in labelled:
            return None
        labelled.add(text)
        return text

    for axes, (label, groups) in zip(all_axes[0], panels.items(), strict=True):
        names = list(groups)
        x = np.arange(len(names))
        means = [_number(groups[name].get("mean")) for name in names]
        sds = [_number(groups[name].get("sd")) or 0.0 for name in names]
        defined = np.array([i for i, mean in enumerate(means) if mean is not None], dtype=int)
        axes.bar(
            x[defined],
            [means[i] for i in defined],
            yerr=[sds[i] for i in defined],
            capsize=4,
            color="#9ecae1",
            edgecolor="#3182bd",
            label=once("mean ± sd over folds") if defined.size else None,
        )
        for i, name in enumerate(names):
            folds = [v for v in (groups[name].get("per_fold") or []) if _number(v) is not None]
            jitter = np.linspace(-0.15, 0.15, len(folds)) if len(folds) > 1 else np.zeros(1)
            axes.plot(
                i + jitter[: len(folds)],
                folds,
                "o",
                color="black",
                markersize=3,
                label=once("each fold") if folds else None,
            )
            for key, marker, colour, text in (
                ("oof", "D", "#d62728", "out-of-fold (pooled)"),
                ("baseline", "_", "grey", "majority baseline (mean)"),
            ):
                value = _number(groups[name].get(key))
                if value is not None:
                    axes.plot(
                        [i],
                        [value],
                        marker,
                        color=colour,
                        markersize=10 if key == "baseline" else 5,
                        markeredgewidth=2,
                        label=once(text),
                    )
        axes.set_xticks(x, labels=names)
        axes.set(ylim=(0, 1.05), title=label)
        axes.grid(alpha=0.3, axis="y")
    handles = [h for axes in all_axes[0] for h in axes.get_legend_handles_labels()[0]]
    figure.legend(handles=handles, loc="lower center", ncol=4, fontsize="small")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return _to_png(figure)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    return None
