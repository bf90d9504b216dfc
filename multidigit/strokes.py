"""Pen strokes: an MNIST digit becomes polylines, polylines become the page's pixels.

Owns three definitions the page (web/js/drawing.js, web/js/preprocess.js) mirrors operation for operation,
so a rendered canvas equals, byte for byte, what the page sends for the same points:

- `render_strokes`: the round brush. For each buffer pixel centre p = (x + 0.5, y + 0.5) and segment
  a -> b: t = clamp(((p - a) . (b - a)) / |b - a|^2, 0, 1) (t = 0 when a = b), d = |p - a - t (b - a)|,
  coverage = clamp(width / 2 + 0.5 - d, 0, 1), byte = floor(coverage * 255 + 0.5); a pixel keeps the
  largest byte over all segments. float64 throughout, in the same order as the JS (no fused ops).
- `reduce_drawing`: THE reduction of an f*100 square drawing to the uint8 (100, 100) canvas: area-average
  each f x f block, rounding half up in integers. services/drawing.py and the generator import it.
- `digit_strokes`: the digit upsampled 4x (bilinear), its filled loops opened (`open_blobs`), Zhang-Suen
  thinning, an edge walk over the skeleton, smoothing and Douglas-Peucker simplification, giving (K, 2)
  float64 (x, y) polylines in digit pixels (pixel (r, c) centre at (c + 0.5, r + 0.5)).

Thinning, the walk, the smoothing, the simplification, the brush and the block reduction are
numba-compiled loops (the generator re-strokes thousands of digits a second, a few hundred pixels and
segments each, where numpy's per-call cost outweighed the arithmetic).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numba
import numpy as np

from multidigit.constants import CANVAS_SIZE

MAX_FACTOR = 8  # largest drawing reduce_drawing accepts: 800 x 800
INK_LEVEL = 100  # MNIST pixels above this are ink for the skeleton
SIMPLIFY_PX = 0.3  # Douglas-Peucker tolerance in digit pixels: sub-pixel, so a traced 0 stays round
# Digits are traced at 4x. At 28 px a thick digit's loop fills in (a 6 becomes a bare hook) and thinning
# erodes a short arm or a 3's tip away: a classifier trained on plain MNIST reads 0.965 of MNIST val digits
# redrawn from 28-px strokes (brush 10; 0.991 of the originals), 0.979 from 4x strokes
# (benchmarks/restroke_fidelity.py; 2x read 0.973, 6x and 8x no better than 4x, in a throw-away sweep).
UPSAMPLE = 4
# A loop an MNIST pen filled in (a 9's head, an 8's or 6's loop drawn as a solid blob) thins to a dot or a
# stub, so its redraw reads as another digit (a 9 as a 7 or 1). People draw those loops as rings: the round
# core of ink thicker than BLOB_DEPTH digit px on every side is cut out before thinning, so the skeleton
# circles it. Only round cores (area over the disc of their longer side >= BLOB_ROUNDNESS, at least
# BLOB_AREA digit px^2): a fat bar's core is a line, and cutting it would redraw a 1 as a thin 0. Chosen on
# MNIST val with benchmarks/restroke_fidelity.py's reader (brush 10: 0.979 -> 0.983 of redrawn digits
# read, 0.989 of the originals; depth 2.0 / roundness 0 broke as many digits as they mended).
BLOB_DEPTH = 2.5
BLOB_ROUNDNESS = 0.3
BLOB_AREA = 0.8
TRACE_CHUNK = 256  # digits thinned per batch: bounds the (B, 114, 114) masks' memory
NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))  # clockwise from up


# ---------------------------------------------------------------- digit -> strokes
def _input(dtype, ndim: int, layout: str = "A"):
    """numba type of a read-only array argument: it takes writable arrays too (decoded images and
    np.frombuffer views are read-only, and a writable-only signature would refuse them)."""
    return numba.types.Array(dtype, ndim, layout, readonly=True)


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


ZHANG_SUEN = np.stack(_zhang_suen_tables())  # (2, 256) bool
STEP_DY = np.array([dy for dy, _ in NEIGHBOURS], np.int64)
STEP_DX = np.array([dx for _, dx in NEIGHBOURS], np.int64)


@numba.njit("void(u1[:, ::1])", cache=True, nogil=True)
def _thin_padded(img) -> None:
    """Zhang-Suen in place on one zero-padded (H + 2, W + 2) uint8 0/1 image: each sub-iteration looks
    every set pixel's neighbour byte up in ZHANG_SUEN, then removes all it marked; until a full pass
    removes nothing."""
    h, w = img.shape[0] - 2, img.shape[1] - 2
    gone = np.empty((h * w, 2), np.int64)
    changed = True
    while changed:
        changed = False
        for table in range(2):
            n = 0
            for r in range(1, h + 1):
                for c in range(1, w + 1):
                    if img[r, c]:
                        code = 0
                        for i in range(8):
                            code |= img[r + STEP_DY[i], c + STEP_DX[i]] << i
                        if ZHANG_SUEN[table, code]:
                            gone[n, 0], gone[n, 1], n = r, c, n + 1
            for k in range(n):
                img[gone[k, 0], gone[k, 1]] = 0
            changed |= n > 0


def thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean (H, W) image, or of a (B, H, W) stack, to its skeleton."""
    h, w = mask.shape[-2:]
    stack = mask.reshape(-1, h, w)
    img = np.zeros((len(stack), h + 2, w + 2), np.uint8)  # (B, H + 2, W + 2); np.pad is slower
    img[:, 1:-1, 1:-1] = stack
    for one in img:
        _thin_padded(one)
    return img[:, 1:-1, 1:-1].astype(bool).reshape(mask.shape)


def _walk_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per 8-neighbour code (bit i = NEIGHBOURS[i]): the NEIGHBOURS indices a stroke may walk to, in
    NEIGHBOURS order, (256, 8) padded with -1, and their count (256,). A diagonal beside an L of two
    straight edges is dropped: it would double the ink."""
    steps, counts = np.full((256, 8), -1, np.int64), np.zeros(256, np.int64)
    for code in range(256):
        bit = [(code >> i) & 1 for i in range(8)]
        # diagonal i (odd) sits between straight neighbours i - 1 and i + 1
        walk = [i for i in range(8) if bit[i] and (i % 2 == 0 or not (bit[i - 1] or bit[(i + 1) % 8]))]
        steps[code, : len(walk)], counts[code] = walk, len(walk)
    return steps, counts


WALK_STEPS, WALK_COUNTS = _walk_tables()


def neighbour_codes(skeleton: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W): bit i set where the pixel's neighbour NEIGHBOURS[i] is on the skeleton."""
    h, w = skeleton.shape[-2:]
    pad = np.zeros((*skeleton.shape[:-2], h + 2, w + 2), np.uint8)  # np.pad costs more than the codes
    pad[..., 1:-1, 1:-1] = skeleton
    code = np.zeros(skeleton.shape, np.uint8)
    for i, (dy, dx) in enumerate(NEIGHBOURS):
        code |= pad[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] << i
    return code


# The tracer, smoother and simplifier are compiled loops too (a digit's few hundred pixels and points
# cost far more in Python objects than in arithmetic); their float64 operations are those of the Python
# they replaced, in the same order, so the strokes keep their bytes.
@numba.njit(cache=True, nogil=True)
def _adjacency(skeleton, codes):
    """Skeleton pixels in row-major order: rows, cols (n,), their walkable neighbours (n, 8) as pixel
    indices in WALK_STEPS order, and how many (n,)."""
    h, w = skeleton.shape
    index = np.full((h, w), -1, np.int64)
    n = 0
    for r in range(h):
        for c in range(w):
            if skeleton[r, c]:
                index[r, c] = n
                n += 1
    rows, cols = np.empty(n, np.int64), np.empty(n, np.int64)
    adj, degree = np.empty((n, 8), np.int64), np.zeros(n, np.int64)
    k = 0
    for r in range(h):
        for c in range(w):
            if skeleton[r, c]:
                rows[k], cols[k], code = r, c, codes[r, c]
                for m in range(WALK_COUNTS[code]):
                    i = WALK_STEPS[code, m]
                    adj[k, m] = index[r + STEP_DY[i], c + STEP_DX[i]]
                degree[k] = WALK_COUNTS[code]
                k += 1
    return rows, cols, adj, degree


@numba.njit(cache=True, nogil=True)
def _pen_start(degree) -> int:
    """The first pixel (row-major) with an odd number of edges left, a pen end; else the first with any;
    -1 when every edge is walked."""
    for k in range(len(degree)):
        if degree[k] % 2 == 1:
            return k
    for k in range(len(degree)):
        if degree[k] > 0:
            return k
    return -1


@numba.njit(cache=True, nogil=True)
def _trace(skeleton, codes):
    """Paths that walk every 8-neighbour edge of a (H, W) skeleton once, each from `_pen_start` taking
    a pixel's first edge left, then its isolated pixels as one-pixel paths: (rows, cols) of all path
    points (P,) and path offsets (S + 1,)."""
    rows, cols, adj, degree = _adjacency(skeleton, codes)
    n = len(rows)
    path, offsets = np.empty(9 * n + 1, np.int64), np.zeros(5 * n + 2, np.int64)  # <= 4n edges
    m = s = 0
    cur = _pen_start(degree)
    while cur >= 0:
        path[m], m = cur, m + 1
        while degree[cur] > 0:
            q = adj[cur, 0]
            adj[cur, : degree[cur] - 1] = adj[cur, 1 : degree[cur]].copy()  # pop the first edge
            degree[cur] -= 1
            for t in range(degree[q]):  # and drop its other end's first edge back to cur
                if adj[q, t] == cur:
                    adj[q, t : degree[q] - 1] = adj[q, t + 1 : degree[q]].copy()
                    break
            degree[q] -= 1
            path[m], m, cur = q, m + 1, q
        s += 1
        offsets[s] = m
        cur = _pen_start(degree)
    for k in range(n):
        if codes[rows[k], cols[k]] == 0:
            path[m], m, s = k, m + 1, s + 1
            offsets[s] = m
    return rows[path[:m]], cols[path[:m]], offsets[: s + 1]


@numba.njit(cache=True, nogil=True)
def _smooth(v, passes):
    """Round off the pixel staircase of one coordinate of a traced (K,) path; its two ends stay put."""
    for _ in range(passes):
        if len(v) > 2:
            out = v.copy()
            for i in range(1, len(v) - 1):
                out[i] = (v[i - 1] + v[i] + v[i + 1]) / 3
            v = out
    return v


@numba.njit(cache=True, nogil=True)
def _farthest(xs, ys, i: int, j: int) -> tuple[int, float]:
    """(index, distance) of the point strictly between i and j farthest from the chord i -> j (from point
    i when the path closes on itself, a loop); the first one on ties."""
    ax, ay = xs[i], ys[i]
    abx, aby = xs[j] - ax, ys[j] - ay
    norm = math.hypot(abx, aby)  # libm hypot, as np.hypot
    best, far = i + 1, -1.0
    for k in range(i + 1, j):
        rx, ry = xs[k] - ax, ys[k] - ay
        dist = abs(abx * ry - aby * rx) / norm if norm > 0 else math.hypot(rx, ry)
        if dist > far:
            best, far = k, dist
    return best, far


@numba.njit(
    numba.bool_[::1](_input(numba.float64, 1), _input(numba.float64, 1), numba.float64),
    cache=True,
    nogil=True,
)
def _simplify_keep(xs, ys, tolerance):
    """Douglas-Peucker's kept points of the polyline (xs, ys) (K,): (K,) bool."""
    keep = np.ones(len(xs), np.bool_)
    if len(xs) < 3:
        return keep
    keep[1:-1] = False
    todo = np.empty((len(xs), 2), np.int64)  # a stack of (i, j) chords to test
    todo[0, 0], todo[0, 1], top = 0, len(xs) - 1, 1
    while top:
        top -= 1
        i, j = todo[top, 0], todo[top, 1]
        if j - i < 2:
            continue
        k, dist = _farthest(xs, ys, i, j)
        if dist > tolerance:
            keep[k] = True
            todo[top, 0], todo[top, 1], todo[top + 1, 0], todo[top + 1, 1] = i, k, k, j
            top += 2
    return keep


@numba.njit((_input(numba.bool_, 2), _input(numba.uint8, 2), numba.float64), cache=True, nogil=True)
def _skeleton_lines(skeleton, codes, tolerance):
    """`digit_strokes` of a skeleton: all points (P, 2) float64 (x, y) and stroke offsets (S + 1,)."""
    rows, cols, offsets = _trace(skeleton, codes)
    points, out = np.empty((len(rows), 2), np.float64), np.zeros(len(offsets), np.int64)
    m = 0
    for s in range(len(offsets) - 1):
        lo, hi = offsets[s], offsets[s + 1]
        xs = _smooth(cols[lo:hi].astype(np.float64), 2) + 0.5  # pixel (r, c) centre at (c + 0.5, r + 0.5)
        ys = _smooth(rows[lo:hi].astype(np.float64), 2) + 0.5
        keep = _simplify_keep(xs, ys, tolerance)
        for k in range(hi - lo):
            if keep[k]:
                points[m, 0], points[m, 1], m = xs[k], ys[k], m + 1
        out[s + 1] = m
    return points[:m], out


def simplify(points: np.ndarray, tolerance: float = SIMPLIFY_PX) -> np.ndarray:
    """Douglas-Peucker: drop points of a (K, 2) polyline within `tolerance` of the chord that skips them."""
    points = np.asarray(points, np.float64)
    xs, ys = np.ascontiguousarray(points[:, 0]), np.ascontiguousarray(points[:, 1])
    return points[_simplify_keep(xs, ys, float(tolerance))]


@numba.njit(numba.bool_[:, :, ::1](_input(numba.float32, 3), numba.int64), cache=True, nogil=True)
def _upsampled_ink(digits, factor):
    """(B, f H, f W) ink masks: each digit resampled bilinearly at f x (pixel centres aligned, 0 outside
    the digit), then `> INK_LEVEL`."""
    n, h, w = digits.shape
    out = np.zeros((n, h * factor, w * factor), np.bool_)
    for b in range(n):
        for y in range(h * factor):
            sy = (y + 0.5) / factor - 0.5
            y0 = int(np.floor(sy))
            fy = sy - y0
            for x in range(w * factor):
                sx = (x + 0.5) / factor - 0.5
                x0 = int(np.floor(sx))
                fx = sx - x0
                v = 0.0
                for dy, wy in ((0, 1.0 - fy), (1, fy)):
                    for dx, wx in ((0, 1.0 - fx), (1, fx)):
                        r, c = y0 + dy, x0 + dx
                        if 0 <= r < h and 0 <= c < w:
                            v += wy * wx * digits[b, r, c]
                out[b, y, x] = v > INK_LEVEL
    return out


def open_blobs(masks: np.ndarray, factor: int) -> np.ndarray:
    """Ink masks (B, H, W) at `factor` x with each filled loop's round core cut out (BLOB_DEPTH), in place."""
    from scipy import ndimage  # only the tracer needs it: the mnist stage, once per split

    for mask in masks:
        core = ndimage.distance_transform_edt(mask) > BLOB_DEPTH * factor
        if not core.any():
            continue
        labels, _ = ndimage.label(core)
        for k, box in enumerate(ndimage.find_objects(labels), 1):
            part = labels[box] == k
            area, side = part.sum(), max(part.shape)
            if area >= BLOB_AREA * factor**2 and area >= BLOB_ROUNDNESS * math.pi / 4 * side**2:
                mask[box][part] = False
    return masks


def trace_masks(digits: np.ndarray) -> np.ndarray:
    """(B, 4 H, 4 W) bool: what the tracer thins, the digits' ink at UPSAMPLE x with filled loops opened."""
    return open_blobs(_upsampled_ink(np.ascontiguousarray(digits, np.float32), UPSAMPLE), UPSAMPLE)


def trace_digits(digits: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pen strokes of a batch of digits, as arrays: per digit, its points (P, 2) float64 (x, y) in digit
    pixels and stroke offsets (S + 1,) int64 (stroke s = points[offsets[s]:offsets[s + 1]]).

    Each digit is upsampled `UPSAMPLE` x, its filled loops opened (`open_blobs`), thinned, traced edge by
    edge, smoothed and simplified (tolerance SIMPLIFY_PX digit pixels); a digit without ink has no strokes
    (offsets [0]).
    """
    digits = np.asarray(digits, np.float32).reshape(-1, *np.shape(digits)[-2:])
    out = []
    for start in range(0, len(digits), TRACE_CHUNK):
        skeletons = thin(trace_masks(digits[start : start + TRACE_CHUNK]))
        for skeleton, codes in zip(skeletons, neighbour_codes(skeletons), strict=True):
            points, offsets = _skeleton_lines(skeleton, codes, SIMPLIFY_PX * UPSAMPLE)
            out.append((points / UPSAMPLE, offsets))  # a power of two: exact
    return out


def digit_strokes(digit: np.ndarray) -> list[np.ndarray]:
    """Pen strokes of one digit image (`trace_digits`).

    Args:
        digit: (H, W) grey digit (e.g. uint8 (28, 28) MNIST), white on black.
    Returns:
        Polylines, each (K, 2) float64 (x, y) in digit pixels; a lone skeleton pixel is a (1, 2) dot.
    """
    points, offsets = trace_digits(digit[None])[0]
    return [points[a:b] for a, b in itertools.pairwise(offsets.tolist())]


# ---------------------------------------------------------------- strokes -> pixels
# The brush is compiled loops: per-segment numpy calls cost more than the arithmetic. numba's defaults
# keep IEEE float64 semantics (no fastmath, and LLVM fuses no multiply-add unless asked), so every pixel
# gets the operations of the module docstring in that order, in vector lanes or not (IEEE division and
# square root round the same in both); tests/test_strokes.py checks the machine code for fused
# multiply-adds. The explicit signature compiles (or loads from the on-disk cache) at import, so
# a warm parent's forked workers never compile.
FULL_MARGIN = 1.001  # the brush's full-coverage core: centres this much inside its edge


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _row_spans(y0: int, rows: int, ay: float, dx: float, dy: float, half: float, los, his) -> None:
    """los[j], his[j]: an interval of rx = (x + 0.5) - ax holding every pixel centre of row y0 + j (ry =
    (y0 + j + 0.5) - ay) nearer than `half` to the segment (0, 0) -> (dx, dy), for every j < rows; lo > hi
    when none is.

    The capsule is the union of the discs at both ends and the band where t lies in [0, 1] and the
    perpendicular distance is under `half`; it is convex, so its row is the hull of their three rows.
    The span only chooses which pixels get the brush's own arithmetic, so the bytes stay those of the
    segment's whole bounding box (`_paint_segment` says why no pixel with ink falls outside it, and why
    multiplying by a rounded reciprocal, ~1e-16 relative, cannot move one). The rows are independent and
    every test that depends on the row is a select, so the loop is vectorised: painting a stage-3 digit
    took 10.4 us with one row's span at a time, 9.0 us with this.
    """
    len2 = dx * dx + dy * dy
    reach = half * math.sqrt(len2)  # half |d|
    inv_dx, inv_dy = 1.0 / dx if dx != 0 else 0.0, 1.0 / dy if dy != 0 else 0.0
    r2 = half * half
    for j in range(rows):
        ry = (y0 + j + 0.5) - ay
        cy = ry - dy
        q0, q1 = r2 - ry * ry, r2 - cy * cy  # the discs at a and b
        s0, s1 = math.sqrt(q0 if q0 > 0 else 0.0), math.sqrt(q1 if q1 > 0 else 0.0)
        lo = min(-s0 if q0 > 0 else math.inf, dx - s1 if q1 > 0 else math.inf)
        hi = max(s0 if q0 > 0 else -math.inf, dx + s1 if q1 > 0 else -math.inf)
        band_lo, band_hi = -math.inf, math.inf
        if dx != 0:  # the slab 0 <= rx dx + ry dy <= |d|^2
            u, v = -ry * dy * inv_dx, (len2 - ry * dy) * inv_dx
            band_lo, band_hi = min(u, v), max(u, v)
        elif not 0 <= ry * dy <= len2:
            band_lo = math.inf
        if dy != 0:  # the strip |rx dy - ry dx| < half |d|
            u, v = (ry * dx - reach) * inv_dy, (ry * dx + reach) * inv_dy
            band_lo, band_hi = max(band_lo, min(u, v)), min(band_hi, max(u, v))
        elif abs(ry * dx) >= reach:
            band_lo = math.inf
        banded = len2 > 0 and band_lo <= band_hi
        los[j] = min(lo, band_lo) if banded else lo
        his[j] = max(hi, band_hi) if banded else hi


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _byte(cover: float) -> np.uint8:
    """A pixel's coverage as the brush's byte: clamped to [0, 1], then floor(cover * 255 + 0.5)."""
    cover = cover if cover > 0.0 else 0.0
    cover = cover if cover < 1.0 else 1.0
    return np.uint8(cover * 255 + 0.5)  # >= 0.5, so truncation is the floor


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _brush_bytes(xs, ys, n: int, out, ax: float, ay: float, dx: float, dy: float, half: float) -> None:
    """out[i] = the brush byte of segment a -> a + (dx, dy) at pixel (xs[i], ys[i]), for i < n: the module
    docstring's arithmetic, in its order. One branch-free loop over a segment's pixels, which the compiler
    vectorises (IEEE division and square root are exact in every lane, so the bytes are the scalar ones)."""
    len2 = dx * dx + dy * dy
    if len2 > 0:
        for i in range(n):
            rx, ry = (xs[i] + 0.5) - ax, (ys[i] + 0.5) - ay
            t = (rx * dx + ry * dy) / len2
            t = t if t > 0.0 else 0.0  # np.clip(t, 0, 1): max with 0, then min with 1
            t = t if t < 1.0 else 1.0
            ex, ey = rx - t * dx, ry - t * dy
            out[i] = _byte(half - math.sqrt(ex * ex + ey * ey))
    else:  # a dot: t = 0
        for i in range(n):
            rx, ry = (xs[i] + 0.5) - ax, (ys[i] + 0.5) - ay
            ex, ey = rx + 0 * ry, ry + 0 * rx
            out[i] = _byte(half - math.sqrt(ex * ex + ey * ey))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _segment_box(ax: float, ay: float, bx: float, by: float, width: float, h: int, w: int):
    """(x0, x1, y0, y1): the pixels a segment's brush can reach, inclusive, clipped to an (h, w) buffer."""
    reach = width / 2 + 1
    x0 = max(0, math.floor(min(ax, bx) - reach))
    x1 = min(w - 1, math.ceil(max(ax, bx) + reach))
    y0 = max(0, math.floor(min(ay, by) - reach))
    y1 = min(h - 1, math.ceil(max(ay, by) + reach))
    return x0, x1, y0, y1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _paint_segment(buf, ax: float, ay: float, bx: float, by: float, width: float, xs, ys, out, spans) -> None:
    """Max the brush bytes of segment a -> b into `buf` (H, W) uint8, row by row over the capsule's span
    (pixels outside it get coverage <= 0 anyway, so the span only saves work: a long diagonal's bounding
    box is mostly empty); the span of its full core is set to 255 in one fill, only the two runs beside it
    get the arithmetic (inside thick strokes most pixels are core). The runs' pixels are gathered into
    `xs`, `ys` (scratch of at least the segment's box area, `_segment_box`) and evaluated in one loop
    (`_brush_bytes`): a run is 2-3 pixels on average, too short to vectorise, a segment's ~60 are not.
    `spans` is (4, H) scratch for the rows' spans of the brush and of its core (`_row_spans`)."""
    half = width / 2 + 0.5
    core = half - FULL_MARGIN
    x0, x1, y0, y1 = _segment_box(ax, ay, bx, by, width, buf.shape[0], buf.shape[1])
    if x0 > x1:  # wholly left or right of the buffer (the clamps below would then leave it on the right)
        return
    dx, dy = bx - ax, by - ay
    rows = y1 - y0 + 1
    los, his, core_los, core_his = spans[0], spans[1], spans[2], spans[3]  # 1-D rows of C scratch: contiguous
    _row_spans(y0, rows, ay, dx, dy, half, los, his)
    if core > 0:
        _row_spans(y0, rows, ay, dx, dy, core, core_los, core_his)
    n = 0
    for j in range(rows):
        y, lo, hi = y0 + j, los[j], his[j]
        if lo > hi:
            continue
        # Bytes are 0 below coverage 1/510, so a pixel with ink lies 0.002 px inside the span's edge: float
        # rounding (~1e-12 px) cannot move it out. The same slack in reverse makes the core all 255: a
        # centre nearer than half - 1 has coverage 1, and the byte is 255 from coverage 0.998 up.
        first = math.ceil(max(float(x0), min(float(x1), ax + lo - 0.5)))
        last = math.floor(max(float(x0), min(float(x1), ax + hi - 0.5)))
        full_first, full_last = last + 1, last  # no core: one run, first..last
        if core > 0 and core_los[j] <= core_his[j]:
            full_first = max(first, math.ceil(ax + core_los[j] - 0.5))
            full_last = min(last, math.floor(ax + core_his[j] - 0.5))
        if full_first <= full_last:
            buf[y, full_first : full_last + 1] = 255
        else:
            full_first, full_last = last + 1, last
        for x in range(first, full_first):  # the run left of the core, then the one right of it
            xs[n], ys[n], n = x, y, n + 1
        for x in range(full_last + 1, last + 1):
            xs[n], ys[n], n = x, y, n + 1
    _brush_bytes(xs, ys, n, out, ax, ay, dx, dy, half)
    for i in range(n):  # each pixel once per segment, so deferring the max changes no byte
        if out[i] > buf[ys[i], xs[i]]:
            buf[ys[i], xs[i]] = out[i]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _largest_box(h: int, w: int, points, offsets, widths) -> int:
    """The most pixels any one segment's box covers in an (h, w) buffer (`_segment_box`): scratch size."""
    area = 0
    for s in range(len(widths)):
        lo, hi = offsets[s], offsets[s + 1]
        for k in range(lo, max(lo + 1, hi - 1) if hi > lo else lo):  # a dot is its own segment
            b = min(k + 1, hi - 1)
            ax, ay, bx, by = points[k, 0], points[k, 1], points[b, 0], points[b, 1]
            x0, x1, y0, y1 = _segment_box(ax, ay, bx, by, widths[s], h, w)
            area = max(area, max(x1 - x0 + 1, 0) * max(y1 - y0 + 1, 0))
    return area


# A C-contiguous buffer (the page's, every generator patch) lets a core's fill be one memset: with only the
# any-layout signature it was a strided loop, and painting took ~40% longer.
_BUFFERS = (numba.uint8[:, ::1], numba.uint8[:, :])
_LINES = (_input(numba.float64, 2), _input(numba.int64, 1), _input(numba.float64, 1))


@numba.njit([numba.void(buf, *_LINES) for buf in _BUFFERS], cache=True, nogil=True)
def _paint_polylines(buf, points, offsets, widths) -> None:
    """Stroke s is points[offsets[s]:offsets[s + 1]], painted with widths[s]; one point is a dot."""
    area = _largest_box(buf.shape[0], buf.shape[1], points, offsets, widths)
    xs, ys, out = np.empty(area, np.int64), np.empty(area, np.int64), np.empty(area, np.uint8)
    spans = np.empty((4, buf.shape[0]))
    for s in range(len(widths)):
        lo, hi = offsets[s], offsets[s + 1]
        for k in range(lo, max(lo + 1, hi - 1) if hi > lo else lo):
            b = min(k + 1, hi - 1)  # k itself for a dot
            ax, ay, bx, by = points[k, 0], points[k, 1], points[b, 0], points[b, 1]
            _paint_segment(buf, ax, ay, bx, by, widths[s], xs, ys, out, spans)


def paint_strokes(buf: np.ndarray, strokes: Sequence[np.ndarray], widths: Sequence[float]) -> np.ndarray:
    """Paint polylines (K, 2) float64 (x, y) into `buf` (H, W) uint8 in place, stroke i with widths[i]."""
    if len(strokes) != len(widths):
        raise ValueError(f"{len(strokes)} strokes but {len(widths)} widths; need one width per stroke")
    return paint_arrays(buf, *pack_lines(strokes), widths)


def pack_lines(lines: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Polylines (K, 2) as `trace_digits` gives them: all points (P, 2) float64 and offsets (S + 1,)."""
    lines = [np.asarray(points, np.float64).reshape(-1, 2) for points in lines]
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    return (np.concatenate(lines) if lines else np.zeros((0, 2))), offsets


def paint_arrays(buf: np.ndarray, points: np.ndarray, offsets: np.ndarray, widths) -> np.ndarray:
    """`paint_strokes` of strokes given as `trace_digits` gives them: points (P, 2), offsets (S + 1,)."""
    points = np.ascontiguousarray(points, np.float64)
    _paint_polylines(buf, points, np.asarray(offsets, np.int64), np.asarray(widths, np.float64).reshape(-1))
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


def widen_boxes(
    boxes: np.ndarray,
    strokes: Sequence[np.ndarray],
    widths: Sequence[float],
    read_width: float,
    factor: int = 4,
) -> np.ndarray:
    """Boxes found on strokes rendered at `read_width`, moved to the widths they were drawn at.

    The page reads a drawing at one brush width (the manifest's `input.read_brush`) and shows it at the
    user's. A round brush grows a stroke's ink by half its width on every side, so a box tight on the read
    ink becomes tight on the shown ink when each edge moves out by (w - read_width) / 2 buffer pixels,
    w the widest stroke with a point inside the box (no stroke: unchanged). web/js/app.js mirrors this.

    Args:
        boxes: (K, 4) xywh in canvas pixels, as the detector returns them for the read canvas.
        strokes: polylines (K, 2) (x, y) in buffer pixels; widths: one per stroke, as drawn.
        read_width: the brush the canvas was rendered at; factor: buffer pixels per canvas pixel.
    Returns:
        (K, 4) float64 xywh, clipped to the canvas.
    """
    out = np.array(boxes, np.float64).reshape(-1, 4)
    for box in out:
        low, high = box[:2] * factor, (box[:2] + box[2:]) * factor  # buffer px
        inside = [
            w for points, w in zip(strokes, widths, strict=True)
            if np.any(np.all((points >= low) & (points <= high), axis=1))
        ]  # fmt: skip
        grow = (max(inside) - read_width) / (2 * factor) if inside else 0.0
        left, top = max(box[0] - grow, 0.0), max(box[1] - grow, 0.0)
        right = min(box[0] + box[2] + grow, CANVAS_SIZE)
        bottom = min(box[1] + box[3] + grow, CANVAS_SIZE)
        box[:] = left, top, max(right - left, 0.0), max(bottom - top, 0.0)
    return out


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


@numba.njit(cache=True, nogil=True)
def _block_means_4(image):
    """`_block_means` of 4 x 4 blocks, unrolled: the four rows in one pass, the shift by 4 a constant
    (three times faster than the general loop on a digit's patch)."""
    h, w = image.shape[0] // 4, image.shape[1] // 4
    out = np.empty((h, w), np.uint8)
    line = np.empty(w * 4, np.uint16)
    for y in range(h):
        r0, r1, r2, r3 = image[4 * y], image[4 * y + 1], image[4 * y + 2], image[4 * y + 3]
        for x in range(w * 4):
            line[x] = np.uint16(r0[x]) + np.uint16(r1[x]) + np.uint16(r2[x]) + np.uint16(r3[x])
        for x in range(w):
            total = line[4 * x] + line[4 * x + 1] + line[4 * x + 2] + line[4 * x + 3] + np.uint16(8)
            out[y, x] = total >> np.uint16(4)
    return out


# A C-contiguous patch (the generator's buffers, every drawing) lets the compiler vectorise the row sums;
# "A" takes any view. The writable C signature is there so that numba's overload choice is not ambiguous.
_PATCHES = (numba.uint8[:, ::1], _input(numba.uint8, 2, "C"), _input(numba.uint8, 2))


@numba.njit(
    [numba.uint8[:, ::1](patch, numba.int64) for patch in _PATCHES],
    cache=True,
    nogil=True,
)
def _block_means(image, factor):
    """Integer mean of each factor x factor block, rounding half up.

    Row by row: the block's `factor` rows are summed into one line (a contiguous loop the compiler
    vectorises), then each block's `factor` column sums. uint16 sums hold 8 x 8 blocks of 255 (16,320),
    in lanes half the width of int32. The page's 4 x 4 has its own loop (`_block_means_4`, where the
    division is a constant shift): the generator reduces every re-stroked digit through it.
    """
    if factor == 4:
        return _block_means_4(image)
    h, w, area = image.shape[0] // factor, image.shape[1] // factor, factor * factor
    out = np.empty((h, w), np.uint8)
    line = np.empty(w * factor, np.uint16)
    for y in range(h):
        line[:] = image[y * factor, : w * factor]
        for dy in range(1, factor):
            row = image[y * factor + dy]
            for x in range(w * factor):
                line[x] += row[x]
        for x in range(w):
            total = np.uint16(area // 2)
            for dx in range(factor):
                total += line[x * factor + dx]
            out[y, x] = total // area
    return out


def reduce_blocks(image: np.ndarray, factor: int) -> np.ndarray:
    """The same block reduction for any (f*H, f*W) uint8 patch (the generator reduces digit patches)."""
    if image.ndim != 2 or image.shape[0] % factor or image.shape[1] % factor:
        raise ValueError(
            f"patch is {'x'.join(map(str, image.shape))}, need a 2-D patch with sides that are multiples of "
            f"{factor}"
        )
    return _block_means(np.asarray(image, np.uint8), int(factor))
