"""multidigit/loss.py: ~0 for a perfect prediction, larger for a shifted box, a wrong class, a miss."""

from __future__ import annotations

import numpy as np
import pytest

from multidigit import boxes
from multidigit.params import LossParams
from tests.test_boxes import _raw_from_targets

GT = np.array([[[10, 8, 12, 20], [40, 5, 30, 44], [70, 60, 25, 28]]], np.float32)
LABELS = np.array([[3, 7, 1]])


def _loss(targets, raw, params=None):
    from multidigit.loss import loss_components

    parts = loss_components(targets, raw, params or LossParams(obj_iou=0.0), stride=4)
    return {k: float(v) for k, v in parts.items()}


@pytest.fixture()
def targets():
    return boxes.encode_targets(GT, LABELS, stride=4, boxes_per_cell=1)


def test_perfect_prediction_has_near_zero_loss(targets):
    parts = _loss(targets, _raw_from_targets(targets))
    assert parts["obj"] + parts["box"] + parts["cls"] < 1e-3
    assert parts["iou"] > 0.999


def test_shifted_box_costs_more(targets):
    raw = _raw_from_targets(targets)
    base = _loss(targets, raw)["box"]
    shifted = raw.copy()
    obj = targets[..., 0] > 0
    shifted[..., 1][obj] += 1.0  # centre moved right inside the cell
    bigger = raw.copy()
    bigger[..., 3][obj] += 0.3  # width 35% too large
    assert _loss(targets, shifted)["box"] > base + 0.1
    assert _loss(targets, bigger)["box"] > base + 0.1
    assert _loss(targets, shifted)["iou"] < 0.99


def test_wrong_class_and_missed_object_cost_more(targets):
    raw = _raw_from_targets(targets)
    wrong = raw.copy()
    wrong[..., 5:] = raw[..., 5:][..., ::-1]
    missed = raw.copy()
    missed[..., 0] = -20.0
    assert _loss(targets, wrong)["cls"] > 10
    assert _loss(targets, missed)["obj"] > 10


def test_iou_aware_objectness_target():
    """With obj_iou=1 the object slot's target is the box IoU: a perfect box still costs ~0."""
    t = boxes.encode_targets(GT, LABELS, stride=4, boxes_per_cell=1)
    assert _loss(t, _raw_from_targets(t), LossParams(obj_iou=1.0))["obj"] < 1e-3


def test_keras_loss_sums_components(targets):
    from multidigit.loss import DetectionLoss

    raw = _raw_from_targets(targets)
    raw[..., 1] += 0.5
    parts = _loss(targets, raw, LossParams())
    total = float(DetectionLoss(LossParams(), stride=4)(targets, raw))
    assert total == pytest.approx(parts["obj"] + parts["box"] + parts["cls"], rel=1e-5)


def test_heatmap_objectness_is_near_zero_on_the_heat_and_costly_for_a_miss(targets):
    heatmap = LossParams(objectness="heatmap")
    raw = _raw_from_targets(targets)
    heat = np.clip(targets[..., 6], 1e-6, 1 - 1e-6)
    raw[..., 0] = np.log(heat / (1 - heat))
    assert _loss(targets, raw, heatmap)["obj"] < 0.1
    missed = raw.copy()
    missed[..., 0][targets[..., 6] == 1.0] = -10.0  # the three centre cells say "empty"
    assert _loss(targets, missed, heatmap)["obj"] > 25
    # a cell beside a centre is punished far less than a cell far from every digit for the same score
    beside, far = raw.copy(), raw.copy()
    assert targets[0, 6, 13, 0, 6] == 1.0  # the centre cell of the 30 x 44 px digit
    beside[0, 6, 14, 0, 0] = 2.0
    far[0, 24, 0, 0, 0] = 2.0
    base = _loss(targets, raw, heatmap)["obj"]
    extra_beside, extra_far = (_loss(targets, r, heatmap)["obj"] - base for r in (beside, far))
    assert 0 < extra_beside < extra_far / 2
