"""COCO JSON for canvases and detections, and the pycocotools COCOeval wrapper (no homemade AP).

Ids: canvas i of a split is image id i + 1; annotation ids start at 1 (COCOeval treats id 0 as
"unmatched"); the category id is the digit itself, 0..9, named "0".."9".
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

# COCOeval's default IoU thresholds .50:.05:.95; index 0 is IoU 0.5.
IOU50 = 0
# Index of maxDets=100 in COCOeval's default [1, 10, 100] and of area "all" in its area ranges.
MAXDET100, AREA_ALL = 2, 0


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


def coco_metrics(
    ground_truth: dict[str, Any], results: list[dict[str, Any]], image_ids: Sequence[int] | None = None
) -> CocoResult:
    """Run pycocotools COCOeval (bbox) and collect its numbers.

    Args:
        ground_truth: a dataset from `coco_ground_truth`.
        results: detections from `coco_detections`.
        image_ids: evaluate only these image ids (a bucket); None = every image.
    Returns:
        The `CocoResult`; all zeros when there are no detections.
    """
    from pycocotools.cocoeval import COCOeval

    gt, dt = _coco_objects(ground_truth, results)
    evaluator = COCOeval(gt, dt, iouType="bbox")
    if image_ids is not None:
        evaluator.params.imgIds = sorted(int(i) for i in image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
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
