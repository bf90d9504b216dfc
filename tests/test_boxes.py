"""multidigit/boxes.py: converters, IoU, grid encoding round trip, decoding, class-aware NMS."""

from __future__ import annotations

import numpy as np
import pytest

from multidigit import boxes
from multidigit.constants import NUM_CLASSES


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    wh = rng.uniform(5, 50, size=(n, 2))
    xy = rng.uniform(0, 100 - wh)
    return np.concatenate([xy, wh], axis=1).astype(np.float32)


def test_converters_round_trip():
    b = _random_boxes(np.random.default_rng(0), 20)
    np.testing.assert_allclose(boxes.xyxy_to_xywh(boxes.xywh_to_xyxy(b)), b, atol=1e-4)


def test_iou_known_values():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(boxes.iou_matrix(a, b)[0], [1.0, 50 / 150, 0.0, 0.0], atol=1e-6)


def _raw_from_targets(targets: np.ndarray) -> np.ndarray:
    """The logits a perfect model would output for `targets` (inverse of decode)."""
    b, g, _, a, _ = targets.shape
    raw = np.full((b, g, g, a, boxes.RAW_CHANNELS), -20.0, np.float32)
    obj = targets[..., 0] > 0
    sig = (targets[..., 1:3] + boxes.OFFSET_PAD) / boxes.OFFSET_GAIN
    off = np.clip(sig, 1e-6, 1 - 1e-6)
    raw[..., 0] = np.where(obj, 20.0, -20.0)
    raw[..., 1:3] = np.log(off / (1 - off))
    raw[..., 3:5] = targets[..., 3:5]
    cls = targets[..., 5].astype(int)
    np.put_along_axis(raw[..., 5:], cls[..., None], 20.0, axis=-1)
    return raw


@pytest.mark.parametrize(("stride", "per_cell"), [(4, 1), (4, 3), (5, 2), (10, 1)])
def test_encode_decode_round_trip(stride, per_cell):
    # Digits like a stage-3 canvas: sizes 12-50 px, centres at least 12 px apart so cells differ.
    gt = np.array([[10, 8, 12, 20], [40, 5, 30, 44], [70, 60, 25, 28], [5, 60, 6, 18]], np.float32)
    labels = np.array([[3, 7, 1, 9, -1]], np.int16)
    gt_b = np.concatenate([gt, np.zeros((1, 4), np.float32)])[None]
    targets = boxes.encode_targets(gt_b, labels, stride, per_cell)
    assert targets.shape == (1, 100 // stride, 100 // stride, per_cell, boxes.TARGET_CHANNELS)
    assert targets[..., 0].sum() == 4
    decoded = np.asarray(boxes.decode_raw(_raw_from_targets(targets), stride, per_cell))
    dets = boxes.postprocess(decoded, 0.5, 0.45, 20)[0]
    assert len(dets["boxes"]) == 4
    iou = boxes.iou_matrix(gt, dets["boxes"])
    match = iou.argmax(axis=1)
    assert (iou.max(axis=1) > 0.99).all()
    np.testing.assert_array_equal(dets["labels"][match], labels[0, :4])


def test_encode_assigns_centre_cell_and_nearest_anchor():
    gt = np.array([[[20, 30, 10, 10], [50, 50, 44, 44]]], np.float32)
    t = boxes.encode_targets(gt, np.array([[2, 5]]), stride=4, boxes_per_cell=3)
    # centre (25, 35) -> row 8, col 6; small box -> the smallest anchor (slot 0)
    assert t[0, 8, 6, 0, 0] == 1 and t[0, 8, 6, 0, 5] == 2
    # centre (72, 72) -> row 18, col 18; 44 px -> the largest anchor (slot 2)
    assert t[0, 18, 18, 2, 0] == 1 and t[0, 18, 18, 2, 5] == 5
    assert t[..., 0].sum() == 2


@pytest.mark.parametrize("neighbours", [False, True])
def test_neighbour_cells_decode_to_the_same_box(neighbours):
    # centre (25, 35) = cell (row 8, col 6) at offsets (0.25, 0.75): neighbours are col 5 and row 9
    gt = np.array([[[20, 30, 10, 10]]], np.float32)
    t = boxes.encode_targets(gt, np.array([[4]]), stride=4, boxes_per_cell=1, neighbours=neighbours)
    cells = {tuple(rc) for rc in np.argwhere(t[0, ..., 0, 0] > 0)}
    assert cells == ({(8, 6), (8, 5), (9, 6)} if neighbours else {(8, 6)})
    if neighbours:  # offsets measured from the neighbour's own corner
        assert t[0, 8, 5, 0, 1] == pytest.approx(1.25) and t[0, 9, 6, 0, 2] == pytest.approx(-0.25)
    decoded = np.asarray(boxes.decode_raw(_raw_from_targets(t), 4, 1))[0]
    found = decoded[decoded[:, 4] > 0.5, :4]
    assert len(found) == len(cells)
    assert (boxes.iou_matrix(gt[0], found) > 0.99).all()


def test_neighbour_cells_never_displace_a_centre_cell():
    # the big digit's centre (23, 35) is in col 5 with its right neighbour col 6, where the small
    # digit's centre (26, 34) lies; the big one is drawn last but must not take that cell
    gt = np.array([[[18, 30, 10, 10], [24, 30, 4, 8]]], np.float32)
    t = boxes.encode_targets(gt, np.array([[1, 2]]), stride=4, boxes_per_cell=1, neighbours=True)
    assert t[0, 8, 5, 0, 5] == 1 and t[0, 8, 6, 0, 5] == 2
    assert t[0, 9, 5, 0, 5] == 1  # its other neighbour (below) is free


def test_merge_averages_the_suppressed_boxes_of_the_same_class():
    def slot(box, obj, cls):
        probs = np.full(NUM_CLASSES, 0.0)
        probs[cls] = 1.0
        return np.concatenate([box, [obj], probs])

    decoded = np.stack(
        [
            slot([10, 10, 20, 20], 0.6, 3),  # kept
            slot([12, 10, 20, 20], 0.3, 3),  # suppressed by it: votes
            slot([11, 11, 20, 20], 0.9, 5),  # other class: kept on its own, no vote
            slot([60, 60, 10, 10], 0.5, 3),  # far away: kept on its own
        ]
    )[None].astype(np.float32)
    plain = boxes.postprocess(decoded, 0.1, 0.45, 20)[0]
    merged = boxes.postprocess(decoded, 0.1, 0.45, 20, merge=True)[0]
    np.testing.assert_array_equal(plain["labels"], merged["labels"])
    np.testing.assert_array_equal(plain["scores"], merged["scores"])
    by_label = {
        (int(lab), int(b[0] > 50)): b for lab, b in zip(merged["labels"], merged["boxes"], strict=True)
    }
    np.testing.assert_allclose(by_label[(3, 0)], [(10 * 0.6 + 12 * 0.3) / 0.9, 10, 20, 20], rtol=1e-6)
    np.testing.assert_allclose(by_label[(5, 0)], [11, 11, 20, 20])
    np.testing.assert_allclose(by_label[(3, 1)], [60, 60, 10, 10])


def test_postprocess_class_aware_nms_and_threshold():
    def slot(box, obj, cls, p=0.9):
        probs = np.full(NUM_CLASSES, (1 - p) / (NUM_CLASSES - 1))
        probs[cls] = p
        return np.concatenate([box, [obj], probs])

    decoded = np.stack(
        [
            slot([10, 10, 20, 20], 0.95, 3),  # best of class 3
            slot([11, 10, 20, 20], 0.90, 3),  # duplicate of it: suppressed
            slot([11, 10, 20, 20], 0.90, 4),  # same place, other class: kept (class-aware)
            slot([60, 60, 20, 20], 0.30, 1),  # below threshold 0.5 (0.3 * 0.9)
        ]
    )[None].astype(np.float32)
    det = boxes.postprocess(decoded, 0.5, 0.45, 20)[0]
    assert det["labels"].tolist() == [3, 4]
    assert det["scores"].dtype == np.float32 and det["boxes"].shape == (2, 4)
    assert boxes.postprocess(decoded, 0.5, 0.45, 1)[0]["labels"].tolist() == [3]
    assert len(boxes.postprocess(decoded, 0.99, 0.45, 20)[0]["boxes"]) == 0


def test_postprocess_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"decoded: shape \(2, 15\)"):
        boxes.postprocess(np.zeros((2, 15)), 0.5, 0.45, 20)


def test_grid_size_rejects_non_divisor():
    with pytest.raises(ValueError, match=r"model\.stride: 3"):
        boxes.grid_size(3)


def test_centre_heat_peaks_at_each_centre_cell_and_widens_with_the_digit():
    gt = np.array([[[8, 8, 12, 20], [50, 30, 48, 56]]], np.float32)  # a small digit and a ~2 cm one
    heat = boxes.encode_targets(gt, np.array([[3, 7]]), stride=4, boxes_per_cell=2)[..., 6]
    np.testing.assert_array_equal(heat[..., 0], heat[..., 1])  # one heat per cell, every slot
    heat = heat[0, ..., 0]
    small, large = (4, 3), (14, 18)  # (row, col) of the cells holding the two centres
    assert heat[small] == 1.0 and heat[large] == 1.0 and (heat == 1.0).sum() == 2
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    # one cell to the side: a 12 px digit's heat is nearly gone, a 48 px digit's is still high
    assert heat[small[0], small[1] + 1] < 0.1 < 0.5 < heat[large[0], large[1] + 1]
    assert heat[20:, :8].max() < 1e-6  # far from both digits


def test_peaks_keep_one_slot_per_digit_and_its_box():
    gt = np.array([[[10, 8, 12, 20], [40, 5, 30, 44], [70, 60, 25, 28]]], np.float32)
    targets = boxes.encode_targets(gt, np.array([[3, 7, 1]]), stride=4, boxes_per_cell=1, neighbours=True)
    raw = _raw_from_targets(targets)
    heat = np.clip(targets[..., 6], 1e-4, 1 - 1e-4)
    raw[..., 0] = np.log(heat / (1 - heat))  # objectness shaped like the centre heat
    spread = np.asarray(boxes.decode_raw(raw, 4, 1))[0]
    peaked = np.asarray(boxes.decode_raw(raw, 4, 1, peaks=True))[0]
    assert (spread[:, 4] > 0.01).sum() > 3 * 3  # the heat's shoulders score too
    assert (peaked[:, 4] > 0.01).sum() == 3
    np.testing.assert_allclose(peaked[peaked[:, 4] > 0.01, :4], gt[0], atol=1e-3)


# ---------------------------------------------------------------- fit to ink
def _blob_canvas() -> np.ndarray:
    """A 100 x 100 canvas with one ink blob whose tight box is x 20..39, y 30..59 (xywh 20, 30, 20, 30),
    a faint pixel at its corner (any value > 0 is ink), and a second blob 3 px to its right."""
    image = np.zeros((100, 100), np.uint8)
    image[30:60, 20:40] = 200
    image[30, 20] = 1
    image[35:50, 43:50] = 255
    return image


def test_fit_to_ink_moves_loose_edges_onto_the_ink_within_reach():
    image = _blob_canvas()
    loose = np.array([[17.6, 27.7, 24.7, 35.0]], np.float32)  # every edge 2-3 px out; 4 reaches it at 0.1
    np.testing.assert_array_equal(boxes.fit_to_ink(image, loose, 0.1, 1), [[20, 30, 20, 30]])
    far = np.array([[12.0, 30.0, 28.0, 30.0]], np.float32)  # left edge 8 px out; 0.1 x 28 rounds to 3
    np.testing.assert_array_equal(boxes.fit_to_ink(image, far, 0.1, 1), [[12, 30, 28, 30]])


def test_fit_to_ink_grows_along_ink_only_by_grow_and_never_across_a_gap():
    image = _blob_canvas()
    short = np.array([[23.0, 30.0, 14.0, 30.0]], np.float32)  # left 3 px inside, right 3 px inside
    np.testing.assert_array_equal(boxes.fit_to_ink(image, short, 0.2, 1), [[22, 30, 16, 30]])
    np.testing.assert_array_equal(boxes.fit_to_ink(image, short, 0.2, 0), [[23, 30, 14, 30]])
    np.testing.assert_array_equal(boxes.fit_to_ink(image, short, 0.2, 5), [[20, 30, 20, 30]])
    # the right edge on the blob's last column does not jump the 3 px gap to the second blob
    np.testing.assert_array_equal(
        boxes.fit_to_ink(image, np.float32([[20, 30, 20, 30]]), 0.2, 5), [[20, 30, 20, 30]]
    )


def test_fit_to_ink_only_rounds_a_box_without_ink_in_reach():
    image = _blob_canvas()
    empty = np.array([[70.3, 70.2, 10.1, 10.4], [0.0, 0.0, 0.2, 0.2]], np.float32)
    np.testing.assert_array_equal(boxes.fit_to_ink(image, empty, 0.3, 1), [[70, 70, 10, 11], [0, 0, 1, 1]])


def test_postprocess_fits_kept_boxes_to_ink_and_needs_the_canvases():
    decoded = np.zeros((1, 2, 15), np.float32)
    decoded[0, 0, :5] = [18.0, 28.0, 24.0, 34.0, 0.9]
    decoded[0, 0, 5 + 3] = 1.0
    image = _blob_canvas()[None]
    plain = boxes.postprocess(decoded, 0.5, 0.45, 20)[0]
    fitted = boxes.postprocess(decoded, 0.5, 0.45, 20, images=image, ink_shrink=0.2, ink_grow=1)[0]
    np.testing.assert_array_equal(plain["boxes"], [[18, 28, 24, 34]])
    np.testing.assert_array_equal(fitted["boxes"], [[20, 30, 20, 30]])
    with pytest.raises(ValueError, match=r"images: fitting boxes to ink needs the 1 canvases"):
        boxes.postprocess(decoded, 0.5, 0.45, 20, ink_shrink=0.2)
