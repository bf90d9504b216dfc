"""The drawn split (re-stroked MNIST test digits, as people draw them): does the page read the number?

Scored by the same code as the test split, plus what only a drawing has:
- sequence accuracy: the digits the page lists, in reading order (rows top to bottom, each row left to
  right), equal the digits drawn in the same order;
- buckets by brush width (the page's slider, 4-24 buffer px) and by digit size (the canvas's median
  digit-box height in canvas px), each with mAP50, recall, precision, count, canvas and sequence accuracy.

Keys are `drawn/<figure>` and `drawn/<bucket>/<figure>` (e.g. `drawn/brush_4-8/recall`); bucket names
are fixed here, not in params, because they name metric keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from multidigit.boxes import Detections
from multidigit.evaluation import coco
from multidigit.evaluation import matching as mt

PREFIX = "drawn"
PAGE_PREFIX = "drawn_page"  # the same figures as the page reads the strokes (evaluation/stage.py)
# (name, lowest included, highest excluded): brush width in 400-px buffer pixels (the page's default 10
# sits in brush_9-11); the median digit-box height of a canvas, in canvas pixels.
BRUSH_BUCKETS = (("brush_4-8", 0.0, 9.0), ("brush_9-11", 9.0, 12.0), ("brush_12-17", 12.0, 18.0),
                 ("brush_18-24", 18.0, np.inf))  # fmt: skip
SIZE_BUCKETS = (("size_15-29", 0.0, 30.0), ("size_30-44", 30.0, 45.0), ("size_45-60", 45.0, np.inf))
ROW_GAP = 0.5  # a new row starts where the next box centre lies this many median heights lower


def reading_order(boxes: np.ndarray) -> np.ndarray:
    """The order a person reads boxes in: rows top to bottom, each row by box x centre.

    Rows are clusters of y centres: sorted by y centre, a jump of more than ROW_GAP median box heights
    between neighbours starts a new row (single linkage, so a slightly slanted row stays one row).

    Args:
        boxes: (M, 4) xywh.
    Returns:
        (M,) int indices into `boxes`, in reading order.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    by_y = np.argsort(cy, kind="stable")
    jumps = np.diff(cy[by_y]) > ROW_GAP * np.median(boxes[:, 3])
    row = np.empty(len(boxes), np.int64)
    row[by_y] = np.r_[0, np.cumsum(jumps)]
    return np.lexsort((cx, row))


def read_digits(boxes: np.ndarray, labels: np.ndarray) -> tuple[int, ...]:
    """The digits of a set of boxes as a person reads them (see `reading_order`)."""
    return tuple(int(v) for v in np.asarray(labels)[reading_order(boxes)])


def sequence_correct(boxes: np.ndarray, labels: np.ndarray, shown: Sequence[Detections]) -> np.ndarray:
    """Per canvas: the shown digits, in reading order, equal the drawn digits in reading order.

    Args:
        boxes: (N, K, 4) ground-truth xywh; labels: (N, K) padded with -1.
        shown: N detection dicts, exactly what the page lists.
    Returns:
        (N,) bool.
    """
    out = np.zeros(len(labels), bool)
    for i, det in enumerate(shown):
        keep = labels[i] >= 0
        truth = read_digits(boxes[i][keep], labels[i][keep])
        out[i] = read_digits(det["boxes"], det["labels"]) == truth
    return out


def buckets_of(values: np.ndarray, edges: Sequence[tuple[str, float, float]]) -> dict[str, np.ndarray]:
    """Canvas indices per bucket of a per-canvas value; empty buckets are left out."""
    values = np.asarray(values, np.float64)
    out = {name: np.flatnonzero((values >= lo) & (values < hi)) for name, lo, hi in edges}
    return {k: v for k, v in out.items() if len(v)}


def digit_heights(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) median digit-box height of each canvas (0 for a canvas without digits)."""
    heights = np.where(labels >= 0, boxes[..., 3], np.nan)
    has = np.any(labels >= 0, axis=1)
    out = np.zeros(len(labels))
    out[has] = np.nanmedian(heights[has], axis=1)
    return out


@dataclass(frozen=True)
class DrawnScore:
    """The drawn split's metrics plus the per-canvas facts the worst-canvas gallery needs."""

    metrics: dict[str, float]
    errors: np.ndarray  # (N,) misses + false positives per canvas (page's detections)
    sequence_ok: np.ndarray  # (N,) bool


def _page_figures(m: mt.SplitMatches, counts: mt.CanvasCounts, seq_ok: np.ndarray, subset) -> dict:
    """Precision, recall, F1, count, canvas and sequence accuracy of the page's detections on a subset."""
    in_subset = np.zeros(m.num_canvases, bool)
    in_subset[subset] = True
    det, gt = in_subset[m.det_canvas], in_subset[m.gt_canvas]
    tp, n_det, n_gt = (np.sum(det & m.det_is_tp), np.sum(det), np.sum(gt))
    acc = mt.canvas_accuracies(counts, subset)
    return {
        "precision": float(tp / n_det) if n_det else 0.0,
        "recall": float(tp / n_gt) if n_gt else 0.0,
        "f1": float(2 * tp / (n_det + n_gt)) if n_det + n_gt else 0.0,
        "count_accuracy": acc["count/accuracy"],
        "canvas_accuracy": acc["canvas/accuracy"],
        "sequence_accuracy": float(np.mean(seq_ok[subset])) if len(seq_ok[subset]) else 0.0,
        "canvases": float(in_subset.sum()),
    }


def score_drawn(
    boxes: np.ndarray,
    labels: np.ndarray,
    brush_widths: np.ndarray,
    candidates: Sequence[Detections],
    shown: Sequence[Detections],
) -> DrawnScore:
    """Every drawn-split figure: COCO mAP on the candidates, the rest on what the page shows.

    Args:
        boxes: (N, K, 4) ground-truth xywh; labels: (N, K) padded with -1.
        brush_widths: (N,) the brush each canvas was drawn with (buffer pixels).
        candidates: N detection dicts at SCORE_FLOOR (all classes' candidates, shown or not).
        shown: N detection dicts at the operating threshold; only those marked shown count.
    Returns:
        The `DrawnScore` (metrics unrounded, keys `drawn/...`).
    """
    if not len(brush_widths) == len(candidates) == len(shown) == len(labels):
        raise ValueError(f"drawn: {len(labels)} canvases but {len(brush_widths)} brush widths, "
                         f"{len(candidates)} candidate and {len(shown)} shown detection lists")  # fmt: skip
    shown = [mt.shown_only(d) for d in shown]
    gt, results = coco.coco_ground_truth(boxes, labels), coco.coco_detections(candidates)
    evaluator = coco.run_cocoeval(gt, results)
    whole = coco.coco_metrics(gt, results, evaluator=evaluator)
    m = mt.match_split(boxes, labels, list(shown))
    counts, seq_ok = mt.canvas_counts(m, 0.0), sequence_correct(boxes, labels, shown)
    out = {
        f"{PREFIX}/mAP50": whole.stats["metrics/mAP50"],
        f"{PREFIX}/mAP50-95": whole.stats["metrics/mAP50-95"],
        f"{PREFIX}/digits": float(np.sum(labels >= 0)),
    }
    everything = np.arange(len(labels))
    out |= {f"{PREFIX}/{k}": v for k, v in _page_figures(m, counts, seq_ok, everything).items()}
    buckets = {
        **buckets_of(brush_widths, BRUSH_BUCKETS),
        **buckets_of(digit_heights(boxes, labels), SIZE_BUCKETS),
    }
    for name, idx in buckets.items():
        sub = coco.coco_metrics(gt, results, image_ids=idx + 1, evaluator=evaluator)
        out[f"{PREFIX}/{name}/mAP50"] = sub.stats["metrics/mAP50"]
        out |= {f"{PREFIX}/{name}/{k}": v for k, v in _page_figures(m, counts, seq_ok, idx).items()}
    return DrawnScore(metrics=out, errors=counts.errors, sequence_ok=seq_ok)


def worst_drawn(score: DrawnScore, k: int) -> np.ndarray:
    """Indices of the k worst drawn canvases: misread sequences first, then by errors (ties: lower index)."""
    badness = score.errors + (~score.sequence_ok) * (score.errors.max(initial=0) + 1)
    order = np.argsort(-badness, kind="stable")
    return order[badness[order] > 0][:k]
