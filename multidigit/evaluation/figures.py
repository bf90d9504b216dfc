"""Evaluation figures: PR curves, F1-confidence curve, confusion matrix, canvas galleries, curve CSVs.

Every function takes plain arrays and writes one file atomically (matplotlib's Agg backend, no display).
The learning curves stay in train.py on purpose: importing them from here would make every train@*
stage depend on this file, so a gallery tweak would retrain the detector.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from multidigit.atomic import atomic_path
from multidigit.boxes import Detections
from multidigit.constants import CLASS_NAMES, NUM_CLASSES

GT_COLOUR, PRED_COLOUR = "#2ecc40", "#ff4136"
DPI = 110


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _class_colours() -> list:
    return [plt.get_cmap("tab10")(c) for c in range(NUM_CLASSES)]


def plot_pr_curves(
    recall: np.ndarray, precision: np.ndarray, ap50: np.ndarray, path: str | Path, title: str
) -> None:
    """Per-class precision-recall curves at IoU 0.5 and their mean.

    Args:
        recall: (R,) recall points (COCO's 101).
        precision: (10, R) interpolated precision per class; rows of -1 (no ground truth) are skipped.
        ap50: (10,) per-class AP50 for the legend (nan where no ground truth).
        path: the PNG to write.
        title: figure title.
    """
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    valid = [c for c in range(NUM_CLASSES) if np.all(precision[c] > -1)]
    for c, colour in zip(range(NUM_CLASSES), _class_colours(), strict=True):
        if c in valid:
            ax.plot(recall, precision[c], color=colour, lw=1.2, label=f"{CLASS_NAMES[c]}  AP50 {ap50[c]:.3f}")
    if valid:
        mean = precision[valid].mean(axis=0)
        ax.plot(recall, mean, color="black", lw=2.5, label=f"all  mAP50 {np.nanmean(ap50):.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.0), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncol=2, framealpha=0.9)
    _save(fig, path)


def plot_f1_confidence(
    curves: Mapping[str, Mapping[str, np.ndarray]], threshold: float, path: str | Path, title: str
) -> None:
    """F1 against the score threshold: one thin line per class, a thick one for all, the operating point.

    Args:
        curves: name ("0".."9", "all") -> {"threshold", "f1"} from `matching.f1_curve`.
        threshold: the operating threshold chosen on val (a dashed vertical line).
        path: the PNG to write.
        title: figure title.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for c, colour in zip(range(NUM_CLASSES), _class_colours(), strict=True):
        curve = curves.get(CLASS_NAMES[c])
        if curve is not None and len(curve["f1"]):
            ax.plot(curve["threshold"], curve["f1"], color=colour, lw=1.0, alpha=0.7, label=CLASS_NAMES[c])
    overall = curves["all"]
    ax.plot(overall["threshold"], overall["f1"], color="black", lw=2.5, label="all")
    ax.axvline(threshold, color="grey", ls="--", lw=1.2, label=f"operating {threshold:.3f}")
    ax.set(xlabel="score threshold", ylabel="F1", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower center", fontsize=8, ncol=4, framealpha=0.9)
    _save(fig, path)


def plot_confusion(cm: np.ndarray, path: str | Path, title: str) -> None:
    """The 11 x 11 confusion matrix, each row normalised to sum 1, counts of row sums on the right.

    Args:
        cm: (11, 11) counts, rows true class, columns predicted class, index 10 background.
        path: the PNG to write.
        title: figure title.
    """
    names = [*CLASS_NAMES, "bg"]
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros(cm.shape, float), where=totals > 0)
    fig, ax = plt.subplots(figsize=(7.2, 6.4))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (r, c), value in np.ndenumerate(norm):
        if cm[r, c]:
            colour = "white" if value > 0.5 else "black"
            ax.text(
                c,
                r,
                f"{value:.2f}"[1:] if value < 1 else "1",
                ha="center",
                va="center",
                fontsize=7,
                color=colour,
            )
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), [f"{n} ({t})" for n, t in zip(names, totals[:, 0], strict=True)])
    ax.set(xlabel="predicted", ylabel="true (digits in row)", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _save(fig, path)


def _tag(ax, x: float, y: float, text: str, colour: str, ha: str, va: str) -> None:
    """A small label with a coloured background, kept inside the canvas (boxes may run off its edge)."""
    side = ax.get_images()[0].get_array().shape[0] - 0.5
    ax.text(
        float(np.clip(x, -0.5, side)), float(np.clip(y, -0.5, side)), text, fontsize=7.5, ha=ha, va=va,
        color="black" if colour == GT_COLOUR else "white", fontweight="bold", clip_on=True,
        bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.6, "lw": 0},
    )  # fmt: skip


def _draw_canvas(ax, image, gt_boxes, gt_labels, det: Detections | None) -> None:
    """One canvas: ground truth green (label tag top-left), predictions red dashed (label + score tag
    bottom-right), so the two never share a corner."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    # Pixel (x, y) covers [x - 0.5, x + 0.5] in imshow coordinates.
    for (x, y, w, h), label in zip(gt_boxes, gt_labels, strict=True):
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec=GT_COLOUR, lw=1.3))
        _tag(ax, x - 0.5, y - 0.5, str(label), GT_COLOUR, "left", "top")
    if det is not None:
        for (x, y, w, h), label, score in zip(det["boxes"], det["labels"], det["scores"], strict=True):
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec=PRED_COLOUR, lw=1.1, ls="--"))
            _tag(ax, x + w - 0.5, y + h - 0.5, f"{label} {score:.2f}", PRED_COLOUR, "right", "bottom")
    ax.set(xlim=(-0.5, image.shape[1] - 0.5), ylim=(image.shape[0] - 0.5, -0.5), xticks=[], yticks=[])


def plot_canvases(
    images: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    detections: Sequence[Detections],
    indices: Sequence[int],
    path: str | Path,
    title: str,
    captions: Sequence[str] | None = None,
) -> None:
    """A grid of canvases with ground truth (green) and predictions (red, label + score).

    Args:
        images: (N, 100, 100) uint8 canvases.
        boxes: (N, K, 4) ground-truth xywh; labels: (N, K) padded with -1.
        detections: N detection dicts, as the page lists them (shown, at the operating threshold).
        indices: the canvases to draw, in order.
        path: the PNG to write.
        title: figure title.
        captions: one line under each drawn canvas; default "#index".
    """
    n = max(len(indices), 1)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.5 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for slot, i in enumerate(indices):
        ax = axes.flat[slot]
        ax.axis("on")
        keep = labels[i] >= 0
        _draw_canvas(ax, images[i], boxes[i][keep], labels[i][keep], detections[i])
        ax.set_xlabel(captions[slot] if captions else f"#{i}", fontsize=9)
    fig.suptitle(f"{title}\ngreen: truth (label), red dashed: prediction (label score)", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def write_curve_csv(path: str | Path, columns: Mapping[str, Sequence]) -> None:
    """Columns of equal length as a CSV (for `dvc plots`), written atomically."""
    names = list(columns)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for row in zip(*(columns[n] for n in names), strict=True):
            writer.writerow([f"{v:.6g}" if isinstance(v, float | np.floating) else v for v in row])
