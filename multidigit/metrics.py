"""Detection metrics beyond COCO mAP: matching, P/R/F1 at an operating point, confusion, counts, buckets.

Everything here works on plain arrays, so it is tested on hand-built cases without a model:
ground truth as the canvas contract has it (boxes (N, K, 4) pixel xywh, labels (N, K) padded with -1)
and detections as `multidigit.boxes.postprocess` returns them (one dict per canvas with "boxes" (M, 4)
xywh, "scores" (M,), "labels" (M,)).

Matching follows COCO: detections in descending score order each take the unmatched ground-truth box of
highest IoU, if that IoU is at least the threshold. Greedy score order makes the matches of the
detections above any threshold independent of those below it, so one matching serves every threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from multidigit.boxes import Detections, iou_matrix
from multidigit.constants import CLASS_NAMES, NUM_CLASSES

BACKGROUND = NUM_CLASSES  # row/column index of "no digit" in the confusion matrix
MATCH_IOU = 0.5
# (name, smallest, largest) digits per canvas for the digit-count buckets.
COUNT_BUCKETS = (("1", 1, 1), ("2-5", 2, 5), ("6-10", 6, 10))


def keep_above(det: Detections, threshold: float) -> Detections:
    """The detections of one canvas scoring at least `threshold`."""
    keep = np.asarray(det["scores"]) >= threshold
    return {k: np.asarray(v)[keep] for k, v in det.items()}  # type: ignore[return-value]


def match_canvas(
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    det: Detections,
    iou_threshold: float = MATCH_IOU,
    class_aware: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Match one canvas's detections to its ground truth, COCO style.

    Args:
        gt_boxes: (G, 4) xywh of the real digits (no padding).
        gt_labels: (G,) digit classes.
        det: detections of this canvas.
        iou_threshold: smallest IoU of a match.
        class_aware: only a detection of the same class may take a ground-truth box.
    Returns:
        (gt_index (M,) int, -1 where unmatched; iou (M,) float, 0 where unmatched), in `det` order.
    """
    scores = np.asarray(det["scores"])
    gt_index = np.full(len(scores), -1, dtype=np.int64)
    ious_out = np.zeros(len(scores), dtype=np.float64)
    if len(scores) == 0 or len(gt_labels) == 0:
        return gt_index, ious_out
    ious = iou_matrix(np.asarray(det["boxes"], np.float64), np.asarray(gt_boxes, np.float64))
    if class_aware:
        same = np.asarray(det["labels"])[:, None] == np.asarray(gt_labels)[None, :]
        ious = np.where(same, ious, -1.0)
    taken = np.zeros(len(gt_labels), dtype=bool)
    for d in np.argsort(-scores, kind="stable"):
        candidates = np.where(taken, -1.0, ious[d])
        g = int(np.argmax(candidates))
        if candidates[g] >= iou_threshold:
            taken[g] = True
            gt_index[d], ious_out[d] = g, candidates[g]
    return gt_index, ious_out


def _real(boxes: np.ndarray, labels: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """The unpadded ground truth of canvas i: boxes (G, 4), labels (G,)."""
    keep = labels[i] >= 0
    return boxes[i][keep], labels[i][keep]


@dataclass(frozen=True)
class SplitMatches:
    """Class-aware matches of a whole split, flattened: one row per detection and per ground-truth digit."""

    num_canvases: int
    det_canvas: np.ndarray  # (D,) canvas index of each detection
    det_score: np.ndarray  # (D,)
    det_label: np.ndarray  # (D,)
    det_iou: np.ndarray  # (D,) IoU with the matched digit, 0 when a false positive
    det_is_tp: np.ndarray  # (D,) bool
    gt_canvas: np.ndarray  # (G,) canvas index of each digit
    gt_label: np.ndarray  # (G,)

    def kept(self, threshold: float) -> np.ndarray:
        """(D,) bool: the detections a score threshold keeps."""
        return self.det_score >= threshold


def match_split(
    boxes: np.ndarray, labels: np.ndarray, detections: list[Detections], iou_threshold: float = MATCH_IOU
) -> SplitMatches:
    """Class-aware matching of every canvas of a split.

    Args:
        boxes: (N, K, 4) ground-truth xywh, padded with 0.
        labels: (N, K) ground-truth classes, padded with -1.
        detections: N detection dicts.
        iou_threshold: smallest IoU of a match.
    Returns:
        The flattened `SplitMatches`.
    """
    if len(detections) != len(labels):
        raise ValueError(f"detections: {len(detections)} canvases, ground truth has {len(labels)}")
    rows: dict[str, list[Any]] = {k: [] for k in ("dc", "ds", "dl", "di", "dt", "gc", "gl")}
    for i, det in enumerate(detections):
        gt_b, gt_l = _real(boxes, labels, i)
        gt_index, ious = match_canvas(gt_b, gt_l, det, iou_threshold)
        scores = np.asarray(det["scores"], np.float64)
        rows["dc"].append(np.full(len(scores), i))
        rows["ds"].append(scores)
        rows["dl"].append(np.asarray(det["labels"], np.int64))
        rows["di"].append(ious)
        rows["dt"].append(gt_index >= 0)
        rows["gc"].append(np.full(len(gt_l), i))
        rows["gl"].append(gt_l.astype(np.int64))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in rows.items()}
    return SplitMatches(
        num_canvases=len(labels),
        det_canvas=cat["dc"].astype(np.int64),
        det_score=cat["ds"].astype(np.float64),
        det_label=cat["dl"].astype(np.int64),
        det_iou=cat["di"].astype(np.float64),
        det_is_tp=cat["dt"].astype(bool),
        gt_canvas=cat["gc"].astype(np.int64),
        gt_label=cat["gl"].astype(np.int64),
    )


def _prf(tp: np.ndarray, n_det: np.ndarray, n_gt: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 from counts; 0 where a denominator is 0."""
    tp, n_det, n_gt = (np.asarray(a, np.float64) for a in (tp, n_det, n_gt))
    precision = np.divide(tp, n_det, out=np.zeros_like(tp), where=n_det > 0)
    recall = np.divide(tp, n_gt, out=np.zeros_like(tp), where=n_gt > 0)
    total = n_det + n_gt
    f1 = np.divide(2 * tp, total, out=np.zeros_like(tp), where=total > 0)
    return precision, recall, f1


def f1_curve(m: SplitMatches, class_id: int | None = None) -> dict[str, np.ndarray]:
    """Precision, recall and F1 as the score threshold sweeps every detection score.

    Args:
        m: the split's matches.
        class_id: one class, or None for all detections together (micro average).
    Returns:
        {"threshold", "precision", "recall", "f1"}: arrays of the same length, thresholds descending.
    """
    det = np.ones_like(m.det_is_tp) if class_id is None else m.det_label == class_id
    n_gt = len(m.gt_label) if class_id is None else int(np.sum(m.gt_label == class_id))
    order = np.argsort(-m.det_score[det], kind="stable")
    scores = m.det_score[det][order]
    tp = np.cumsum(m.det_is_tp[det][order])
    # Keep the last position of each distinct score: a threshold keeps every detection tied with it.
    last = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)
    n_det = np.arange(1, len(scores) + 1)[last]
    precision, recall, f1 = _prf(tp[last], n_det, np.full(len(n_det), n_gt))
    return {"threshold": scores[last], "precision": precision, "recall": recall, "f1": f1}


def best_f1_threshold(m: SplitMatches) -> tuple[float, float]:
    """The score threshold of highest overall F1 (the operating point) and that F1.

    Returns:
        (threshold, f1); (1.0, 0.0) when there is no detection at all.
    """
    curve = f1_curve(m)
    if len(curve["f1"]) == 0:
        return 1.0, 0.0
    best = int(np.argmax(curve["f1"]))  # first maximum = the highest threshold reaching it
    return float(curve["threshold"][best]), float(curve["f1"][best])


def class_prf(m: SplitMatches, threshold: float) -> dict[str, float]:
    """Per-class and overall precision, recall, F1 at a score threshold.

    Returns:
        {"precision/<c>", "recall/<c>", "f1/<c>"} for c in 0..9 and "all".
    """
    kept = m.kept(threshold)
    tp = np.bincount(m.det_label[kept & m.det_is_tp], minlength=NUM_CLASSES)
    n_det = np.bincount(m.det_label[kept], minlength=NUM_CLASSES)
    n_gt = np.bincount(m.gt_label, minlength=NUM_CLASSES)
    # Columns 0..9 per class, column 10 all classes together (micro average).
    counts = [np.r_[a, a.sum()] for a in (tp, n_det, n_gt)]
    keys = [*CLASS_NAMES, "all"]
    out: dict[str, float] = {}
    for name, values in zip(("precision", "recall", "f1"), _prf(*counts), strict=True):
        out.update({f"{name}/{k}": float(v) for k, v in zip(keys, values, strict=True)})
    return out


@dataclass(frozen=True)
class CanvasCounts:
    """Per-canvas counts at an operating threshold, each (N,)."""

    n_gt: np.ndarray
    n_det: np.ndarray
    n_tp: np.ndarray

    @property
    def errors(self) -> np.ndarray:
        """Misses plus false positives per canvas."""
        return (self.n_gt - self.n_tp) + (self.n_det - self.n_tp)


def canvas_counts(m: SplitMatches, threshold: float) -> CanvasCounts:
    """Digits, kept detections and correct detections of every canvas at a score threshold."""
    kept = m.kept(threshold)
    n = m.num_canvases
    return CanvasCounts(
        n_gt=np.bincount(m.gt_canvas, minlength=n),
        n_det=np.bincount(m.det_canvas[kept], minlength=n),
        n_tp=np.bincount(m.det_canvas[kept & m.det_is_tp], minlength=n),
    )


def canvas_accuracies(counts: CanvasCounts, subset: np.ndarray | None = None) -> dict[str, float]:
    """Count accuracy (as many detections as digits) and whole-canvas accuracy (every digit found with
    the right class, nothing extra), over all canvases or a boolean/index subset."""
    sel = slice(None) if subset is None else subset
    n_gt, n_det, n_tp = counts.n_gt[sel], counts.n_det[sel], counts.n_tp[sel]
    if len(n_gt) == 0:
        return {"count/accuracy": 0.0, "canvas/accuracy": 0.0}
    return {
        "count/accuracy": float(np.mean(n_det == n_gt)),
        "canvas/accuracy": float(np.mean((n_tp == n_gt) & (n_det == n_gt))),
    }


def matched_iou_stats(m: SplitMatches, threshold: float) -> dict[str, float]:
    """Mean, median and 10th percentile IoU of the correct detections kept at a threshold."""
    kept = m.kept(threshold)
    ious = m.det_iou[kept & m.det_is_tp]
    if len(ious) == 0:
        return {"iou/mean": 0.0, "iou/median": 0.0, "iou/p10": 0.0}
    return {
        "iou/mean": float(np.mean(ious)),
        "iou/median": float(np.median(ious)),
        "iou/p10": float(np.percentile(ious, 10)),
    }


def confusion_matrix(
    boxes: np.ndarray,
    labels: np.ndarray,
    detections: list[Detections],
    threshold: float,
    iou_threshold: float = MATCH_IOU,
) -> np.ndarray:
    """11 x 11 counts: rows the true class, columns the predicted class, index 10 the background.

    Matching ignores the class, so a digit read as the wrong class lands off the diagonal; row 10 counts
    false positives by predicted class, column 10 missed digits by true class; [10, 10] stays 0.

    Args:
        boxes: (N, K, 4) ground truth xywh; labels: (N, K) padded with -1.
        detections: N detection dicts; only scores >= threshold count.
        threshold: the operating score threshold.
        iou_threshold: smallest IoU of a match.
    Returns:
        (11, 11) int64 counts.
    """
    cm = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), dtype=np.int64)
    for i, det in enumerate(detections):
        det = keep_above(det, threshold)
        gt_b, gt_l = _real(boxes, labels, i)
        gt_index, _ = match_canvas(gt_b, gt_l, det, iou_threshold, class_aware=False)
        pred = det["labels"].astype(np.int64)
        hit = gt_index >= 0
        np.add.at(cm, (gt_l[gt_index[hit]], pred[hit]), 1)
        np.add.at(cm, (BACKGROUND, pred[~hit]), 1)
        missed = np.ones(len(gt_l), bool)
        missed[gt_index[hit]] = False
        np.add.at(cm, (gt_l[missed], BACKGROUND), 1)
    return cm


def count_buckets(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Canvas indices per digit-count bucket ("1", "2-5", "6-10"); empty buckets are left out."""
    counts = np.sum(labels >= 0, axis=1)
    out = {name: np.flatnonzero((counts >= lo) & (counts <= hi)) for name, lo, hi in COUNT_BUCKETS}
    return {k: v for k, v in out.items() if len(v)}


def overlap_buckets(boxes: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Canvas indices split by whether any two digit boxes intersect ("overlap", "no-overlap")."""
    touching = np.zeros(len(labels), dtype=bool)
    for i in range(len(labels)):
        gt_b, _ = _real(boxes, labels, i)
        if len(gt_b) > 1:
            iou = iou_matrix(gt_b.astype(np.float64), gt_b.astype(np.float64))
            touching[i] = bool(np.any(np.triu(iou, k=1) > 0))
    out = {"overlap": np.flatnonzero(touching), "no-overlap": np.flatnonzero(~touching)}
    return {k: v for k, v in out.items() if len(v)}


def worst_canvases(counts: CanvasCounts, k: int) -> np.ndarray:
    """Indices of the k canvases with the most misses + false positives (ties: lower index first);
    canvases without any error are left out."""
    errors = counts.errors
    order = np.argsort(-errors, kind="stable")
    return order[errors[order] > 0][:k]


def curve_at(curve: dict[str, np.ndarray], thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Sample an `f1_curve` at given thresholds: each point keeps every detection scoring >= it.

    Returns:
        {"threshold", "precision", "recall", "f1"} at `thresholds`; zeros above the highest score.
    """
    thresholds = np.asarray(thresholds, np.float64)
    idx = np.searchsorted(-curve["threshold"], -thresholds, side="right") - 1  # last score >= t
    out = {"threshold": thresholds}
    for key in ("precision", "recall", "f1"):
        values = np.r_[curve[key], 0.0]  # index -1 (no detection kept) reads the appended 0
        out[key] = values[np.where(idx >= 0, idx, len(values) - 1)]
    return out
