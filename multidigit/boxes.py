"""Boxes, once for training, evaluation and export: converters, IoU, grid targets, decoding, NMS.

`postprocess` is the numpy reference of the post-processing the exported graph runs
(`multidigit.artifact`): score, threshold, class-aware NMS, the merge, the one-box-per-digit rule
(`one_box_per_digit`), which marks each kept box `shown` or not, then the fit of each box to the canvas's
ink (`fit_to_ink`); tests check the graph equals it.

Box format everywhere outside the grid is pixel `x, y, w, h` with `(x, y)` the top-left corner
(`constants.BOX_FORMAT`). On the grid a box is stored per cell and anchor slot as

    tx, ty  the centre's offset from the cell's corner, in cell units (-0.5, 1.5)  (2 * sigmoid - 0.5)
    tw, th  log(w / anchor), log(h / anchor), anchor a fixed size in pixels per slot

and the object belongs to the cell that holds its centre and to the slot whose anchor is nearest its size;
every cell also gets a centre heat (CenterNet): a Gaussian around each digit's centre, 1 at its centre cell;
with `neighbours`, also to the two cells beside it on the sides nearest the centre (YOLOv5's assignment),
whose offsets fall in (-0.5, 0) or (1, 1.5): three times the box supervision per digit.
Raw network output per slot (`RAW_CHANNELS`): [objectness logit, tx logit, ty logit, tw, th, 10 class
logits]. Decoded output per slot (`constants`-independent layout of the model contract):
[x, y, w, h, objectness probability, 10 class probabilities].
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

from multidigit.constants import CANVAS_SIZE, DIGIT_SIZE, NUM_CLASSES

RAW_CHANNELS = 5 + NUM_CLASSES  # objectness, tx, ty, tw, th, class logits
TARGET_CHANNELS = 7  # is_object, tx, ty, tw, th, class index, centre heat
# Centre heatmap (`loss.objectness: heatmap`): an elliptical Gaussian per digit with sd HEAT_ALPHA * side / 6
# (TTFNet's shape; CenterNet's radius rule gives similar sds for square boxes), 1 at the centre cell.
HEAT_ALPHA = 0.54
# Anchor sizes span roughly the digit sizes of the curriculum (scale 0.6-1.8 of a 28 px digit).
ANCHOR_RANGE = (16.0, 44.0)
# Log-size outputs are clipped before exp so a wild logit cannot overflow to inf in the decoded box.
MAX_LOG_SIZE = 4.0
# Offsets are decoded as OFFSET_GAIN * sigmoid - OFFSET_PAD, reaching half a cell beyond each side.
OFFSET_GAIN, OFFSET_PAD = 2.0, 0.5
# Class-aware NMS in one pass: each class's boxes move by label * this, further than any box reaches.
NMS_CLASS_OFFSET = 4.0 * CANVAS_SIZE


class Detections(TypedDict, total=False):
    boxes: np.ndarray  # float32 (M, 4) xywh pixels
    scores: np.ndarray  # float32 (M,)
    labels: np.ndarray  # int32 (M,)
    shown: np.ndarray  # bool (M,): what the page and the API list (the one-box-per-digit rule)


# ---------------------------------------------------------------- converters and IoU
def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) top-left x, y, w, h -> (..., 4) x1, y1, x2, y2."""
    boxes = np.asarray(boxes, dtype=np.float32)
    return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) x1, y1, x2, y2 -> (..., 4) top-left x, y, w, h."""
    boxes = np.asarray(boxes, dtype=np.float32)
    return np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xywh boxes.

    Args:
        a: (N, 4) xywh pixels.
        b: (M, 4) xywh pixels.
    Returns:
        (N, M) float32 IoU; 0 where a box has no area.
    """
    a, b = xywh_to_xyxy(a)[:, None, :], xywh_to_xyxy(b)[None, :, :]
    inter_wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


# ---------------------------------------------------------------- grid geometry and targets
def grid_size(stride: int) -> int:
    """Cells along one side of the canvas for a grid `stride` pixels per cell."""
    if CANVAS_SIZE % stride:
        raise ValueError(f"model.stride: {stride} does not divide the {CANVAS_SIZE} px canvas")
    return CANVAS_SIZE // stride


def anchor_sizes(boxes_per_cell: int) -> np.ndarray:
    """(A,) float32 anchor side in pixels per slot: DIGIT_SIZE alone, else geometric over ANCHOR_RANGE."""
    if boxes_per_cell == 1:
        return np.array([DIGIT_SIZE], dtype=np.float32)
    return np.geomspace(*ANCHOR_RANGE, boxes_per_cell).astype(np.float32)


def offset_from_logit(logit, ops):
    """Decoded centre offset in cell units from its logit (`ops`: keras.ops or numpy-like)."""
    return OFFSET_GAIN * ops.sigmoid(logit) - OFFSET_PAD


def _assignments(cx, cy, g: int, neighbours: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(row, col, in-grid mask) per responsible cell, neighbours first so the centre cells win ties."""
    col, row = np.clip(cx.astype(int), 0, g - 1), np.clip(cy.astype(int), 0, g - 1)
    found = []
    if neighbours:
        step_x = np.where(cx - col < 0.5, -1, 1)
        step_y = np.where(cy - row < 0.5, -1, 1)
        for r, c in ((row, col + step_x), (row + step_y, col)):
            found.append((r, c, (r >= 0) & (r < g) & (c >= 0) & (c < g)))
    found.append((row, col, np.ones_like(row, dtype=bool)))
    return found


def encode_targets(
    boxes: np.ndarray, labels: np.ndarray, stride: int, boxes_per_cell: int, neighbours: bool = False
) -> np.ndarray:
    """Grid targets for a batch of canvases.

    Args:
        boxes: (B, K, 4) float xywh pixels, padding rows anything.
        labels: (B, K) int class per box, -1 for padding.
        stride: pixels per grid cell.
        boxes_per_cell: anchor slots per cell.
        neighbours: also assign each object to the two cells beside its centre cell.
    Returns:
        (B, G, G, A, TARGET_CHANNELS) float32 [is_object, tx, ty, tw, th, class, heat]; zeros where empty
        (heat: `centre_heat`, the same in every slot of a cell). Two objects in one cell and slot keep the
        larger (drawn last); a centre cell beats a neighbour.
    """
    boxes, labels = np.asarray(boxes, np.float32), np.asarray(labels)
    g, anchors = grid_size(stride), anchor_sizes(boxes_per_cell)
    out = np.zeros((boxes.shape[0], g, g, boxes_per_cell, TARGET_CHANNELS), np.float32)
    b_idx, k_idx = np.nonzero(labels >= 0)
    box = boxes[b_idx, k_idx]
    w, h = np.maximum(box[:, 2], 1.0), np.maximum(box[:, 3], 1.0)
    order = np.argsort(w * h, kind="stable")  # small first, so a larger object wins a shared slot
    b_idx, k_idx, box, w, h = b_idx[order], k_idx[order], box[order], w[order], h[order]
    cx, cy = (box[:, 0] + w / 2) / stride, (box[:, 1] + h / 2) / stride
    slot = np.argmin(np.abs(np.log(np.sqrt(w * h)[:, None] / anchors[None, :])), axis=1)
    size = np.stack([np.log(w / anchors[slot]), np.log(h / anchors[slot])], axis=1)
    cls = labels[b_idx, k_idx].astype(np.float32)
    lo, hi = -OFFSET_PAD, OFFSET_GAIN - OFFSET_PAD
    for row, col, ok in _assignments(cx, cy, g, neighbours):
        tx, ty = np.clip(cx - col, lo, hi), np.clip(cy - row, lo, hi)
        values = np.stack([np.ones_like(w), tx, ty, size[:, 0], size[:, 1], cls], axis=1)
        out[b_idx[ok], row[ok], col[ok], slot[ok], :6] = values[ok]
    out[..., 6] = centre_heat(boxes.shape[0], b_idx, cx, cy, w / stride, h / stride, g)[..., None]
    return out


def centre_heat(batch: int, b_idx: np.ndarray, cx, cy, w, h, g: int) -> np.ndarray:
    """(B, G, G) float32 centre heatmap: per canvas the max over its digits of an elliptical Gaussian
    exp(-dx^2 / 2 sx^2 - dy^2 / 2 sy^2) at the cell centres, sx = HEAT_ALPHA * w / 6; 1 at each centre cell.

    Args:
        batch: canvases B. b_idx: (N,) canvas of each digit. cx, cy, w, h: (N,) centre and size in cells.
        g: cells a side.
    """
    heat = np.zeros((batch, g, g), np.float32)
    if not len(b_idx):
        return heat
    centres = np.arange(g, dtype=np.float32) + 0.5
    sx, sy = (np.maximum(HEAT_ALPHA * s / 6.0, 0.1)[:, None] for s in (w, h))
    gx = np.exp(-np.square(centres[None, :] - cx[:, None]) / (2 * sx * sx))  # (N, G) along x
    gy = np.exp(-np.square(centres[None, :] - cy[:, None]) / (2 * sy * sy))
    # max per canvas over its digits' (G, G) Gaussians: one reduceat over canvas-sorted digits, a tenth
    # of np.maximum.at's time (encode_targets runs per training batch)
    order = np.argsort(b_idx, kind="stable")
    canvases, starts = np.unique(b_idx[order], return_index=True)
    gauss = (gy[order, :, None] * gx[order, None, :]).astype(np.float32)
    heat[canvases] = np.maximum.reduceat(gauss, starts, axis=0)
    col, row = np.clip(cx.astype(int), 0, g - 1), np.clip(cy.astype(int), 0, g - 1)
    heat[b_idx, row, col] = 1.0
    return heat


def cell_offsets(stride: int, boxes_per_cell: int) -> np.ndarray:
    """(G, G, A, 2) float32 top-left pixel corner of every cell, repeated per slot (x, y)."""
    g = grid_size(stride)
    ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    corner = np.stack([xs, ys], axis=-1).astype(np.float32) * stride
    return np.repeat(corner[:, :, None, :], boxes_per_cell, axis=2)


def peak_objectness(objectness):
    """(B, G, G, A) objectness zeroed where a slot is below the best slot of its 3 x 3 cells (CenterNet's
    max-pool "NMS"): a digit keeps the one peak of its centre heat."""
    from keras import ops

    best = ops.max_pool(ops.max(objectness, axis=-1, keepdims=True), 3, strides=1, padding="same")
    return ops.where(objectness >= best, objectness, 0.0)


def decode_raw(raw, stride: int, boxes_per_cell: int, peaks: bool = False):
    """Raw grid output -> decoded boxes and probabilities (keras.ops, so it runs in the model and in numpy).

    Args:
        raw: (B, G, G, A, RAW_CHANNELS) logits as the training model outputs them.
        stride: pixels per grid cell.
        boxes_per_cell: anchor slots per cell.
        peaks: keep objectness only at local maxima (`peak_objectness`, `nms.peaks`).
    Returns:
        (B, G*G*A, 15) tensor [x, y, w, h pixels top-left, objectness prob, 10 class probs].
    """
    from keras import ops

    g = grid_size(stride)
    n = g * g * boxes_per_cell
    # Sliced as (B, N, C): TF.js wasm cuts the last axis of the 5-D grid ~20x slower (1.4 ms a slice).
    flat = ops.reshape(raw, (-1, n, raw.shape[-1]))
    offsets = ops.convert_to_tensor(cell_offsets(stride, boxes_per_cell).reshape(n, 2))
    anchors = ops.convert_to_tensor(np.tile(anchor_sizes(boxes_per_cell), g * g)[:, None])  # (N, 1)
    centre = offsets + offset_from_logit(flat[..., 1:3], ops) * float(stride)
    size = ops.exp(ops.minimum(flat[..., 3:5], MAX_LOG_SIZE)) * anchors
    objectness = ops.sigmoid(flat[..., 0])
    if peaks:
        grid = ops.reshape(objectness, (-1, g, g, boxes_per_cell))
        objectness = ops.reshape(peak_objectness(grid), (-1, n))
    classes = ops.softmax(flat[..., 5:], axis=-1)
    return ops.concatenate([centre - size / 2, size, objectness[..., None], classes], axis=-1)


# ---------------------------------------------------------------- post-processing
def _nms_keep(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> list[int]:
    """Greedy NMS over xywh boxes; indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best, order = order[0], order[1:]
        keep.append(int(best))
        if order.size:
            order = order[iou_matrix(boxes[best : best + 1], boxes[order])[0] <= iou_threshold]
    return keep


def empty_detections() -> Detections:
    return Detections(
        boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros(0, np.float32),
        labels=np.zeros(0, np.int32),
        shown=np.zeros(0, bool),
    )


def shown_only(det: Detections) -> Detections:
    """The detections the page and the API list: those the one-box-per-digit rule left shown."""
    keep = np.asarray(det["shown"], bool)
    return Detections(
        boxes=det["boxes"][keep], scores=det["scores"][keep], labels=det["labels"][keep], shown=keep[keep]
    )


def containment_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) float32 intersection of a[i] and b[j] over the area of a[i] (1 = a[i] lies inside b[j])."""
    a, b = xywh_to_xyxy(a)[:, None, :], xywh_to_xyxy(b)[None, :, :]
    inter_wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    area = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    return np.where(area > 0, inter / np.maximum(area, 1e-9), 0.0).astype(np.float32)


def one_box_per_digit(
    boxes: np.ndarray,
    labels: np.ndarray,
    agnostic_iou: float,
    agnostic_containment: float,
    containment_any_class: bool = False,
) -> np.ndarray:
    """Which kept boxes are shown: greedy in score order, a box is hidden when it overlaps a better-scored
    *shown* box of another class by IoU > `agnostic_iou` or lies inside it by more than
    `agnostic_containment` (intersection over its own area). A value of 1 turns that test off.

    Args:
        boxes: (K, 4) xywh, best score first (as NMS returns them).
        labels: (K,) int classes.
        containment_any_class: the containment test also hides a box inside a better one of its own
            class (NMS judges same-class pairs by IoU, which for nested boxes is only their area ratio).
    Returns:
        (K,) bool shown.
    """
    iou, inside = iou_matrix(boxes, boxes), containment_matrix(boxes, boxes)
    other = labels[:, None] != labels[None, :]
    # conflict[i, j]: box i loses to box j if j is better scored and shown
    nested = (inside > agnostic_containment) & (other | containment_any_class)
    conflict = ((iou > agnostic_iou) & other) | nested
    shown = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        shown[i] = not (conflict[i, :i] & shown[:i]).any()
    return shown


def merge_boxes(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, keep: np.ndarray, iou_threshold: float
):
    """Each kept box replaced by the score-weighted mean of the same-class candidates overlapping it by
    more than `iou_threshold` (itself included): the boxes NMS suppressed vote on its edges.

    Args:
        boxes, scores, labels: (S, 4) xywh, (S,), (S,) candidates above the score threshold.
        keep: indices into them that NMS kept.
    Returns:
        (len(keep), 4) float32 merged boxes.
    """
    iou = iou_matrix(boxes[keep], boxes)
    weight = ((iou > iou_threshold) & (labels[keep, None] == labels[None, :])) * scores[None, :]
    return ((weight @ boxes) / weight.sum(axis=1, keepdims=True)).astype(np.float32)


def _round_half_up(v: float) -> int:
    """floor(v + 0.5): the rounding the exported graph uses (ties go up in numpy, TF and TF.js alike)."""
    return int(np.floor(np.float32(v) + np.float32(0.5)))


def _fit_edges(profile: np.ndarray, lo: int, hi: int, shrink: int, grow: int) -> tuple[int, int]:
    """One axis of `fit_to_ink`: new (lo, hi) lines (hi exclusive) from a (S,) bool ink-per-line profile.

    An edge line without ink moves inward to the first line with ink, at most `shrink` lines; an edge
    line with ink moves outward while the next line has ink too, at most `grow` lines."""
    s = len(profile)
    lo, hi = min(max(lo, 0), s - 1), min(max(hi, 1), s)
    if profile[lo]:
        new_lo = lo
        while new_lo - 1 >= max(lo - grow, 0) and profile[new_lo - 1]:
            new_lo -= 1
    else:
        inked = np.flatnonzero(profile[lo + 1 : lo + shrink + 1])
        new_lo = lo + 1 + int(inked[0]) if inked.size else lo
    last = hi - 1
    if profile[last]:
        new_hi = hi
        while new_hi <= min(last + grow, s - 1) and profile[new_hi]:
            new_hi += 1
    else:
        start = max(last - shrink, 0)
        inked = np.flatnonzero(profile[start:last])
        new_hi = start + int(inked[-1]) + 1 if inked.size else hi
    return new_lo, new_hi


def fit_to_ink(image: np.ndarray, boxes: np.ndarray, shrink: float, grow: int) -> np.ndarray:
    """Each box's edges moved onto the ink of the canvas: the numpy reference of the graph's fit.

    A digit's true box is tight around its own non-zero pixels, so an edge the detector placed on an
    empty column is moved inward to the first column with ink (at most `shrink` x the box's side,
    rounded, at least 1 px), and an edge on ink outward while ink continues (at most `grow` px: further,
    it runs into an overlapping neighbour). Columns are read over the box's rows and rows over its
    columns, both as predicted (rounded half up); an edge with no ink within reach stays on its rounded
    line.

    Args:
        image: (H, W) canvas, uint8 or float; a pixel > 0 is ink.
        boxes: (K, 4) xywh pixels.
        shrink: the share of its side an edge may move inward; grow: the pixels it may move outward.
    Returns:
        (K, 4) float32 whole-pixel xywh; a box that would lose all its area keeps its input value.
    """
    ink = np.asarray(image) > 0
    lines = np.arange(ink.shape[0])
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    for k, (x, y, w, h) in enumerate(out.copy()):
        c0, c1 = _round_half_up(x), _round_half_up(x + w)
        r0, r1 = _round_half_up(y), _round_half_up(y + h)
        rows = (lines >= r0) & (lines < max(r1, r0 + 1))
        cols = (lines >= c0) & (lines < max(c1, c0 + 1))
        x0, x1 = _fit_edges(ink[rows].any(0), c0, c1, max(_round_half_up(shrink * w), 1), grow)
        y0, y1 = _fit_edges(ink[:, cols].any(1), r0, r1, max(_round_half_up(shrink * h), 1), grow)
        if x1 > x0 and y1 > y0:
            out[k] = (x0, y0, x1 - x0, y1 - y0)
    return out


def postprocess(
    decoded: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    merge: bool = False,
    agnostic_iou: float = 1.0,
    agnostic_containment: float = 1.0,
    images: np.ndarray | None = None,
    ink_shrink: float = 0.0,
    ink_grow: int = 0,
    containment_any_class: bool = False,
) -> list[Detections]:
    """Scores, thresholding, class-aware NMS (optionally merging what it suppresses), the
    one-box-per-digit rule and the fit to ink, for a batch: the numpy reference of `multidigit.artifact`'s
    graph.

    Args:
        decoded: (B, N, 15) [x, y, w, h, objectness, 10 class probs] as `inference_model` returns.
        score_threshold: keep slots with objectness * max class prob >= this.
        iou_threshold: suppress a same-class box overlapping a better one by more than this.
        max_detections: keep at most this many per canvas, best first.
        merge: replace each kept box by `merge_boxes`' weighted mean (scores and labels unchanged).
        agnostic_iou, agnostic_containment, containment_any_class: `one_box_per_digit`'s rule on the final
            boxes (a limit of 1 = that test off).
        images: (B, H, W) the canvases, needed when `ink_shrink` > 0 (fit each kept box to their ink).
        ink_shrink, ink_grow: `fit_to_ink`'s reach, after the one-box rule (which sees the boxes as
            predicted, so the fit moves edges and never what is listed); shrink 0 = off.
    Returns:
        One `Detections` per canvas, sorted by descending score; `shown` marks what a user sees.
    """
    decoded = np.asarray(decoded, dtype=np.float32)
    if decoded.ndim != 3 or decoded.shape[-1] != 5 + NUM_CLASSES:
        raise ValueError(f"decoded: shape {decoded.shape}, need (B, N, {5 + NUM_CLASSES})")
    labels_all = decoded[..., 5:].argmax(-1).astype(np.int32)
    scores_all = decoded[..., 4] * decoded[..., 5:].max(-1)
    if ink_shrink > 0 and (images is None or len(images) != len(decoded)):
        raise ValueError(
            f"images: fitting boxes to ink needs the {len(decoded)} canvases, got {images!r:.40}"
        )
    results = []
    for b, (boxes, scores, labels) in enumerate(zip(decoded[..., :4], scores_all, labels_all, strict=True)):
        sel = np.nonzero(scores >= score_threshold)[0]
        if sel.size == 0:
            results.append(empty_detections())
            continue
        # Class-aware NMS in one pass: shift each class to its own far-away region of the plane.
        shifted = boxes[sel].copy()
        shifted[:, :2] += labels[sel, None].astype(np.float32) * NMS_CLASS_OFFSET
        local = np.asarray(_nms_keep(shifted, scores[sel], iou_threshold, max_detections), dtype=int)
        keep = sel[local]
        kept_boxes = (
            merge_boxes(boxes[sel], scores[sel], labels[sel], local, iou_threshold) if merge else boxes[keep]
        )
        shown = one_box_per_digit(
            kept_boxes, labels[keep], agnostic_iou, agnostic_containment, containment_any_class
        )
        if ink_shrink > 0:
            kept_boxes = fit_to_ink(images[b], kept_boxes, ink_shrink, ink_grow)
        results.append(
            Detections(
                boxes=kept_boxes.astype(np.float32),
                scores=scores[keep].astype(np.float32),
                labels=labels[keep].astype(np.int32),
                shown=shown,
            )
        )
    return results
