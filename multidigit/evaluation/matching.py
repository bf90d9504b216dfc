"""Operating-point figures built on COCOeval's own matches: P/R/F1, the F1 sweep, counts, confusion,
buckets.

Everything here works on plain arrays, so it is tested on hand-built cases without a model: ground
truth as the canvas contract has it (boxes (N, K, 4) pixel xywh, labels (N, K) padded with -1) and
detections as the detector returns them (one dict per canvas with "boxes" (M, 4) xywh, "scores" (M,),
"labels" (M,), and "shown" (M,) bool where the artifact marks what the page lists).

There is no second matcher: `match_split` reads COCOeval's per-image matches at IoU 0.5
(`coco.matched_ground_truth`), which are greedy in descending score order, so the matches of the
detections above any threshold do not depend on those below it and one matching serves every threshold.
The user-facing figures are computed on exactly what the page shows (`shown_only` of the detections
run at the operating threshold); the F1 sweep that picks that threshold runs on the shown candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multidigit.boxes import Detections, iou_matrix
from multidigit.boxes import shown_only as marked_shown
from multidigit.constants import CLASS_NAMES, NUM_CLASSES
from multidigit.evaluation import coco

BACKGROUND = NUM_CLASSES  # row/column index of "no digit" in the confusion matrix
# (name, smallest, largest) digits per canvas for the digit-count buckets.
COUNT_BUCKETS = (("1", 1, 1), ("2-5", 2, 5), ("6-10", 6, 10))


def keep_above(det: Detections, threshold: float) -> Detections:
    """The detections of one canvas scoring at least `threshold` (every field filtered alike)."""
    keep = np.asarray(det["scores"]) >= threshold
    return {k: np.asarray(v)[keep] for k, v in det.items()}  # type: ignore[return-value]


def shown_only(det: Detections) -> Detections:
    """What the page lists of one canvas: `boxes.shown_only` where the detector marked `shown`, every
    detection of a hand-built or unmarked one."""
    return marked_shown(det) if "shown" in det else det


def _real(boxes: np.ndarray, labels: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """The unpadded ground truth of canvas i: boxes (G, 4), labels (G,)."""
    keep = labels[i] >= 0
    return boxes[i][keep], labels[i][keep]


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row i of `a` with row i of `b`, both (M, 4) xywh (COCO's continuous box area)."""
    ix = np.clip(np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class SplitMatches:
    """COCOeval's matches of a whole split, flattened: one row per detection and per ground-truth digit."""

    num_canvases: int
    det_canvas: np.ndarray  # (D,) canvas index of each detection
    det_score: np.ndarray  # (D,)
    det_label: np.ndarray  # (D,)
    det_gt: np.ndarray  # (D,) row of the matched digit in the gt_* arrays, -1 when a false positive
    det_iou: np.ndarray  # (D,) IoU with the matched digit, 0 when a false positive
    gt_canvas: np.ndarray  # (G,) canvas index of each digit
    gt_label: np.ndarray  # (G,)

    @property
    def det_is_tp(self) -> np.ndarray:
        """(D,) bool: the detection found a digit."""
        return self.det_gt >= 0

    def kept(self, threshold: float) -> np.ndarray:
        """(D,) bool: the detections a score threshold keeps."""
        return self.det_score >= threshold


def matches_from(
    ground_truth: dict, results: list[dict], num_canvases: int, class_aware: bool = True, evaluator=None
) -> SplitMatches:
    """Flatten COCOeval's matches at IoU 0.5 of a split given as COCO JSON.

    Args:
        ground_truth: `coco.coco_ground_truth` of the split; results: `coco.coco_detections`.
        num_canvases: canvases in the split.
        class_aware: only a detection of the digit's class may match it (COCO's useCats).
        evaluator: a `coco.run_cocoeval` of the same inputs and class_aware, reused when given.
    Returns:
        The `SplitMatches`.
    """
    if evaluator is None:
        evaluator = coco.run_cocoeval(ground_truth, results, class_aware)
    det_gt = coco.matched_ground_truth(evaluator, len(results))
    anns = ground_truth["annotations"]
    gt_boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    det_boxes = np.array([r["bbox"] for r in results], np.float64).reshape(-1, 4)
    hit = det_gt >= 0
    det_iou = np.zeros(len(results))
    det_iou[hit] = _pair_iou(det_boxes[hit], gt_boxes[det_gt[hit]])
    return SplitMatches(
        num_canvases=num_canvases,
        det_canvas=np.array([r["image_id"] - 1 for r in results], np.int64),
        det_score=np.array([r["score"] for r in results], np.float64),
        det_label=np.array([r["category_id"] for r in results], np.int64),
        det_gt=det_gt,
        det_iou=det_iou,
        gt_canvas=np.array([a["image_id"] - 1 for a in anns], np.int64),
        gt_label=np.array([a["category_id"] for a in anns], np.int64),
    )


def match_split(
    boxes: np.ndarray, labels: np.ndarray, detections: list[Detections], class_aware: bool = True
) -> SplitMatches:
    """COCOeval's matches at IoU 0.5 of every canvas of a split.

    Args:
        boxes: (N, K, 4) ground-truth xywh, padded with 0.
        labels: (N, K) ground-truth classes, padded with -1.
        detections: N detection dicts (all of their detections count; pass `shown_only` ones for the page).
        class_aware: only a detection of the digit's class may match it.
    Returns:
        The flattened `SplitMatches`.
    """
    if len(detections) != len(labels):
        raise ValueError(f"detections: {len(detections)} canvases, ground truth has {len(labels)}")
    gt = coco.coco_ground_truth(boxes, labels)
    return matches_from(gt, coco.coco_detections(detections), len(labels), class_aware)


def _prf(tp: np.ndarray, n_det: np.ndarray, n_gt: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 from counts; 0 where a denominator is 0."""
    tp, n_det, n_gt = (np.asarray(a, np.float64) for a in (tp, n_det, n_gt))
    precision = np.divide(tp, n_det, out=np.zeros_like(tp), where=n_det > 0)
    recall = np.divide(tp, n_gt, out=np.zeros_like(tp), where=n_gt > 0)
    total = n_det + n_gt
    f1 = np.divide(2 * tp, total, out=np.zeros_like(tp), where=total > 0)
    return precision, recall, f1


def _last_of_ties(scores: np.ndarray) -> np.ndarray:
    """Of scores sorted descending, the last position of each distinct score: a threshold keeps every
    detection tied with it, so the curves are read there."""
    return np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)


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
    last = _last_of_ties(scores)
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


def canvas_curve(m: SplitMatches) -> dict[str, np.ndarray]:
    """Whole-canvas accuracy (every digit found with its class, nothing extra) and overall F1 as the score
    threshold sweeps every detection score; thresholds descending, as `f1_curve`'s.

    One pass over the detections, best first: each one added changes only its own canvas's counts.
    """
    order = np.argsort(-m.det_score, kind="stable")
    scores, canvas, hit = m.det_score[order], m.det_canvas[order], m.det_is_tp[order]
    n_gt = np.bincount(m.gt_canvas, minlength=m.num_canvases)
    n_det, n_tp = np.zeros_like(n_gt), np.zeros_like(n_gt)
    exact = int(np.sum(n_gt == 0))  # a canvas without digits is read exactly until something is listed
    right = np.empty(len(scores), np.int64)
    for i, (c, tp) in enumerate(zip(canvas.tolist(), hit.tolist(), strict=True)):
        was = n_det[c] == n_gt[c] and n_tp[c] == n_gt[c]
        n_det[c] += 1
        n_tp[c] += tp
        exact += int(n_det[c] == n_gt[c] and n_tp[c] == n_gt[c]) - int(was)
        right[i] = exact
    last = _last_of_ties(scores)
    return {
        "threshold": scores[last],
        "canvas_accuracy": right[last] / max(m.num_canvases, 1),
        "f1": f1_curve(m)["f1"],  # the same stable order and tie positions, so the arrays align
    }


def best_canvas_threshold(m: SplitMatches) -> tuple[float, float]:
    """The score threshold at which the most canvases are read exactly (what a person drawing sees: every
    digit listed with its class, nothing extra); among equals, the highest F1, then the highest threshold.

    Returns:
        (threshold, F1 there); (1.0, 0.0) when there is no detection at all.
    """
    curve = canvas_curve(m)
    if len(curve["f1"]) == 0:
        return 1.0, 0.0
    # lexsort: last key first; -index puts the highest threshold (first position) ahead among full ties
    best = np.lexsort((-np.arange(len(curve["f1"])), curve["f1"], curve["canvas_accuracy"]))[-1]
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


def confusion_matrix(m: SplitMatches) -> np.ndarray:
    """11 x 11 counts from class-agnostic matches: rows the true class, columns the predicted class,
    index 10 the background.

    A digit read as the wrong class lands off the diagonal; row 10 counts false positives by predicted
    class, column 10 missed digits by true class; [10, 10] stays 0.

    Args:
        m: `match_split(..., class_aware=False)` of the detections that count (the page's, at the
            operating threshold).
    Returns:
        (11, 11) int64 counts.
    """
    cm = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), dtype=np.int64)
    hit = m.det_gt >= 0
    np.add.at(cm, (m.gt_label[m.det_gt[hit]], m.det_label[hit]), 1)
    np.add.at(cm, (BACKGROUND, m.det_label[~hit]), 1)
    missed = np.ones(len(m.gt_label), bool)
    missed[m.det_gt[hit]] = False
    np.add.at(cm, (m.gt_label[missed], BACKGROUND), 1)
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
