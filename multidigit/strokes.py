"""Pen strokes: an MNIST digit becomes polylines, polylines become the page's pixels.

Owns three definitions the page (web/js/drawing.js, web/js/preprocess.js) mirrors operation for operation,
so a rendered canvas equals, byte for byte, what the page sends for the same points:

- `render_strokes`: the round brush. For each buffer pixel centre p = (x + 0.5, y + 0.5) and segment
  a -> b: t = clamp(((p - a) . (b - a)) / |b - a|^2, 0, 1) (t = 0 when a = b), d = |p - a - t (b - a)|,
  coverage = clamp(width / 2 + 0.5 - d, 0, 1), byte = floor(coverage * 255 + 0.5); a pixel keeps the
  largest byte over all segments. float64 throughout, in the same order as the JS (no fused ops).
- `reduce_drawing`: THE reduction of an f*100 square drawing to the uint8 (100, 100) canvas: area-average
  each f x f block, rounding half up in integers. services/drawing.py and the generator import it.
- `digit_strokes`: Zhang-Suen thinning, an edge walk over the skeleton, smoothing and Douglas-Peucker
  simplification, giving (K, 2) float64 (x, y) polylines in digit pixels (pixel (r, c) centre at
  (c + 0.5, r + 0.5)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from multidigit.constants import CANVAS_SIZE

MAX_FACTOR = 8  # largest drawing reduce_drawing accepts: 800 x 800
INK_LEVEL = 100  # MNIST pixels above this are ink for the skeleton
SIMPLIFY_PX = 0.3  # Douglas-Peucker tolerance in digit pixels: sub-pixel, so a traced 0 stays round
NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))  # clockwise from up


# ---------------------------------------------------------------- digit -> strokes
def _zhang_suen_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per sub-iteration, a 256-entry table: may a pixel whose 8 neighbours (bit i = NEIGHBOURS[i]) are
    set go? Zhang-Suen's rule: 2-6 set neighbours, one 0 -> 1 transition around, and its side condition."""
    code = np.arange(256)
    p = [(code >> i) & 1 for i in range(8)]  # p[0] = up, clockwise
    count = sum(p)
    transitions = sum((p[i] == 0) & (p[(i + 1) % 8] == 1) for i in range(8))
    base = (count >= 2) & (count <= 6) & (transitions == 1)
    first = (p[0] * p[2] * p[4] == 0) & (p[2] * p[4] * p[6] == 0)
    second = (p[0] * p[2] * p[6] == 0) & (p[0] * p[4] * p[6] == 0)
    return base & first, base & second


ZHANG_SUEN = _zhang_suen_tables()


def thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean (H, W) image, or of a (B, H, W) stack at once, to its skeleton.

    Each sub-iteration packs every pixel's neighbours into one byte and looks the rule up in ZHANG_SUEN;
    images drop out of the loop once a full pass leaves them unchanged.
    """
    h, w = mask.shape[-2:]
    img = np.pad(mask.reshape(-1, h, w).astype(np.uint8), ((0, 0), (1, 1), (1, 1)))
    active = np.arange(len(img))
    while len(active):
        sub = img[active]
        inner = sub[:, 1:-1, 1:-1]  # a view: removals write through
        changed = np.zeros(len(active), bool)
        for table in ZHANG_SUEN:
            code = np.zeros(inner.shape, np.uint8)
            for i, (dy, dx) in enumerate(NEIGHBOURS):
                code |= sub[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] << i
            remove = table[code] & (inner == 1)
            inner[remove] = 0
            changed |= remove.any(axis=(1, 2))
        img[active] = sub
        active = active[changed]
    return img[:, 1:-1, 1:-1].astype(bool).reshape(mask.shape)


def _walk_tables() -> list[list[tuple[int, int]]]:
    """Per 8-neighbour code (bit i = NEIGHBOURS[i]): the neighbour offsets a stroke may walk to, in
    NEIGHBOURS order. A diagonal beside an L of two straight edges is dropped: it would double the ink."""
    out = []
    for code in range(256):
        bit = [(code >> i) & 1 for i in range(8)]
        # diagonal i (odd) sits between straight neighbours i - 1 and i + 1
        out.append(
            [
                d
                for i, d in enumerate(NEIGHBOURS)
                if bit[i] and (i % 2 == 0 or not (bit[i - 1] or bit[(i + 1) % 8]))
            ]
        )
    return out


WALKS = _walk_tables()


def neighbour_codes(skeleton: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W): bit i set where the pixel's neighbour NEIGHBOURS[i] is on the skeleton."""
    h, w = skeleton.shape[-2:]
    pad = np.pad(skeleton.astype(np.uint8), [(0, 0)] * (skeleton.ndim - 2) + [(1, 1), (1, 1)])
    code = np.zeros(skeleton.shape, np.uint8)
    for i, (dy, dx) in enumerate(NEIGHBOURS):
        code |= pad[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] << i
    return code


def trace(skeleton: np.ndarray, codes: np.ndarray | None = None) -> list[list[tuple[int, int]]]:
    """Polylines of (row, col) that walk every 8-neighbour edge of a (H, W) skeleton once.

    `codes` is its `neighbour_codes`, optional (a batch computes them faster at once).
    """
    codes = neighbour_codes(skeleton) if codes is None else codes
    rows, cols = np.nonzero(skeleton)
    adj, lone = {}, []
    for r, c, code in zip(rows.tolist(), cols.tolist(), codes[rows, cols].tolist(), strict=True):
        adj[(r, c)] = [(r + dy, c + dx) for dy, dx in WALKS[code]]
        if not code:
            lone.append((r, c))
    strokes = []
    while live := [p for p in adj if adj[p]]:
        path = [min(live, key=lambda p: (len(adj[p]) % 2 == 0, p))]  # a pen end (odd degree) if any
        while adj[path[-1]]:
            q = adj[path[-1]].pop(0)
            adj[q].remove(path[-1])
            path.append(q)
        strokes.append(path)
    return strokes + [[p] for p in lone]


def smooth(points: np.ndarray, passes: int = 2) -> np.ndarray:
    """Round off the pixel staircase of a traced (K, 2) path; its two ends stay put."""
    for _ in range(passes):
        if len(points) > 2:
            points = np.concatenate([points[:1], (points[:-2] + points[1:-1] + points[2:]) / 3, points[-1:]])
    return points


def _farthest(xs: list[float], ys: list[float], i: int, j: int) -> tuple[int, float]:
    """(index, distance) of the point strictly between i and j farthest from the chord i -> j (from point
    i when the path closes on itself, a loop); the first one on ties. Python floats: the few points of a
    digit's stroke are faster here than in numpy calls."""
    ax, ay = xs[i], ys[i]
    abx, aby = xs[j] - ax, ys[j] - ay
    norm = float(np.hypot(abx, aby))
    best, far = i + 1, -1.0
    for k in range(i + 1, j):
        rx, ry = xs[k] - ax, ys[k] - ay
        dist = abs(abx * ry - aby * rx) / norm if norm > 0 else float(np.hypot(rx, ry))
        if dist > far:
            best, far = k, dist
    return best, far


def simplify(points: np.ndarray, tolerance: float = SIMPLIFY_PX) -> np.ndarray:
    """Douglas-Peucker: drop points of a (K, 2) polyline within `tolerance` of the chord that skips them."""
    if len(points) < 3:
        return points
    keep = np.zeros(len(points), bool)
    keep[[0, -1]] = True
    xs, ys = points[:, 0].tolist(), points[:, 1].tolist()
    todo = [(0, len(points) - 1)]
    while todo:
        i, j = todo.pop()
        if j - i < 2:
            continue
        k, dist = _farthest(xs, ys, i, j)
        if dist > tolerance:
            keep[k] = True
            todo += [(i, k), (k, j)]
    return points[keep]


def digit_strokes(
    digit: np.ndarray, skeleton: np.ndarray | None = None, codes: np.ndarray | None = None
) -> list[np.ndarray]:
    """Pen strokes of one digit image.

    Args:
        digit: (H, W) grey digit (e.g. uint8 (28, 28) MNIST, or a float augmented one), white on black.
        skeleton: its precomputed `thin(digit > INK_LEVEL)` (a batch thins faster at once), optional.
        codes: the skeleton's precomputed `neighbour_codes`, optional.
    Returns:
        Polylines, each (K, 2) float64 (x, y) in digit pixels; a lone skeleton pixel is a (1, 2) dot.
    """
    if skeleton is None:
        skeleton = thin(digit > INK_LEVEL)
    out = []
    for path in trace(skeleton, codes):
        rc = smooth(np.array(path, np.float64))
        out.append(simplify(rc[:, ::-1] + 0.5))
    return out


# ---------------------------------------------------------------- strokes -> pixels
# The brush is a compiled loop: per-segment numpy calls cost more than the arithmetic. numba's defaults
# keep IEEE float64 semantics (no fastmath, and LLVM fuses no multiply-add unless asked), so every pixel
# gets the operations of the module docstring in that order; tests/test_strokes.py checks the machine code
# for fused multiply-adds. The explicit signature compiles (or loads from the on-disk cache) at import, so
# a warm parent's forked workers never compile.
@numba.njit(cache=True, nogil=True, error_model="numpy")
def _paint_segment(buf, ax: float, ay: float, bx: float, by: float, width: float) -> None:
    """Max the brush bytes of segment a -> b into `buf` (H, W) uint8, over its bounding box only."""
    half = width / 2 + 0.5
    reach = width / 2 + 1
    # pixels outside the box get coverage <= 0 anyway, so the box only saves work
    x0 = max(0, math.floor(min(ax, bx) - reach))
    x1 = min(buf.shape[1] - 1, math.ceil(max(ax, bx) + reach))
    y0 = max(0, math.floor(min(ay, by) - reach))
    y1 = min(buf.shape[0] - 1, math.ceil(max(ay, by) + reach))
    dx, dy = bx - ax, by - ay
    len2 = dx * dx + dy * dy
    for y in range(y0, y1 + 1):
        ry = (y + 0.5) - ay
        ry_dy = ry * dy
        for x in range(x0, x1 + 1):
            rx = (x + 0.5) - ax
            if len2 > 0:
                t = (rx * dx + ry_dy) / len2
                t = t if t > 0.0 else 0.0  # np.clip(t, 0, 1): max with 0, then min with 1
                t = t if t < 1.0 else 1.0
                ex = rx - t * dx
                ey = ry - t * dy
            else:  # t = 0
                ex, ey = rx + 0 * ry, ry + 0 * rx
            cover = half - math.sqrt(ex * ex + ey * ey)
            cover = cover if cover > 0.0 else 0.0
            cover = cover if cover < 1.0 else 1.0
            byte = np.uint8(cover * 255 + 0.5)  # >= 0.5, so truncation is the floor
            if byte > buf[y, x]:
                buf[y, x] = byte


@numba.njit("void(uint8[:, :], float64[:, ::1], int64[::1], float64[::1])", cache=True, nogil=True)
def _paint_polylines(buf, points, offsets, widths) -> None:
    """Stroke s is points[offsets[s]:offsets[s + 1]], painted with widths[s]; one point is a dot."""
    for s in range(len(widths)):
        lo, hi = offsets[s], offsets[s + 1]
        if hi - lo == 1:
            _paint_segment(buf, points[lo, 0], points[lo, 1], points[lo, 0], points[lo, 1], widths[s])
        for k in range(lo, hi - 1):
            _paint_segment(buf, points[k, 0], points[k, 1], points[k + 1, 0], points[k + 1, 1], widths[s])


def paint_strokes(buf: np.ndarray, strokes: Sequence[np.ndarray], widths: Sequence[float]) -> np.ndarray:
    """Paint polylines (K, 2) float64 (x, y) into `buf` (H, W) uint8 in place, stroke i with widths[i]."""
    if len(strokes) != len(widths):
        raise ValueError(f"{len(strokes)} strokes but {len(widths)} widths; need one width per stroke")
    lines = [np.asarray(points, np.float64).reshape(-1, 2) for points in strokes]
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    points = np.concatenate(lines) if lines else np.zeros((0, 2))
    _paint_polylines(buf, np.ascontiguousarray(points), offsets, np.asarray(widths, np.float64).reshape(-1))
    return buf


def render_strokes(
    strokes: Sequence[np.ndarray], width: float | Sequence[float], side: int = 400
) -> np.ndarray:
    """The page's brush: polylines in buffer pixels, white on black, exactly as web/js/drawing.js paints.

    Args:
        strokes: polylines, each (K, 2) float64 (x, y) in buffer pixels (K = 1 is a dot).
        width: brush width in buffer pixels, one for all strokes or one per stroke.
        side: buffer side (400 on the page).
    Returns:
        uint8 (side, side).
    """
    widths = [width] * len(strokes) if np.isscalar(width) else list(width)
    return paint_strokes(np.zeros((side, side), np.uint8), strokes, widths)


def reduce_drawing(image: np.ndarray) -> np.ndarray:
    """Area-average a square grey drawing of side f*100 down to the model's canvas.

    Args:
        image: uint8 (f*100, f*100) grey drawing, white on black, 1 <= f <= MAX_FACTOR.
    Returns:
        uint8 (100, 100) canvas.
    Raises:
        ValueError: any other shape.
    """
    side = image.shape[0]
    factor = side // CANVAS_SIZE
    if image.ndim != 2 or image.shape != (side, side) or side % CANVAS_SIZE or not 1 <= factor <= MAX_FACTOR:
        raise ValueError(
            f"image is {'x'.join(map(str, image.shape))}, need a square grey image of side 100, 200, ..., "
            f"{CANVAS_SIZE * MAX_FACTOR}"
        )
    return reduce_blocks(image, factor)


def reduce_blocks(image: np.ndarray, factor: int) -> np.ndarray:
    """The same block reduction for any (f*H, f*W) uint8 patch (the generator reduces digit patches)."""
    h, w = image.shape[0] // factor, image.shape[1] // factor
    area = factor * factor
    # (H, f, W, f) blocks; int64 sums cannot overflow (at most 64 * 255).
    sums = image.astype(np.int64).reshape(h, factor, w, factor).sum(axis=(1, 3))
    return ((sums + area // 2) // area).astype(np.uint8)
