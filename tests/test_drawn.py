"""The drawn split's scoring (multidigit/evaluation/drawn.py): reading order, sequence accuracy on
hand-built detections, brush and size buckets, and what the page shows versus the candidates."""

from __future__ import annotations

import numpy as np
import pytest

from multidigit.evaluation import drawn
from tests.test_coco import dets, ground_truth


def row(digits, y=30.0, h=20.0, x0=5.0, step=22.0, slant=0.0):
    """(label, box) of digits written left to right at height y (each next one `slant` px lower)."""
    return [(d, (x0 + i * step, y + i * slant, 0.7 * h, h)) for i, d in enumerate(digits)]


def test_reading_order_is_rows_top_to_bottom_then_x():
    one = np.array([b for _, b in row([1, 2, 3])])
    assert drawn.reading_order(one[[2, 0, 1]]).tolist() == [1, 2, 0]
    # Two rows, the second written first in the list; a slight slant keeps each row one row.
    two = [b for _, b in row([4, 5, 6], y=60.0, slant=2.0) + row([1, 2, 3], y=10.0, slant=2.0)]
    labels = [4, 5, 6, 1, 2, 3]
    assert drawn.read_digits(np.array(two), np.array(labels)) == (1, 2, 3, 4, 5, 6)
    assert drawn.reading_order(np.zeros((0, 4))).tolist() == []


def test_sequence_accuracy_on_hand_built_detections():
    canvases = [row([1, 6, 0, 0]), row([7]), row([3, 2]), row([5, 8])]
    boxes, labels = ground_truth(canvases)
    listed = [
        dets(*[(d, b, 0.9) for d, b in reversed(canvases[0])]),  # right digits, any list order: correct
        dets((7, canvases[1][0][1], 0.9), (1, canvases[1][0][1], 0.6)),  # "7 1" for a 7: an extra 1
        dets((2, canvases[2][1][1], 0.9)),  # the 3 is missed
        dets((8, canvases[3][0][1], 0.9), (5, canvases[3][1][1], 0.9)),  # "85" for "58": swapped
    ]
    assert drawn.sequence_correct(boxes, labels, listed).tolist() == [True, False, False, False]
    # A hidden duplicate (shown 0) is not listed, so the 7 reads right once the page hides it.
    listed[1]["shown"] = np.array([True, False])
    brush = np.array([10.0, 10.0, 4.0, 24.0])
    score = drawn.score_drawn(boxes, labels, brush, listed, listed)
    assert score.sequence_ok.tolist() == [True, True, False, False]
    m = score.metrics
    assert m["drawn/sequence_accuracy"] == 0.5 and m["drawn/canvases"] == 4.0 and m["drawn/digits"] == 9.0
    # The page: 8 shown boxes, 6 right (the 8 and the 5 are misread in place); 9 digits.
    assert (m["drawn/precision"], m["drawn/recall"]) == pytest.approx((6 / 8, 6 / 9))
    assert m["drawn/count_accuracy"] == 0.75 and m["drawn/canvas_accuracy"] == 0.5
    # Buckets by brush: 9-11 holds canvases 0 and 1 (both read right), the ends one each.
    assert m["drawn/brush_9-11/sequence_accuracy"] == 1.0 and m["drawn/brush_9-11/canvases"] == 2.0
    assert m["drawn/brush_4-8/recall"] == 0.5 and m["drawn/brush_18-24/sequence_accuracy"] == 0.0
    assert "drawn/brush_12-17/canvases" not in m  # empty buckets are left out
    assert m["drawn/size_15-29/canvases"] == 4.0  # every digit is 20 px tall
    # mAP runs on the candidates, the hidden 1 included (it ranks below the real 1, so costs nothing):
    # classes 0, 1, 2, 6, 7 AP 1; 3 (missed), 5 and 8 (misread) AP 0.
    assert m["drawn/mAP50"] == pytest.approx(5 / 8, abs=1e-9)
    # Worst first: both misread sequences, canvas 3 (2 misses + 2 extras) before canvas 2 (1 miss).
    assert drawn.worst_drawn(score, 3).tolist() == [3, 2]


def test_size_and_brush_buckets():
    boxes, labels = ground_truth([row([1], h=16.0), row([2, 3], h=35.0), row([4], h=58.0), row([5], h=30.0)])
    np.testing.assert_allclose(drawn.digit_heights(boxes, labels), [16.0, 35.0, 58.0, 30.0])
    sizes = drawn.buckets_of(drawn.digit_heights(boxes, labels), drawn.SIZE_BUCKETS)
    assert {k: v.tolist() for k, v in sizes.items()} == {
        "size_15-29": [0],
        "size_30-44": [1, 3],
        "size_45-60": [2],
    }
    widths = drawn.buckets_of(np.array([4.0, 8.9, 9.0, 24.0]), drawn.BRUSH_BUCKETS)
    assert {k: v.tolist() for k, v in widths.items()} == {
        "brush_4-8": [0, 1],
        "brush_9-11": [2],
        "brush_18-24": [3],
    }


def test_score_drawn_rejects_mismatched_inputs():
    boxes, labels = ground_truth([row([1]), row([2])])
    with pytest.raises(ValueError, match="drawn: 2 canvases but 1 brush widths"):
        drawn.score_drawn(boxes, labels, np.array([10.0]), [dets(), dets()], [dets(), dets()])
