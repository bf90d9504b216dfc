"""COCO JSON and the COCOeval wrapper: values checked against COCO's 101-point interpolation by hand.

COCO AP for one class: detections sorted by score give precision/recall points; precision is made
monotone (the max to its right), then read at the 101 recall thresholds 0, .01, ..., 1 (0 beyond the
largest recall reached) and averaged. mAP is the mean over classes that have ground truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from multidigit.evaluation.coco import coco_detections, coco_ground_truth, coco_metrics


def ground_truth(canvases: list[list[tuple[int, tuple[float, float, float, float]]]]):
    """(boxes (N, K, 4), labels (N, K)) from [[(label, (x, y, w, h)), ...] per canvas], padded."""
    k = max(1, max(len(c) for c in canvases))
    boxes = np.zeros((len(canvases), k, 4), np.float32)
    labels = np.full((len(canvases), k), -1, np.int16)
    for i, canvas in enumerate(canvases):
        for j, (label, box) in enumerate(canvas):
            boxes[i, j], labels[i, j] = box, label
    return boxes, labels


def dets(*items: tuple[int, tuple[float, float, float, float], float]) -> dict[str, np.ndarray]:
    """One canvas's detections from (label, box, score) triples."""
    return {
        "boxes": np.array([b for _, b, _ in items], np.float32).reshape(-1, 4),
        "scores": np.array([s for _, _, s in items], np.float32),
        "labels": np.array([lab for lab, _, _ in items], np.int32),
    }


def evaluate(canvases, detections, image_ids=None):
    boxes, labels = ground_truth(canvases)
    return coco_metrics(coco_ground_truth(boxes, labels), coco_detections(detections), image_ids)


A, B, C = (10.0, 10.0, 20.0, 20.0), (60.0, 50.0, 18.0, 25.0), (40.0, 70.0, 15.0, 22.0)


def test_ground_truth_json_ids_and_padding():
    boxes, labels = ground_truth([[(3, A), (7, B)], [], [(0, C)]])
    data = coco_ground_truth(boxes, labels)
    assert [im["id"] for im in data["images"]] == [1, 2, 3]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in data["annotations"]] == [
        (1, 1, 3),
        (2, 1, 7),
        (3, 3, 0),
    ]
    assert data["annotations"][1]["bbox"] == [60.0, 50.0, 18.0, 25.0]
    assert data["annotations"][1]["area"] == 18.0 * 25.0
    assert [c["id"] for c in data["categories"]] == list(range(10))


def test_ground_truth_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"boxes \(2, 3, 4\) and labels \(2, 2\)"):
        coco_ground_truth(np.zeros((2, 3, 4)), np.zeros((2, 2)))


def test_perfect_detections_give_map_one():
    canvases = [[(3, A), (7, B)], [(0, C)], [(3, B), (9, A)]]
    detections = [dets((3, A, 0.9), (7, B, 0.8)), dets((0, C, 0.7)), dets((3, B, 0.95), (9, A, 0.6))]
    result = evaluate(canvases, detections)
    assert result.stats["metrics/mAP50"] == pytest.approx(1.0, abs=1e-12)
    assert result.stats["metrics/mAP50-95"] == pytest.approx(1.0, abs=1e-12)
    assert result.stats["metrics/AR100"] == pytest.approx(1.0, abs=1e-12)
    assert result.ap50[[0, 3, 7, 9]] == pytest.approx([1.0] * 4, abs=1e-12)
    assert np.isnan(result.ap50[[1, 2, 4, 5, 6, 8]]).all()  # no ground truth: left out, as COCO does


def test_shifted_box_matches_only_the_iou_thresholds_it_reaches():
    # Shifted 2 px right: intersection 18 x 20 = 360, union 440, IoU 0.818 -> a match at the 7 thresholds
    # .50 ... .80 and a miss at .85, .90, .95, so AP@.5:.95 = 7/10 while AP50 and AP75 stay 1.
    result = evaluate([[(4, A)]], [dets((4, (12.0, 10.0, 20.0, 20.0), 0.9))])
    assert result.stats["metrics/mAP50"] == pytest.approx(1.0, abs=1e-12)
    assert result.stats["metrics/mAP75"] == pytest.approx(1.0, abs=1e-12)
    assert result.stats["metrics/mAP50-95"] == pytest.approx(0.7, abs=1e-12)
    assert result.stats["metrics/AR100"] == pytest.approx(0.7, abs=1e-12)


def test_missed_digit_gives_51_of_101_recall_points():
    # Two digits of class 2, one found perfectly, one missed: recall reaches 0.5 at precision 1, so the
    # recall thresholds 0, .01, ..., .50 (51 of 101) read precision 1 and the other 50 read 0.
    result = evaluate([[(2, A)], [(2, B)]], [dets((2, A, 0.9)), dets()])
    assert result.stats["metrics/mAP50"] == pytest.approx(51 / 101, abs=1e-12)
    assert result.stats["metrics/mAP50-95"] == pytest.approx(51 / 101, abs=1e-12)
    assert result.stats["metrics/AR100"] == pytest.approx(0.5, abs=1e-12)


def test_false_positive_costs_ap_only_when_it_outranks_the_hit():
    canvases = [[(5, A)]]
    above = evaluate(canvases, [dets((5, B, 0.9), (5, A, 0.6))])
    # Points (recall 0, precision 0) then (1, 0.5); monotone precision is 0.5 everywhere -> AP 0.5.
    assert above.stats["metrics/mAP50"] == pytest.approx(0.5, abs=1e-12)
    below = evaluate(canvases, [dets((5, A, 0.9), (5, B, 0.6))])
    # Points (1, 1) then (1, 0.5): every recall threshold reads the max to its right, 1 -> AP 1.
    assert below.stats["metrics/mAP50"] == pytest.approx(1.0, abs=1e-12)
    # A false positive of a class with no ground truth is not scored by COCO at all.
    other = evaluate(canvases, [dets((5, A, 0.6), (8, B, 0.9))])
    assert other.stats["metrics/mAP50"] == pytest.approx(1.0, abs=1e-12)


def test_mean_over_classes_and_image_subset():
    # Class 1 perfect (AP 1), class 6 half found (AP 51/101): mAP is their mean.
    canvases = [[(1, A), (6, B)], [(6, C)]]
    detections = [dets((1, A, 0.9), (6, B, 0.8)), dets()]
    result = evaluate(canvases, detections)
    assert result.ap50[1] == pytest.approx(1.0, abs=1e-12)
    assert result.ap50[6] == pytest.approx(51 / 101, abs=1e-12)
    assert result.stats["metrics/mAP50"] == pytest.approx((1 + 51 / 101) / 2, abs=1e-12)
    assert result.precision50.shape == (10, 101)
    # Only image 1 (canvas 0): both classes perfect.
    assert evaluate(canvases, detections, image_ids=[1]).stats["metrics/mAP50"] == pytest.approx(
        1.0, abs=1e-12
    )


def test_no_detections_at_all_give_zero():
    result = evaluate([[(3, A)], [(7, B)]], [dets(), dets()])
    assert result.stats["metrics/mAP50"] == 0.0
    assert result.stats["metrics/AR100"] == 0.0


def random_split(seed: int = 5, n: int = 8):
    """Canvases of 1-4 digits and jittered, sometimes misread detections (a mix of hits and misses)."""
    rng = np.random.default_rng(seed)
    canvases = [
        [
            (int(rng.integers(4)), (*rng.uniform(0, 70, 2), *rng.uniform(12, 30, 2)))
            for _ in range(rng.integers(1, 5))
        ]
        for _ in range(n)
    ]
    boxes, labels = ground_truth(canvases)
    detections = []
    for b, lab in zip(boxes, labels, strict=True):
        keep = lab >= 0
        label = np.where(rng.uniform(size=keep.sum()) < 0.7, lab[keep], 1).astype(np.int32)
        jitter = (b[keep] + rng.normal(0, 3, (keep.sum(), 4))).astype(np.float32)
        detections.append(
            {"boxes": jitter, "scores": rng.uniform(0, 1, keep.sum()).astype(np.float32), "labels": label}
        )
    return boxes, labels, detections


def plain_cocoeval(gt, results, image_ids=None):
    """pycocotools exactly as its README runs it (all four area ranges, imgIds for a subset)."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    from multidigit.evaluation.coco import _coco_objects

    evaluator = COCOeval(*_coco_objects(gt, results), iouType="bbox")
    if image_ids is not None:
        evaluator.params.imgIds = sorted(image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_one_evaluation_serves_the_split_and_its_subsets_as_plain_cocoeval_does():
    from multidigit.evaluation.coco import run_cocoeval

    boxes, labels, detections = random_split()
    gt, results = coco_ground_truth(boxes, labels), coco_detections(detections)
    evaluator = run_cocoeval(gt, results)
    for subset in (None, [1, 2, 5], [8]):
        ours = coco_metrics(gt, results, image_ids=subset, evaluator=evaluator).stats
        plain = plain_cocoeval(gt, results, subset)
        assert (ours["metrics/mAP50-95"], ours["metrics/mAP50"], ours["metrics/AR100"]) == pytest.approx(
            (max(plain[0], 0), max(plain[1], 0), max(plain[8], 0)), abs=1e-12
        ), subset
    whole = coco_metrics(gt, results, evaluator=evaluator).stats["metrics/mAP50"]
    assert 0.05 < whole < 0.95  # neither trivial case
    # The subsets left the evaluator whole: scoring it again gives the same figures.
    assert coco_metrics(gt, results, evaluator=evaluator).stats["metrics/mAP50"] == whole
