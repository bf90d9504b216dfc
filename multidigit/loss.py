"""The detection loss on the raw grid: objectness BCE, class cross-entropy, box regression.

Inputs are the training model's raw output (B, G, G, A, 15) = [obj logit, tx logit, ty logit, tw, th,
10 class logits] and the targets of `boxes.encode_targets` (B, G, G, A, 7) = [is_object, tx, ty, tw, th,
class, heat]. Every term is summed over cells and averaged over canvases (YOLO style), so the weights of the
loss block (lambda_coord, lambda_noobj, lambda_class, lambda_iou) keep their meaning across batch sizes.

    objectness  BCE; empty slots weighted lambda_noobj. The target of an object slot blends 1 with the
                IoU of its predicted box (obj_iou), so the score also ranks how well a box fits.
                Or (`objectness: heatmap`) CenterNet's penalty-reduced focal loss on every cell against
                the centre heat of `boxes.centre_heat`: a cell beside a centre is only gently pushed
                down, so the three cells that share a digit's box no longer fight over its score.
    box         lambda_coord * squared error of (centre offsets in cell units, log sizes)
                + lambda_iou * (1 - GIoU) of the decoded box, which presses on the pixel edges that
                mAP@.5:.95 measures.
    class       lambda_class * sparse softmax cross-entropy, object slots only.
"""

from __future__ import annotations

import keras
from keras import ops

from multidigit.boxes import MAX_LOG_SIZE, anchor_sizes, offset_from_logit
from multidigit.params import LossParams

EPS = 1e-7
FOCAL_ALPHA, FOCAL_BETA = 2.0, 4.0  # CenterNet's focal exponents: hard examples, and the penalty reduction


def _giou(pred, true):
    """GIoU of (..., 4) centre-form boxes [cx, cy, w, h] (any common unit)."""
    p1, p2 = pred[..., :2] - pred[..., 2:] / 2, pred[..., :2] + pred[..., 2:] / 2
    t1, t2 = true[..., :2] - true[..., 2:] / 2, true[..., :2] + true[..., 2:] / 2
    inter_wh = ops.maximum(ops.minimum(p2, t2) - ops.maximum(p1, t1), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = pred[..., 2] * pred[..., 3] + true[..., 2] * true[..., 3] - inter
    iou = inter / (union + EPS)
    hull_wh = ops.maximum(p2, t2) - ops.minimum(p1, t1)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return iou - (hull - union) / (hull + EPS), iou


def _focal_heat(heat, logit):
    """Summed penalty-reduced focal loss of objectness logits against centre heat (CenterNet eq. 1)."""
    p = ops.sigmoid(logit)
    log_p, log_not_p = -ops.softplus(-logit), -ops.softplus(logit)  # log p, log(1 - p), stable
    peak = ops.cast(heat >= 1.0, logit.dtype)
    pos = peak * ops.power(1.0 - p, FOCAL_ALPHA) * log_p
    neg = (1.0 - peak) * ops.power(1.0 - heat, FOCAL_BETA) * ops.power(p, FOCAL_ALPHA) * log_not_p
    return -ops.sum(pos + neg)


def loss_components(targets, raw, params: LossParams, stride: int) -> dict:
    """Each loss term, summed over cells and averaged over the batch.

    Args:
        targets: (B, G, G, A, 7) from `boxes.encode_targets`.
        raw: (B, G, G, A, 15) training model output.
        params: the loss block.
        stride: pixels per grid cell (converts cell offsets to pixels for GIoU).
    Returns:
        {"obj", "box", "cls"} scalar tensors (already weighted) and "iou" (mean IoU of object slots).
    """
    raw = ops.cast(raw, "float32")  # a mixed-precision model's bfloat16 logits: the loss stays float32
    targets = ops.cast(targets, raw.dtype)
    is_obj = targets[..., 0]
    batch = ops.cast(ops.shape(raw)[0], raw.dtype)
    anchors = ops.convert_to_tensor(anchor_sizes(raw.shape[-2])[:, None]) / float(stride)  # (A, 1) cells

    offset = offset_from_logit(raw[..., 1:3], ops)
    log_size = ops.minimum(raw[..., 3:5], MAX_LOG_SIZE)
    coord_err = ops.sum(ops.square(offset - targets[..., 1:3]), -1) + ops.sum(
        ops.square(log_size - targets[..., 3:5]), -1
    )
    pred_box = ops.concatenate([offset, ops.exp(log_size) * anchors], -1)  # cell units, centre form
    true_box = ops.concatenate([targets[..., 1:3], ops.exp(targets[..., 3:5]) * anchors], -1)
    giou, iou = _giou(pred_box, true_box)
    box = ops.sum(is_obj * (params.lambda_coord * coord_err + params.lambda_iou * (1.0 - giou))) / batch

    if params.objectness == "heatmap":
        obj = _focal_heat(targets[..., 6], raw[..., 0]) / batch
    else:
        quality = ops.stop_gradient(ops.clip(iou, 0.0, 1.0))
        obj_target = is_obj * (1.0 - params.obj_iou + params.obj_iou * quality)
        bce = ops.binary_crossentropy(obj_target[..., None], raw[..., 0:1], from_logits=True)[..., 0]
        weight = is_obj + params.lambda_noobj * (1.0 - is_obj)
        obj = ops.sum(weight * bce) / batch

    labels = ops.cast(targets[..., 5], "int32")
    ce = ops.sparse_categorical_crossentropy(labels, raw[..., 5:], from_logits=True)
    cls = params.lambda_class * ops.sum(is_obj * ce) / batch

    mean_iou = ops.sum(is_obj * iou) / ops.maximum(ops.sum(is_obj), 1.0)
    return {"obj": obj, "box": box, "cls": cls, "iou": mean_iou}


class DetectionLoss(keras.losses.Loss):
    """Keras loss: obj + box + cls of `loss_components` (y_true = targets, y_pred = raw)."""

    def __init__(self, params: LossParams, stride: int, name: str = "detection_loss"):
        super().__init__(name=name, reduction="sum")
        self.params, self.stride = params, stride

    def call(self, y_true, y_pred):
        parts = loss_components(y_true, y_pred, self.params, self.stride)
        return parts["obj"] + parts["box"] + parts["cls"]


def component_metrics(params: LossParams, stride: int) -> list[keras.metrics.Metric]:
    """Keras metrics tracking each loss term and the mean IoU of object slots per epoch."""

    def term(key: str):
        def fn(y_true, y_pred):
            return loss_components(y_true, y_pred, params, stride)[key]

        fn.__name__ = f"{key}_loss" if key != "iou" else "box_iou"
        return keras.metrics.MeanMetricWrapper(fn, name=fn.__name__)

    return [term(k) for k in ("obj", "box", "cls", "iou")]
