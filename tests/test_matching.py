"""Operating-point figures on COCOeval's matches: P/R/F1, the max-F1 point, confusion, counts, buckets,
on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from multidigit.evaluation import matching as metrics
from tests.test_coco import A, B, C, dets, ground_truth

D = (70.0, 5.0, 20.0, 20.0)  # far from A, B and C
A_NEAR = (11.0, 10.0, 20.0, 20.0)  # IoU with A = 380 / 420 = 0.905
A_OFF = (20.0, 10.0, 20.0, 20.0)  # IoU with A = 200 / 600 = 0.333: not a match


def test_matches_are_cocoevals_best_iou_in_score_order():
    boxes, labels = ground_truth([[(3, A), (7, B)]])
    det = dets((3, A_NEAR, 0.6), (3, A, 0.9), (7, A_OFF, 0.8), (7, B, 0.5))
    m = metrics.match_split(boxes, labels, [det])
    # 0.9 takes A first, so the 0.6 duplicate finds it taken; A_OFF overlaps A too little.
    assert m.det_gt.tolist() == [-1, 0, -1, 1]
    assert m.det_iou[[1, 3]] == pytest.approx([1.0, 1.0]) and m.det_iou[[0, 2]].tolist() == [0.0, 0.0]
    # Class-agnostic: the wrong-class A_OFF still does not reach IoU 0.5, the 0.6 box still loses A.
    assert metrics.match_split(boxes, labels, [det], class_aware=False).det_gt.tolist() == [-1, 0, -1, 1]
    wrong = [dets((5, A_NEAR, 0.9))]
    assert metrics.match_split(boxes, labels, wrong).det_gt.tolist() == [-1]
    agnostic = metrics.match_split(boxes, labels, wrong, class_aware=False)
    assert agnostic.det_gt.tolist() == [0] and agnostic.det_iou[0] == pytest.approx(380 / 420)


def test_matches_equal_cocoevals_own_per_image_matches():
    """The flattened matches are COCOeval's evalImgs dtMatches at IoU 0.5, mapped back to our order."""
    from multidigit.evaluation import coco

    rng = np.random.default_rng(3)
    canvases = [
        [(int(rng.integers(3)), (*rng.uniform(0, 60, 2), 20.0, 20.0)) for _ in range(4)] for _ in range(6)
    ]
    boxes, labels = ground_truth(canvases)
    detections = []
    for b, lab in zip(boxes, labels, strict=True):
        jitter = b + rng.normal(0, 4, b.shape).astype(np.float32)
        label = np.where(rng.uniform(size=len(b)) < 0.8, lab, 2).astype(np.int32)
        detections.append(
            {"boxes": jitter, "scores": rng.uniform(0, 1, len(b)).astype(np.float32), "labels": label}
        )
    m = metrics.match_split(boxes, labels, detections)
    gt, results = coco.coco_ground_truth(boxes, labels), coco.coco_detections(detections)
    evaluator = coco.run_cocoeval(gt, results)
    expected = {}
    for e in evaluator.evalImgs:
        if e is not None:
            expected.update(zip(e["dtIds"], e["dtMatches"][0], strict=True))
    assert [int(expected[n + 1]) - 1 for n in range(len(results))] == m.det_gt.tolist()
    assert 0 < m.det_is_tp.sum() < len(results)  # the case has both hits and misses


def hand_case():
    """Three canvases: 5 digits; detections scored so the F1 sweep has a known best point."""
    boxes, labels = ground_truth([[(3, A), (7, B)], [(2, C)], [(3, B), (1, D)]])
    detections = [
        dets((3, A, 0.9), (1, B, 0.7), (5, D, 0.65)),  # hit, wrong class at B, false positive
        dets((2, C, 0.8)),  # hit
        dets((3, B, 0.6), (9, A, 0.3)),  # hit; digit 1 at D missed; low false positive
    ]
    return boxes, labels, detections


def test_confusion_matrix_counts_hand_case():
    boxes, labels, detections = hand_case()
    at = [metrics.keep_above(d, 0.5) for d in detections]
    cm = metrics.confusion_matrix(metrics.match_split(boxes, labels, at, class_aware=False))
    expected = np.zeros((11, 11), int)
    expected[3, 3] = 2  # two 3s read as 3
    expected[2, 2] = 1
    expected[7, 1] = 1  # the 7 at B read as 1
    expected[10, 5] = 1  # false positive "5" on background
    expected[1, 10] = 1  # the 1 at D missed
    np.testing.assert_array_equal(cm, expected)
    # At threshold 0.2 the 0.3 "9" counts too: a second false positive.
    at = [metrics.keep_above(d, 0.2) for d in detections]
    assert metrics.confusion_matrix(metrics.match_split(boxes, labels, at, class_aware=False))[10, 9] == 1


def test_shown_only_keeps_what_the_page_lists():
    det = dets((3, A, 0.9), (5, A_NEAR, 0.7), (7, B, 0.6))
    det["shown"] = np.array([True, False, True])
    kept = metrics.shown_only(det)
    assert kept["labels"].tolist() == [3, 7] and kept["shown"].all() and kept["boxes"].shape == (2, 4)
    unmarked = dets((3, A, 0.9))
    assert metrics.shown_only(unmarked) is unmarked  # no mark (Keras path): every box is shown


def test_per_class_precision_recall_f1_hand_case():
    boxes, labels, detections = hand_case()
    m = metrics.match_split(boxes, labels, detections)
    prf = metrics.class_prf(m, threshold=0.5)
    # Class 3: 2 detections, both right, 2 digits. Class 1: 1 detection (wrong), 1 digit missed.
    assert (prf["precision/3"], prf["recall/3"], prf["f1/3"]) == (1.0, 1.0, 1.0)
    assert (prf["precision/1"], prf["recall/1"], prf["f1/1"]) == (0.0, 0.0, 0.0)
    # Class 7: no detection, one digit. Class 5: one false positive, no digit.
    assert (prf["precision/7"], prf["recall/7"], prf["f1/7"]) == (0.0, 0.0, 0.0)
    assert (prf["precision/5"], prf["recall/5"]) == (0.0, 0.0)
    # Overall at 0.5: 5 detections kept, 3 right, 5 digits -> P = R = F1 = 0.6.
    assert (prf["precision/all"], prf["recall/all"], prf["f1/all"]) == pytest.approx((0.6, 0.6, 0.6))


def test_f1_curve_and_best_threshold():
    boxes, labels, detections = hand_case()
    m = metrics.match_split(boxes, labels, detections)
    curve = metrics.f1_curve(m)
    # Scores descending 0.9 T, 0.8 T, 0.7 F, 0.65 F, 0.6 T, 0.3 F with 5 digits: F1 = 2 tp / (n + 5).
    np.testing.assert_allclose(curve["threshold"], [0.9, 0.8, 0.7, 0.65, 0.6, 0.3], rtol=1e-6)
    np.testing.assert_allclose(curve["f1"], [2 / 6, 4 / 7, 4 / 8, 4 / 9, 6 / 10, 6 / 11])
    np.testing.assert_allclose(curve["precision"], [1, 1, 2 / 3, 2 / 4, 3 / 5, 3 / 6])
    threshold, f1 = metrics.best_f1_threshold(m)
    assert threshold == pytest.approx(0.6) and f1 == pytest.approx(0.6)
    per_class = metrics.f1_curve(m, class_id=3)
    np.testing.assert_allclose(per_class["recall"], [0.5, 1.0])


def test_f1_curve_keeps_ties_together():
    boxes, labels = ground_truth([[(3, A)], [(3, B)]])
    m = metrics.match_split(boxes, labels, [dets((3, A, 0.5)), dets((3, C, 0.5))])
    curve = metrics.f1_curve(m)
    assert curve["threshold"].tolist() == [0.5]  # one threshold keeps both tied detections
    assert curve["precision"].tolist() == [0.5]


def test_canvas_rule_picks_where_the_most_canvases_are_read_exactly():
    """F1 takes a false positive for two later hits; a person sees one drawing read whole, then none."""
    boxes, labels = ground_truth([[(3, A)], [(1, D), (4, A), (2, C), (7, B)]])
    detections = [
        dets((3, A, 0.9), (5, D, 0.5)),  # exact at 0.9, a false positive from 0.5
        dets((1, D, 0.9), (4, A, 0.4), (2, C, 0.4)),  # the 7 is never found: never exact
    ]
    m = metrics.match_split(boxes, labels, detections)
    curve = metrics.canvas_curve(m)
    np.testing.assert_allclose(curve["threshold"], [0.9, 0.5, 0.4], rtol=1e-6)
    np.testing.assert_allclose(curve["canvas_accuracy"], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(curve["f1"], [4 / 7, 4 / 8, 8 / 10])
    assert metrics.best_f1_threshold(m)[0] == pytest.approx(0.4)
    threshold, f1 = metrics.best_canvas_threshold(m)
    assert threshold == pytest.approx(0.9) and f1 == pytest.approx(4 / 7)
    # the curve equals canvas_accuracies recomputed at each threshold
    for t, acc in zip(curve["threshold"], curve["canvas_accuracy"], strict=True):
        assert metrics.canvas_accuracies(metrics.canvas_counts(m, t))["canvas/accuracy"] == acc


def test_canvas_rule_breaks_ties_by_f1():
    boxes, labels, detections = hand_case()  # canvas accuracy 1/3 from 0.8 down; F1 peaks at 0.6
    assert metrics.best_canvas_threshold(metrics.match_split(boxes, labels, detections)) == (
        pytest.approx(0.6),
        pytest.approx(0.6),
    )
    boxes, labels = ground_truth([[(3, A)]])
    # a duplicate box is a false positive: the canvas is read whole only above it
    m = metrics.match_split(boxes, labels, [dets((3, A, 0.9), (3, A_NEAR, 0.5))])
    assert metrics.best_canvas_threshold(m) == (pytest.approx(0.9), 1.0)
    assert metrics.best_canvas_threshold(metrics.match_split(boxes, labels, [dets()])) == (1.0, 0.0)


def test_best_threshold_without_detections():
    boxes, labels = ground_truth([[(3, A)]])
    assert metrics.best_f1_threshold(metrics.match_split(boxes, labels, [dets()])) == (1.0, 0.0)


def test_counts_canvas_accuracy_iou_and_worst():
    boxes, labels, detections = hand_case()
    m = metrics.match_split(boxes, labels, detections)
    counts = metrics.canvas_counts(m, 0.5)
    assert counts.n_gt.tolist() == [2, 1, 2]
    assert counts.n_det.tolist() == [3, 1, 1]
    assert counts.n_tp.tolist() == [1, 1, 1]
    acc = metrics.canvas_accuracies(counts)
    assert acc == {"count/accuracy": pytest.approx(1 / 3), "canvas/accuracy": pytest.approx(1 / 3)}
    assert metrics.canvas_accuracies(counts, np.array([1])) == {"count/accuracy": 1.0, "canvas/accuracy": 1.0}
    # Errors: canvas 0 has 1 miss + 2 false positives, canvas 2 one miss, canvas 1 none.
    assert metrics.worst_canvases(counts, 5).tolist() == [0, 2]
    assert metrics.matched_iou_stats(m, 0.5)["iou/mean"] == pytest.approx(1.0)


def test_matched_iou_of_a_shifted_box():
    boxes, labels = ground_truth([[(4, A)], [(4, B)]])
    m = metrics.match_split(boxes, labels, [dets((4, A_NEAR, 0.9)), dets((4, B, 0.9))])
    stats = metrics.matched_iou_stats(m, 0.5)
    assert stats["iou/mean"] == pytest.approx((380 / 420 + 1.0) / 2, rel=1e-6)


def test_buckets_by_digit_count_and_overlap():
    overlapping = (25.0, 25.0, 20.0, 20.0)  # intersects A
    seven_apart = [(i, (i * 9.0, 80.0, 9.0, 8.0)) for i in range(7)]  # edges touch: no overlap
    canvases = [[(1, A)], [(1, A), (2, B), (3, C)], [(1, A), (2, overlapping)], seven_apart]
    boxes, labels = ground_truth(canvases)
    assert {k: v.tolist() for k, v in metrics.count_buckets(labels).items()} == {
        "1": [0],
        "2-5": [1, 2],
        "6-10": [3],
    }
    assert {k: v.tolist() for k, v in metrics.overlap_buckets(boxes, labels).items()} == {
        "overlap": [2],
        "no-overlap": [0, 1, 3],
    }
    assert list(metrics.count_buckets(labels[:1])) == ["1"]  # empty buckets are left out


def test_match_split_rejects_wrong_length():
    boxes, labels = ground_truth([[(1, A)], [(2, B)]])
    with pytest.raises(ValueError, match="detections: 1 canvases, ground truth has 2"):
        metrics.match_split(boxes, labels, [dets()])


def test_curve_at_samples_the_last_point_at_or_above_each_threshold():
    boxes, labels, detections = hand_case()
    curve = metrics.f1_curve(metrics.match_split(boxes, labels, detections))
    sampled = metrics.curve_at(curve, np.array([0.0, 0.6, 0.61, 0.95]))
    np.testing.assert_allclose(sampled["f1"], [6 / 11, 6 / 10, 4 / 9, 0.0])
    np.testing.assert_allclose(sampled["recall"], [0.6, 0.6, 0.4, 0.0])
