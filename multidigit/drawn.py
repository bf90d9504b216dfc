"""The drawn split: MNIST test digits re-stroked and laid out the way people write on the page.

Per canvas: 1-6 digits (`generate.drawn.digits`) in a row, or two rows, on a slightly slanted baseline
with small gaps, each digit's strokes (multidigit.strokes) scaled to a height in `generate.drawn.height`
canvas pixels, drawn with ONE integer brush width (the page's slider; triangular law
`generate.drawn.brush`), rendered on the page's 400 x 400 buffer and reduced by the page's reduction, so
replaying the stored strokes in the page gives the same canvas. Boxes are tight around each digit's own
rendered pixels; digits are stored in reading order (rows top to bottom, left to right).

`make_drawn` returns the arrays multidigit/canvas.py writes into a shard: the usual images, boxes,
labels, plus `brush` (N,), `stroke_points` (P, 2) float64 buffer pixels, `stroke_offsets` (S + 1,),
`canvas_strokes` (N + 1,), `stroke_digit` (S,) the digit slot of each stroke, and `source` (N, K) the
MNIST test index of each digit (-1 padding).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from multidigit import augment, stroke_cache, strokes
from multidigit.constants import CANVAS_SIZE
from multidigit.params import DrawnParams

ROW_PITCH = 1.35  # baseline-to-baseline distance of two rows, in digit heights
SIZE_JITTER = 0.1  # each digit's height times U(1 - j, 1 + j)
DROP_JITTER = 0.05  # each digit's baseline moves by N(0, j) digit heights
FLAG_LENGTH = (0.2, 0.4)  # a flagged 1's flag, in heights of the 1
FLAG_ANGLE_DEG = (30.0, 60.0)  # ... rising to the 1's top from the left at this angle over the horizontal
SIDE = CANVAS_SIZE * augment.BUFFER_FACTOR  # the page's buffer side


def _row_sizes(n: int, params: DrawnParams, rng: np.random.Generator) -> list[int]:
    if n >= 3 and rng.random() < params.two_rows:
        return [(n + 1) // 2, n // 2]
    return [n]


def _layout(shapes: list[np.ndarray], rows: list[int], gaps, sizes, angle: float, height: float) -> list:
    """(scale, x, y) per digit placing its skeleton box's bottom-left corner on a slanted baseline."""
    out, k = [], 0
    for r, count in enumerate(rows):
        x = 0.0
        for _ in range(count):
            w, h = shapes[k]
            scale = height * sizes[k] / max(h, 1.0)
            out.append((scale, x, r * ROW_PITCH * height + x * math.tan(angle)))
            x += w * scale + gaps[k] * height
            k += 1
    return out


def _place(lines: list[list[np.ndarray]], boxes: list[np.ndarray], layout: list) -> list[list[np.ndarray]]:
    """Each digit's strokes moved from digit pixels to canvas pixels by its (scale, x, y)."""
    out = []
    for digit_lines, (x0, _, _, y1), (scale, x, y) in zip(lines, boxes, layout, strict=True):
        out.append([(line - (x0, y1)) * scale + (x, y) for line in digit_lines])
    return out


def drawn_canvas(
    lines: list[list[np.ndarray]], params: DrawnParams, brush: float, rng: np.random.Generator
) -> list:
    """Strokes of one drawn canvas, per digit, in 400-px buffer pixels (reading order).

    Args:
        lines: per digit, in the order they are written, its strokes in digit pixels (`stroke_cache`).
        params: the drawn block; brush: the canvas's brush width in buffer pixels.
        rng: the shard's generator.
    Returns:
        n lists of (K, 2) float64 polylines.
    """
    lines = [ls or [np.array([[14.0, 14.0]])] for ls in lines]  # an inkless digit is a dot
    boxes = [np.concatenate([np.concatenate(ls).min(0), np.concatenate(ls).max(0)]) for ls in lines]
    shapes = [b[2:] - b[:2] for b in boxes]
    rows = _row_sizes(len(lines), params, rng)
    gaps = rng.uniform(*params.gap, len(lines))
    sizes = rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER, len(lines))
    drops = rng.normal(0.0, DROP_JITTER, len(lines))
    # math.tan, not np.tan: numpy's float64 tan takes SIMD code on CPUs with AVX-512 (SVML) whose last bits
    # differ from libm's, which moved the drawn split's bytes between machine types.
    angle = math.radians(rng.uniform(-params.slant_deg, params.slant_deg))
    margin = brush / (2 * augment.BUFFER_FACTOR) + 1  # canvas pixels kept free of ink at the edges
    room = CANVAS_SIZE - 2 * margin
    unit_layout = _layout(shapes, rows, gaps, sizes, angle, 1.0)
    unit = np.concatenate([np.concatenate(d) for d in _place(lines, boxes, unit_layout)])
    fit = room / max(np.ptp(unit, axis=0).max(), 1e-6)  # the tallest digit height that still fits
    lo, hi = params.height
    height = rng.uniform(lo, min(hi, fit)) if fit > lo else fit
    layout = _layout(shapes, rows, gaps, sizes, angle, height)
    layout = [(s, x, y + d * height) for (s, x, y), d in zip(layout, drops, strict=True)]
    placed = _place(lines, boxes, layout)
    pts = np.concatenate([np.concatenate(d) for d in placed])
    shrink = min(1.0, room / max(np.ptp(pts, axis=0).max(), 1e-6))  # the drops may need a little room
    low = pts.min(axis=0) * shrink
    span = np.ptp(pts, axis=0) * shrink
    offset = np.array([rng.uniform(margin, max(margin, CANVAS_SIZE - margin - s)) for s in span]) - low
    return [[(line * shrink + offset) * augment.BUFFER_FACTOR for line in d] for d in placed]


def with_flag(lines: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """A 1's strokes (digit pixels, y down) with a flag: a short pen line from the left rising to its top,
    written first, as continental writers start a 1."""
    pts = np.concatenate(lines)
    top = pts[np.argmin(pts[:, 1])]
    length = rng.uniform(*FLAG_LENGTH) * max(np.ptp(pts[:, 1]), 1.0)
    angle = math.radians(rng.uniform(*FLAG_ANGLE_DEG))  # math, not np: see drawn_canvas
    start = top + length * np.array([-math.cos(angle), math.sin(angle)])
    return [np.stack([start, top]), *lines]


def _digit_patch(lines: list[np.ndarray], brush: float) -> tuple[np.ndarray, np.ndarray]:
    """One digit's strokes painted alone on the block-aligned part of the page's buffer its brush can
    reach: (uint8 buffer patch, its (x, y) origin in buffer pixels, a multiple of BUFFER_FACTOR).

    Painting relative to an integer origin changes no float64 result of the brush, so the patch holds the
    page's bytes for these strokes.
    """
    pts = np.concatenate(lines)
    f = augment.BUFFER_FACTOR
    lo = np.clip(np.floor((pts.min(0) - brush / 2 - 1) / f).astype(int), 0, CANVAS_SIZE) * f
    hi = np.clip(np.ceil((pts.max(0) + brush / 2 + 1) / f).astype(int), 0, CANVAS_SIZE) * f
    buf = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.uint8)
    strokes.paint_strokes(buf, [line - lo for line in lines], [brush] * len(lines))
    return buf, lo


def _render(digit_lines: list[list[np.ndarray]], brush: float) -> tuple[np.ndarray, np.ndarray]:
    """(the page's canvas of all strokes, (n, 4) tight xywh box of each digit's own pixels).

    Each digit is painted once on its own patch; the page's buffer is their max (the brush combines
    segments by max), reduced by the page's reduction.
    """
    page = np.zeros((SIDE, SIDE), np.uint8)
    f = augment.BUFFER_FACTOR
    boxes = []
    for lines in digit_lines:
        patch, (x, y) = _digit_patch(lines, brush)
        h, w = patch.shape
        np.maximum(page[y : y + h, x : x + w], patch, out=page[y : y + h, x : x + w])
        x0, y0, x1, y1 = augment.ink_bounds(strokes.reduce_blocks(patch, f))
        boxes.append([x // f + x0, y // f + y0, x1 - x0, y1 - y0])
    return strokes.reduce_drawing(page), np.array(boxes)


def make_drawn(
    digits: np.ndarray,
    labels: np.ndarray,
    n: int,
    params: DrawnParams,
    brush_law: tuple[float, float, float],
    max_digits: int,
    rng: np.random.Generator,
    flag_ones: float = 0.0,
) -> dict[str, np.ndarray]:
    """`n` drawn canvases from MNIST test digits.

    Args:
        digits, labels: the MNIST test split (M, 28, 28) uint8 and (M,).
        n: canvases; params: the drawn block; brush_law: (min, mode, max) of each canvas's brush width:
            the drawn split's `params.brush` (the page's slider), or training's `generate.augment.brush`.
        max_digits: K, the padded digit slots (>= params.digits[1]).
        rng: the shard's generator.
        flag_ones: share of the 1s written with a flag (`with_flag`); at 0 no draw is made for it, so the
            drawn split's bytes do not depend on it.
    Returns:
        The shard arrays (see the module docstring).
    """
    out = {
        "images": np.zeros((n, CANVAS_SIZE, CANVAS_SIZE), np.uint8),
        "boxes": np.zeros((n, max_digits, 4), np.float32),
        "labels": np.full((n, max_digits), -1, np.int16),
        "source": np.full((n, max_digits), -1, np.int32),
        "brush": np.zeros(n, np.float64),
    }
    table = stroke_cache.for_split(digits)
    points, offsets, canvas_strokes, stroke_digit = [], [0], [0], []
    for i in range(n):
        count = int(rng.integers(params.digits[0], params.digits[1] + 1))
        ids = rng.integers(0, len(digits), count)
        brush = float(np.rint(augment.brush_widths(brush_law, 1, rng)[0]))  # the slider moves in whole pixels
        lines = table.lines(ids)
        if flag_ones:
            flags = (labels[ids] == 1) & (rng.random(count) < flag_ones)
            lines = [with_flag(ls, rng) if flag and ls else ls for ls, flag in zip(lines, flags, strict=True)]
        placed = drawn_canvas(lines, params, brush, rng)
        out["images"][i], out["boxes"][i, :count] = _render(placed, brush)
        out["labels"][i, :count], out["source"][i, :count], out["brush"][i] = labels[ids], ids, brush
        for slot, digit_lines in enumerate(placed):
            for line in digit_lines:
                points.append(line)
                offsets.append(offsets[-1] + len(line))
                stroke_digit.append(slot)
        canvas_strokes.append(len(offsets) - 1)
    out["stroke_points"] = np.concatenate(points) if points else np.zeros((0, 2))
    out["stroke_offsets"] = np.array(offsets, np.int64)
    out["canvas_strokes"] = np.array(canvas_strokes, np.int64)
    out["stroke_digit"] = np.array(stroke_digit, np.int16)
    return out


def strokes_of(arrays: dict[str, np.ndarray]) -> list[tuple[float, list[np.ndarray]]]:
    """Per canvas of one drawn shard's arrays: (brush width, polylines in buffer pixels)."""
    pts, offsets, ranges = arrays["stroke_points"], arrays["stroke_offsets"], arrays["canvas_strokes"]
    lines = [pts[a:b] for a, b in itertools.pairwise(offsets)]
    return [(float(w), lines[a:b]) for w, a, b in zip(arrays["brush"], ranges[:-1], ranges[1:], strict=True)]
