"""The detector artifact: the whole detector, post-processing included, as one TensorFlow graph.

    image (1, 100, 100, 1) float32 in [0, 1], score_threshold () float32
      -> inference_model                    (N, 15) decoded [x, y, w, h, objectness, 10 class probs]
      -> score = objectness * max class prob, label = argmax class, keep score >= threshold
      -> class-aware NMS (NonMaxSuppressionV5 on boxes shifted by label * NMS_CLASS_OFFSET)
      -> merge: a kept box becomes the score-weighted mean of its same-class candidates (IoU > iou)
      -> one box per digit: a box overlapping a better-scored shown box of another class is not shown
      -> fit to ink: each edge moves onto the canvas's ink (`boxes.fit_to_ink`; nms.ink_shrink 0 = off)
      -> {"boxes" (K, 4) xywh px, "scores" (K,), "labels" (K,) int32, "shown" (K,) int32, "count" () int32}

K <= max_detections, best score first. Export saves this module as the version's SavedModel and converts
it to TF.js, so Python evaluation, /api/detect, the export parity check and the page run one graph;
`multidigit.boxes.postprocess` is its numpy reference. Every op converts to TF.js (the one-box rule is a
loop unrolled to max_detections steps, so the graph has no control flow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from multidigit import console, quiet
from multidigit.boxes import NMS_CLASS_OFFSET, Detections, shown_only
from multidigit.constants import CANVAS_SIZE
from multidigit.params import NmsParams
from multidigit.preprocess import to_model_input

PostprocessParams = NmsParams  # the params block the graph bakes in (all but the score threshold)
SAVED_MODEL_DIR = "saved_model"  # inside a version folder
INPUTS = ("image", "score_threshold")
OUTPUTS = ("boxes", "scores", "labels", "shown", "count")
NMS_OP = "NonMaxSuppressionV5"
__all__ = ["PostprocessParams", "build_detector_fn", "detect_canvases", "load_artifact", "shown_only"]


def _xyxy(tf, boxes):
    """(K, 4) xywh -> x1, y1, x2, y2 as four (K,) tensors."""
    x, y, w, h = tf.unstack(boxes, axis=1)
    return x, y, x + w, y + h


def _column(tf, col, row):
    """(K, M) float32 copies of a (K,) column, one per entry of the (M,) `row`.

    By matmul with ones, which is exact (one product by 1 per element) and ~10 us in TF.js wasm, where a
    comparison or min / max between broadcast shapes costs ~10x the same op on equal shapes (~0.4 ms at
    9 x 625) and tf.where against a scalar adds a Tile as slow."""
    return tf.matmul(tf.expand_dims(col, 1), tf.ones_like(tf.expand_dims(row, 0)))


def _spread(tf, col, row):
    """(K, M) float32 copies of a (K,) column and of an (M,) row (see `_column`)."""
    return _column(tf, col, row), tf.matmul(tf.ones_like(tf.expand_dims(col, 1)), tf.expand_dims(row, 0))


def _mask(tf, condition):
    """A bool tensor as float32 0 / 1: `x * mask` is `tf.where(condition, x, 0)` for finite x."""
    return tf.cast(condition, tf.float32)


def _same_class(tf, a, b):
    """(K, M) 1.0 where int labels a[i] == b[j]. By spread float labels, not one-hot rows: TF.js wasm's
    float32 OneHot writes the integer 1's bits (1.4e-45), so their product read every pair as different."""
    la, lb = _spread(tf, tf.cast(a, tf.float32), tf.cast(b, tf.float32))
    return _mask(tf, tf.equal(la - lb, 0.0))


def _overlaps(tf, a, b):
    """(K, M) IoU and intersection over the area of a[i], of xywh boxes (as boxes.iou_matrix)."""
    (ax1, bx1), (ay1, by1), (ax2, bx2), (ay2, by2) = (
        _spread(tf, p, q) for p, q in zip(_xyxy(tf, a), _xyxy(tf, b), strict=True)
    )
    inter = tf.nn.relu(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1))
    inter *= tf.nn.relu(tf.minimum(ay2, by2) - tf.maximum(ay1, by1))
    area_a, area_b = (ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1)
    union = area_a + area_b - inter
    return _ratio(tf, inter, union), _ratio(tf, inter, area_a)


def _ratio(tf, num, den):
    """num / den where den > 0, else 0. The masked-out quotients are num / 1 (finite, so times 0 is 0): no
    tiny epsilon, which float16 weight quantization would round to 0 (0 / 0 = NaN survives a mask)."""
    positive = _mask(tf, den > 0)
    return num / (den + (1.0 - positive)) * positive


def _class_aware_nms(tf, boxes, scores, labels, valid, post: NmsParams):
    """Indices kept by one NMS pass over boxes shifted into a far-away region per class."""
    shift = tf.cast(labels, tf.float32) * NMS_CLASS_OFFSET
    x, y, w, h = tf.unstack(boxes, axis=1)
    x1, y1 = x + shift, y + shift
    corners = tf.stack([y1, x1, y1 + h, x1 + w], axis=1)  # [y1, x1, y2, x2] as tf.image wants
    # TF's NMS keeps scores strictly above its threshold; below-threshold slots get -1, so a -0.5
    # floor keeps exactly the slots with score >= the input threshold (numpy's rule).
    on = _mask(tf, valid)
    masked = scores * on + (on - 1.0)  # -1 where invalid, without tf.where's Tile
    keep, _ = tf.image.non_max_suppression_with_scores(
        corners, masked, post.max_detections, iou_threshold=post.iou_threshold, score_threshold=-0.5
    )
    return keep


def _merge(tf, boxes, scores, labels, valid, keep, iou_threshold: float):
    """(K, 4) each kept box as the score-weighted mean of same-class candidates with IoU > threshold."""
    iou, _ = _overlaps(tf, tf.gather(boxes, keep), boxes)
    vote = _mask(tf, iou > iou_threshold) * _same_class(tf, tf.gather(labels, keep), labels)
    weight = vote * tf.expand_dims(scores * _mask(tf, valid), 0)
    return tf.matmul(weight, boxes) / tf.reduce_sum(weight, axis=1, keepdims=True)


def _round_half_up(tf, v):
    return tf.floor(v + 0.5)


def _fit_low_edges(tf, idx, profile, lo, shrink, grow: int):
    """(E,) new low edges of (E, S) 0 / 1 ink-per-line profiles, as boxes._fit_edges moves `lo` (a high
    edge is the low edge of the reversed profile); lo, shrink (E,) and idx (S,) line numbers. Whole numbers
    in float32 (exact below 2**24), masked maxima for TF.js wasm's fast paths."""
    # far: "no such line" for the masked min / max below; 2**10, as float16 weight quantization keeps it
    s, far = profile.shape[1], float(1 << 10)
    lo = tf.clip_by_value(lo, 0.0, s - 1.0)
    edge, line = _spread(tf, lo, idx)
    on_ink = tf.reduce_max(profile * _mask(tf, tf.equal(line - edge, 0.0)), axis=1) > 0.5
    # an edge on ink may grow over the inked lines just outside it: back to the last empty one, within grow
    outside = (1.0 - profile) * _mask(tf, line - edge >= -grow) * _mask(tf, line - edge < 0.0)
    gap = tf.reduce_max(outside * (line + far), axis=1) - far
    start = tf.where(on_ink, tf.maximum(lo - grow, gap + 1.0), lo)
    # then the first inked line from there up to shrink lines inward, else the edge stays
    begin, end = _column(tf, start, idx), _column(tf, lo + shrink, idx)
    window = profile * _mask(tf, line - begin >= 0.0) * _mask(tf, line - end <= 0.0)
    first = far - tf.reduce_max(window * (far - line), axis=1)
    return tf.where(first >= far, lo, first)


def _fit_to_ink(tf, image, boxes, post: NmsParams):
    """(K, 4) xywh boxes fitted to the ink of the (S, S) canvas, as boxes.fit_to_ink.

    Every step runs on all edges at once (few, larger ops: the page's wasm backend pays per op)."""
    ink = tf.cast(image > 0.0, tf.float32)
    s = ink.shape[0]
    idx = tf.range(s, dtype=tf.float32)
    x, y, w, h = tf.unstack(boxes, axis=1)
    c0, r0, c1, r1 = (_round_half_up(tf, v) for v in (x, y, x + w, y + h))
    lo, hi = tf.concat([c0, r0], 0), tf.concat([c1, r1], 0)  # (2K,) the columns' edges, then the rows'
    # (2K, S) any ink per column over the box's rows, then per row over its columns (exact 0/1 sums)
    first, last = tf.concat([r0, c0], 0), tf.concat([r1, c1], 0)
    start, line = _spread(tf, first, idx)
    end = _column(tf, tf.maximum(last, first + 1), idx)
    band = tf.reshape(_mask(tf, line - start >= 0.0) * _mask(tf, line - end < 0.0), (2, -1, s))
    counts = tf.reshape(tf.matmul(band, tf.stack([ink, tf.transpose(ink)])), (-1, s))
    # reversed as floats: TF.js wasm's Reverse of a bool tensor fails ("memory access out of bounds")
    profile = _mask(tf, tf.concat([counts, tf.reverse(counts, axis=[1])], 0) > 0.5)
    shrink = tf.maximum(_round_half_up(tf, post.ink_shrink * tf.concat([w, h], 0)), 1.0)
    edges = _fit_low_edges(
        tf, idx, profile,
        tf.concat([lo, s - tf.clip_by_value(hi, 1.0, s)], 0), tf.concat([shrink, shrink], 0), post.ink_grow,
    )  # fmt: skip
    new_lo, new_hi = tf.split(edges, 2)
    new_hi = s - new_hi
    (x0, y0), (x1, y1) = tf.split(new_lo, 2), tf.split(new_hi, 2)
    keep = tf.expand_dims(_mask(tf, tf.logical_and(x1 > x0, y1 > y0)), 1)
    # both terms exact (a product by 1 or 0 of a finite number): the fitted box, else the box as it was
    return keep * tf.stack([x0, y0, x1 - x0, y1 - y0], axis=1) + (1.0 - keep) * boxes


def _one_box_per_digit(tf, boxes, labels, post: NmsParams):
    """(K,) int32 shown, greedy in score order as boxes.one_box_per_digit, unrolled to max_detections."""
    k, limit = tf.shape(labels)[0], post.max_detections
    iou, inside = _overlaps(tf, boxes, boxes)
    other = 1.0 - _same_class(tf, labels, labels)
    nested = _mask(tf, inside > post.agnostic_containment)
    nested = nested if post.containment_any_class else nested * other
    hit = tf.maximum(_mask(tf, iou > post.agnostic_iou) * other, nested)
    # conflict[i, j] = 1: box i is hidden if box j (better scored, j < i) is shown
    rank = tf.cast(tf.range(k), tf.float32)
    rank_i, rank_j = _spread(tf, rank, rank)
    conflict = hit * _mask(tf, rank_j - rank_i < 0.0)
    conflict = tf.reshape(tf.pad(conflict, [[0, limit - k], [0, limit - k]]), (limit, limit))
    rows, eye = tf.unstack(conflict, axis=0), np.eye(limit, dtype=np.float32)
    shown = tf.ones((limit,))
    for i in range(1, limit):
        # box i is still shown here, so subtracting 1 at i when a shown earlier box conflicts hides it
        shown = shown - eye[i] * tf.reduce_max(rows[i] * shown)
    return tf.cast(shown[:k], tf.int32)


def _postprocess(tf, decoded, image, score_threshold, post: NmsParams) -> dict[str, Any]:
    """(N, 15) decoded slots of one (S, S) canvas -> the output dict (see the module docstring)."""
    boxes, probs = decoded[:, :4], decoded[:, 5:]
    labels = tf.argmax(probs, axis=-1, output_type=tf.int32)
    scores = decoded[:, 4] * tf.reduce_max(probs, axis=-1)
    valid = scores >= score_threshold
    keep = _class_aware_nms(tf, boxes, scores, labels, valid, post)
    kept = _merge(tf, boxes, scores, labels, valid, keep, post.iou_threshold) if post.merge else None
    kept = tf.gather(boxes, keep) if kept is None else kept
    kept_labels = tf.gather(labels, keep)
    shown = _one_box_per_digit(tf, kept, kept_labels, post)
    kept = _fit_to_ink(tf, image, kept, post) if post.ink_shrink > 0 else kept
    return {
        "boxes": tf.identity(kept, name="boxes"),
        "scores": tf.gather(scores, keep, name="scores"),
        "labels": tf.identity(kept_labels, name="labels"),
        "shown": tf.identity(shown, name="shown"),
        "count": tf.reduce_sum(shown, name="count"),
    }


def build_detector_fn(detector: Any, post: PostprocessParams) -> Any:
    """The whole detector as a `tf.Module` with one traced `detect(image, score_threshold)`.

    Args:
        detector: the Keras training detector (B, 100, 100, 1) -> (B, G, G, A, 15) raw logits.
        post: the nms block (iou_threshold, max_detections, merge, the one-box rule's and the ink fit's
            limits);
            the score threshold is an input, so the page's slider and evaluation's floor share the graph.
    Returns:
        A tf.Module; `module.detect(image (1, 100, 100, 1) float32, score_threshold () float32)` returns
        the dict of the module docstring. `module.post` holds the params it was built with.
    """
    import tensorflow as tf

    from multidigit.model import inference_model

    model = inference_model(detector, post.peaks)

    class DetectorModule(tf.Module):
        def __init__(self):
            super().__init__(name="multidigit_detector")
            self.model, self.post = model, post

        @tf.function(
            input_signature=[
                tf.TensorSpec((1, CANVAS_SIZE, CANVAS_SIZE, 1), tf.float32, name="image"),
                tf.TensorSpec((), tf.float32, name="score_threshold"),
            ]
        )
        def detect(self, image, score_threshold):
            decoded = self.model(image, training=False)[0]  # (N, 15)
            return _postprocess(tf, decoded, image[0, :, :, 0], score_threshold, self.post)

    return DetectorModule()


def save_artifact(module: Any, out_dir: Path) -> Path:
    """Write `module` as a SavedModel whose serving_default signature is `detect`; returns `out_dir`."""
    import tensorflow as tf

    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.detect})
    return Path(out_dir)


def load_artifact(version_dir: Path) -> Any:
    """The SavedModel of an exported version (`<version>/saved_model/`), with the same `.detect`, run once.

    Raises:
        FileNotFoundError: the version has no SavedModel.
    """
    import tensorflow as tf

    path = Path(version_dir) / SAVED_MODEL_DIR
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(f"artifact: no SavedModel at {path}")
    model = tf.saved_model.load(str(path))
    # TensorFlow prints an error-level line at a process's first boolean op ("oneDNN supports DT_BOOL only
    # on platforms with AVX-512"; quiet.NOISE): run the graph once here, filtered, so no caller's output
    # carries it and the first real call finds the kernels warm.
    with quiet.filtered_stderr():
        model.detect(tf.zeros((1, CANVAS_SIZE, CANVAS_SIZE, 1)), tf.constant(0.5))
    return model


def as_detections(out: dict[str, Any]) -> Detections:
    """The output dict of one `detect` call (tensors or arrays) as numpy `Detections`."""
    return Detections(
        boxes=np.asarray(out["boxes"], np.float32).reshape(-1, 4),
        scores=np.asarray(out["scores"], np.float32),
        labels=np.asarray(out["labels"], np.int32),
        shown=np.asarray(out["shown"]).astype(bool),
    )


def detect_canvases(fn: Any, images_uint8: np.ndarray, score_threshold: float) -> list[Detections]:
    """Run the artifact on canvases, one traced call each.

    Args:
        fn: a `build_detector_fn` module or a `load_artifact` SavedModel (anything with `.detect`).
        images_uint8: uint8 (B, 100, 100) canvases.
        score_threshold: keep scores >= this (the operating point, or a low floor for COCO mAP).
    Returns:
        One `Detections` per canvas, best score first, with `shown`.
    """
    import tensorflow as tf

    x = to_model_input(images_uint8)
    threshold = tf.constant(score_threshold, tf.float32)
    indices = console.progress(range(len(x)), "detect", unit="canvas")
    return [as_detections(fn.detect(tf.constant(x[i : i + 1]), threshold)) for i in indices]
