"""COCO JSON for canvases and detections, and the pycocotools COCOeval wrapper (no homemade AP).

Ids: canvas i of a split is image id i + 1; annotation ids start at 1 (COCOeval treats id 0 as
"unmatched"), ground truth numbered in row-major (canvas, slot) order and results in `coco_detections`
order; the category id is the digit itself, 0..9, named "0".."9". One `run_cocoeval` serves both the
mAP figures (`coco_metrics`, also on image subsets, without evaluating again) and the per-detection
matches at IoU 0.5 (`matched_ground_truth`) that `matching` builds the operating-point figures on.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from multidigit.boxes import Detections
from multidigit.constants import CANVAS_SIZE, CLASS_NAMES, NUM_CLASSES

# Detections down to this score feed COCO mAP and the F1 sweep (COCO practice); the operating threshold
# is chosen afterwards on val.
SCORE_FLOOR = 0.001
# COCOeval's default IoU thresholds .50:.05:.95; index 0 is IoU 0.5.
IOU50 = 0
# Index of maxDets=100 in COCOeval's default [1, 10, 100] and of area "all" in its area ranges.
MAXDET100, AREA_ALL = 2, 0
# Only area "all" is reported; COCO's small/medium/large ranges would quadruple evaluate()'s work.
AREA_RANGES, AREA_LABELS = [[0.0, 1e10]], ["all"]


def coco_ground_truth(boxes: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A COCO detection dataset holding a split's canvases.

    Args:
        boxes: (N, K, 4) float xywh pixels, padded with 0.
        labels: (N, K) int classes, padded with -1.
    Returns:
        {"images", "annotations", "categories"} as COCO JSON (plain Python types).
    """
    if boxes.shape[:2] != labels.shape or boxes.shape[-1] != 4:
        raise ValueError(f"boxes {boxes.shape} and labels {labels.shape}: need (N, K, 4) and (N, K)")
    images = [
        {"id": i + 1, "width": CANVAS_SIZE, "height": CANVAS_SIZE, "file_name": f"canvas-{i:06d}"}
        for i in range(len(labels))
    ]
    annotations = []
    for i, k in zip(*np.nonzero(labels >= 0), strict=True):
        x, y, w, h = (float(v) for v in boxes[i, k])
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": int(i) + 1,
                "category_id": int(labels[i, k]),
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    categories = [{"id": c, "name": CLASS_NAMES[c], "supercategory": "digit"} for c in range(NUM_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_detections(detections: Sequence[Detections]) -> list[dict[str, Any]]:
    """COCO results JSON: one {"image_id", "category_id", "bbox", "score"} per detection."""
    results = []
    for i, det in enumerate(detections):
        for box, score, label in zip(det["boxes"], det["scores"], det["labels"], strict=True):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    return results


def _coco_objects(ground_truth: dict[str, Any], results: list[dict[str, Any]]):
    """pycocotools COCO objects for ground truth and results (quietly; no file round trip)."""
    from pycocotools.coco import COCO

    def build(dataset: dict[str, Any]) -> COCO:
        coco = COCO()
        coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    # The fields COCO.loadRes adds; built by hand because loadRes fails on an empty result list.
    anns = [
        {**r, "id": n + 1, "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0} for n, r in enumerate(results)
    ]
    dt = {"images": ground_truth["images"], "categories": ground_truth["categories"], "annotations": anns}
    return build(ground_truth), build(dt)


@dataclass(frozen=True)
class CocoResult:
    """What COCOeval found: headline stats, per-class AP and the precision curves behind them."""

    stats: dict[str, float]  # metrics/mAP50, metrics/mAP50-95, metrics/mAP75, metrics/AR1/10/100
    ap50: np.ndarray  # (10,) per-class AP at IoU 0.5; nan where the class has no ground truth
    ap: np.ndarray  # (10,) per-class AP averaged over IoU .50:.95; nan likewise
    recall_points: np.ndarray  # (101,) COCO's recall thresholds
    precision50: np.ndarray  # (10, 101) interpolated precision at IoU 0.5 per class; -1 where no GT


def _class_ap(precision: np.ndarray) -> np.ndarray:
    """(T, R, K) precision -> (K,) mean over valid entries (COCO's -1 marks a class without GT)."""
    out = np.full(precision.shape[-1], np.nan)
    for k in range(precision.shape[-1]):
        valid = precision[..., k][precision[..., k] > -1]
        if valid.size:
            out[k] = float(np.mean(valid))
    return out


def run_cocoeval(ground_truth: dict[str, Any], results: list[dict[str, Any]], class_aware: bool = True):
    """pycocotools COCOeval (bbox) over area "all", with `evaluate()` done (the per-image matching).

    Args:
        ground_truth: a dataset from `coco_ground_truth`.
        results: detections from `coco_detections`.
        class_aware: False pools the classes (COCO's useCats=0): any label may match any digit.
    Returns:
        The evaluated `COCOeval`; `coco_metrics` and `matched_ground_truth` read it.
    """
    from pycocotools.cocoeval import COCOeval

    gt, dt = _coco_objects(ground_truth, results)
    evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.params.useCats = int(class_aware)
    evaluator.params.areaRng, evaluator.params.areaRngLbl = AREA_RANGES, AREA_LABELS
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    return evaluator


def matched_ground_truth(evaluator, num_results: int) -> np.ndarray:
    """COCOeval's own matches at IoU 0.5: for each result, the ground truth it matched.

    COCOeval matches each image (and class, when class-aware) greedily in descending score order, each
    detection taking the unmatched ground-truth box of highest IoU >= 0.5.

    Args:
        evaluator: from `run_cocoeval`.
        num_results: len(results) given to it.
    Returns:
        (num_results,) int64: 0-based index of the matched annotation, -1 for a false positive.
    """
    out = np.full(num_results, -1, np.int64)
    for e in evaluator.evalImgs:
        if e is None or not e["dtIds"]:  # None: an image (and class) without digits or detections
            continue
        ids = np.asarray(e["dtIds"], np.int64) - 1
        out[ids] = e["dtMatches"][IOU50].astype(np.int64) - 1  # annotation id 0 = unmatched
    return out


def coco_metrics(
    ground_truth: dict[str, Any],
    results: list[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
    evaluator=None,
) -> CocoResult:
    """COCOeval's accumulate + summarize on the whole split or an image subset (a bucket).

    Args:
        ground_truth: a dataset from `coco_ground_truth`.
        results: detections from `coco_detections`.
        image_ids: only these image ids (a bucket); None = every image.
        evaluator: a class-aware `run_cocoeval` of the same inputs, reused instead of evaluating again.
    Returns:
        The `CocoResult`; all zeros when there are no detections.
    """
    evaluator = evaluator if evaluator is not None else run_cocoeval(ground_truth, results)
    full = evaluator.evalImgs
    if image_ids is not None:
        # accumulate() skips None entries, so blanking the other images' entries scores exactly the
        # subset (the same numbers as evaluating with params.imgIds = the subset, one evaluate() less).
        # evalImgs is ordered [category][area][image], the image innermost.
        keep, ids = {int(i) for i in image_ids}, evaluator._paramsEval.imgIds
        evaluator.evalImgs = [e if ids[j % len(ids)] in keep else None for j, e in enumerate(full)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.accumulate()
            evaluator.summarize()
    finally:
        evaluator.evalImgs = full
    return _result(evaluator)


def _result(evaluator) -> CocoResult:
    """The `CocoResult` of an accumulated and summarized COCOeval."""
    s = [max(float(v), 0.0) for v in evaluator.stats]  # -1 = nothing to evaluate; report 0
    # precision: (T iou, R recall, K class, A area, M maxDets)
    precision = evaluator.eval["precision"][:, :, :, AREA_ALL, MAXDET100]
    stats = {
        "metrics/mAP50-95": s[0],
        "metrics/mAP50": s[1],
        "metrics/mAP75": s[2],
        "metrics/AR1": s[6],
        "metrics/AR10": s[7],
        "metrics/AR100": s[8],
    }
    return CocoResult(
        stats=stats,
        ap50=_class_ap(precision[IOU50 : IOU50 + 1]),
        ap=_class_ap(precision),
        recall_points=np.asarray(evaluator.params.recThrs),
        precision50=precision[IOU50].T.copy(),
    )


def score_detections(boxes: np.ndarray, labels: np.ndarray, detections: Sequence[Detections]) -> CocoResult:
    """COCO figures of a split's detections in one call (export's quantization cost, benchmarks).

    Args:
        boxes: (N, K, 4) ground-truth xywh, padded with 0; labels: (N, K) padded with -1.
        detections: N detection dicts, scores down to SCORE_FLOOR.
    Returns:
        The `CocoResult`.
    """
    return coco_metrics(coco_ground_truth(boxes, labels), coco_detections(detections))
