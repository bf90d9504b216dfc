"""Reading a drawing at the size the detector reads best: the page's second look.

On the drawn split the detector reads digits 30-44 canvas px tall best (test sequence accuracy 0.947,
against 0.873 for 15-29 px and 0.884 for 45-60 px), and people draw at every size. The page has the
strokes, so it can redraw them at any scale: when the digits it listed are taller or shorter than
`band`, it scales the whole drawing about its ink's centre so that their median height becomes `height`
(as far as the canvas allows), reads that, and maps the boxes back. README "The page and the service"
gives the measurement (`export.read_height`).

Everything here is plain float64 arithmetic in a fixed order that web/js/rescale.js repeats, so the page
and Python scale the same strokes to the same points and the same bytes (tests/test_page_e2e.py). The
scale is rounded to `STEP`, so a height that differs in the 5th digit between the page's wasm graph and
TensorFlow gives the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from multidigit import strokes
from multidigit.boxes import Detections
from multidigit.constants import CANVAS_SIZE

STEP = 1 / 32  # scales are multiples of this
MIN_CHANGE = 0.1  # a plan scales by at least this much, or the first reading stands
MARGIN = 2.0  # canvas px kept free of ink at the edges, beyond the read brush's reach


@dataclass(frozen=True)
class Rescale:
    """Points p (buffer px) move to (p - centre) * scale + to."""

    scale: float
    centre: tuple[float, float]
    to: tuple[float, float]


def median(values: Sequence[float]) -> float:
    """The median in float64, computed as web/js/rescale.js does (mean of the two middles when even)."""
    v = sorted(float(x) for x in values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def plan_rescale(
    lines: Sequence[np.ndarray],
    heights: Sequence[float],
    height: float,
    band: tuple[float, float],
    read_brush: float,
    side: int = 400,
) -> Rescale | None:
    """The scale that brings the listed digits' median height to `height`, or None to keep the first reading.

    Args:
        lines: the drawing's polylines (K, 2) (x, y) in buffer pixels (side x side).
        heights: the heights (canvas px) of the boxes the first reading listed, found on the strokes at
            `read_brush`.
        height: the median digit height to read at; band: [low, high], heights read as they are.
        read_brush: the brush width (buffer px) both readings render the strokes at.
    Returns:
        The plan, or None: nothing listed, a median inside the band, no strokes, or a scale within
        MIN_CHANGE of 1 once the canvas has bounded it.
    """
    if not len(heights) or not len(lines):
        return None
    m = median(heights)
    if band[0] <= m <= band[1] or m <= 0:
        return None
    pts = np.concatenate([np.asarray(line, np.float64).reshape(-1, 2) for line in lines])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    factor = side / CANVAS_SIZE
    pad = MARGIN * factor + read_brush / 2  # the read brush's ink reaches read_brush / 2 past a point
    room = side / 2 - pad  # the largest half-extent that fits
    half = max(float(hi[0] - lo[0]), float(hi[1] - lo[1])) / 2
    scale = height / m
    if half * scale > room:
        scale = room / half
    scale = math.floor(scale / STEP) * STEP  # floor: a rounded scale still fits
    if abs(scale - 1) < MIN_CHANGE or scale <= 0:
        return None
    centre = ((float(lo[0]) + float(hi[0])) / 2, (float(lo[1]) + float(hi[1])) / 2)
    to = tuple(
        min(max(c, pad + (b - a) / 2 * scale), side - pad - (b - a) / 2 * scale)
        for c, a, b in zip(centre, lo.tolist(), hi.tolist(), strict=True)
    )
    return Rescale(scale, centre, to)


def scaled_lines(lines: Sequence[np.ndarray], plan: Rescale) -> list[np.ndarray]:
    """The polylines moved by the plan (float64, buffer px)."""
    centre, to = np.array(plan.centre), np.array(plan.to)
    return [(np.asarray(line, np.float64) - centre) * plan.scale + to for line in lines]


def boxes_back(boxes: np.ndarray, plan: Rescale, read_brush: float, side: int = 400) -> np.ndarray:
    """Boxes (K, 4) xywh canvas px found on the scaled drawing, in the drawing's own canvas px, each edge
    then moved out by what the read brush's ink lost in the scaling: a box tight on strokes read at
    `read_brush` stays tight on them at that width. Clipped to the canvas."""
    factor = side / CANVAS_SIZE
    out = np.array(boxes, np.float64).reshape(-1, 4)
    ink = read_brush / (2 * factor)  # canvas px of ink beyond the points
    grow = ink - ink / plan.scale
    for box in out:
        left = ((box[0] * factor - plan.to[0]) / plan.scale + plan.centre[0]) / factor - grow
        top = ((box[1] * factor - plan.to[1]) / plan.scale + plan.centre[1]) / factor - grow
        right, bottom = left + box[2] / plan.scale + 2 * grow, top + box[3] / plan.scale + 2 * grow
        left, top = max(left, 0.0), max(top, 0.0)
        right, bottom = min(right, float(CANVAS_SIZE)), min(bottom, float(CANVAS_SIZE))
        box[:] = left, top, max(right - left, 0.0), max(bottom - top, 0.0)
    return out


def second_look(read_height: dict | None) -> tuple[float, tuple[float, float]] | None:
    """A manifest's `input.read_height` ({"height", "band"}, or None) as `read_drawings` takes it."""
    return None if read_height is None else (read_height["height"], tuple(read_height["band"]))


def read_drawings(
    detect: Callable[[np.ndarray], list[Detections]],
    drawings: Sequence[tuple[Sequence[np.ndarray], Sequence[float]]],
    read_brush: float,
    read_height: tuple[float, tuple[float, float]] | None,
    side: int = 400,
) -> tuple[np.ndarray, list[Detections], list[Rescale | None]]:
    """What the page lists for each drawing, in Python: read at `read_brush`, read again rescaled where
    `read_height` = (height, band) asks (None: never), boxes moved to the widths drawn.

    Args:
        detect: uint8 (B, 100, 100) canvases -> one `Detections` each, at the page's threshold.
        drawings: (polylines in buffer px, one width per polyline) per drawing.
    Returns:
        (the first reading's canvases, the detections with boxes in the drawing's canvas px at the widths
        drawn, the plan per drawing).
    """

    def render(lines: Sequence[np.ndarray]) -> np.ndarray:
        return strokes.reduce_drawing(strokes.render_strokes(lines, read_brush, side))

    images = np.stack([render(lines) for lines, _ in drawings])
    found = detect(images)
    plans: list[Rescale | None] = [None] * len(drawings)
    if read_height is not None:
        for i, ((lines, _), d) in enumerate(zip(drawings, found, strict=True)):
            listed = np.asarray(d.get("shown", np.ones(len(d["boxes"]), bool)), bool)  # unmarked: all
            heights = np.asarray(d["boxes"], np.float64).reshape(-1, 4)[listed, 3].tolist()
            plans[i] = plan_rescale(lines, heights, *read_height, read_brush, side)
    todo = [i for i, p in enumerate(plans) if p is not None]
    if todo:
        again = detect(np.stack([render(scaled_lines(drawings[i][0], plans[i])) for i in todo]))
        for i, d in zip(todo, again, strict=True):
            found[i] = {**d, "boxes": boxes_back(d["boxes"], plans[i], read_brush, side).astype(np.float32)}
    for (lines, widths), d in zip(drawings, found, strict=True):
        d["boxes"] = strokes.widen_boxes(d["boxes"], lines, widths, read_brush).astype(np.float32)
    return images, found, plans
