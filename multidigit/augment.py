"""Per-digit augmentation: the random draws of seeded Keras RandomRotation / RandomZoom /
RandomTranslation layers, composed with each digit's scale into one affine matrix and applied to the
whole batch in one bilinear resampling; or, for re-stroked digits, the original digit's pen strokes
(traced once per process) moved by the same Keras matrix and redrawn with the page's round brush at the
final size (so the stroke width follows the brush, not the digit's size); then cropping tight around the
non-zero pixels.

The resampling works on whole batches; re-stroking loops over the digits (a few segments each) in one
compiled call that draws from the shard's generator itself.
"""

from __future__ import annotations

import math
import os
import threading

import numba
import numpy as np

from multidigit import stroke_cache, strokes
from multidigit.constants import DIGIT_SIZE
from multidigit.params import AugmentParams

BUFFER_FACTOR = 4  # the page's buffer pixels per canvas pixel (400 / 100)

# Interpolation leaves faint dust (values 1..7 of 255) around strokes; it is invisible but would
# widen the tight boxes, so it is zeroed before boxes are measured.
DUST_LEVEL = 8


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_augmenter(params: AugmentParams, seeds: tuple[int, int, int]):
    """A Keras pipeline rotating, zooming and shifting each digit of a batch independently.

    Args:
        params: augmentation ranges from params.yaml.
        seeds: one seed per layer; the same seeds and the same call sequence give the same output.
    Returns:
        A `keras.Sequential` taking float32 (B, 28, 28, 1) in [0, 255], to be called with training=True.
    """
    _quiet_tensorflow()
    import keras

    common = {"fill_mode": "constant", "fill_value": 0.0, "interpolation": "bilinear"}
    zoom = (-params.zoom, params.zoom)
    return keras.Sequential(
        [
            keras.layers.RandomRotation(params.rotate_deg / 360.0, seed=seeds[0], **common),
            keras.layers.RandomZoom(zoom, zoom, seed=seeds[1], **common),
            keras.layers.RandomTranslation(params.translate, params.translate, seed=seeds[2], **common),
        ]
    )


def _matrices(params) -> np.ndarray:
    """Keras's 8-number projective transforms (B, 8), affine here, as (B, 3, 3) float64 matrices."""
    v = np.asarray(params, np.float64).reshape(-1, 8)
    out = np.zeros((len(v), 3, 3))
    out[:, 0], out[:, 1, :], out[:, 2, 2] = v[:, 0:3], v[:, 3:6], 1.0
    return out


def _draw_matrices(augmenter, images):
    """The three layers' Keras matrices (B, 8) for a batch shaped like `images` (only its shape is read)."""
    rotate, zoom, shift = augmenter.layers
    r = rotate.get_random_transformation(images, training=True)["rotation_matrix"]
    z = zoom.get_random_transformation(images, training=True)
    zooms = zoom.backend.numpy.concatenate([z["width_zoom"], z["height_zoom"]], axis=1)
    z = zoom._get_zoom_matrix(zooms, DIGIT_SIZE, DIGIT_SIZE)
    t = shift._get_translation_matrix(shift.get_random_transformation(images, training=True)["translations"])
    return r, z, t


def random_transforms(augmenter, n: int) -> np.ndarray:
    """The augmenter's random rotation, zoom and translation of `n` digits, composed into one matrix each.

    Each layer draws its transform from its own seeded generator, as it would inside `augmenter(...)`.
    A Keras matrix maps an output pixel to the input pixel it samples, so rotating, then zooming, then
    shifting samples the digit at R Z T p. A `shard_augmenter` draws through its traced graph, one call
    instead of ~150 eager ops (the same kernels, so the same numbers: tested).

    Returns:
        (n, 3, 3) float64, output (x, y, 1) -> input (x, y, 1) in 28 px digit coordinates.
    """
    graph = getattr(augmenter, "graph_draws", None)
    if graph is not None:
        import tensorflow as tf

        r, z, t = graph(tf.constant(n, tf.int32))
    else:
        import keras

        # Only the batch's shape is read; a symbolic tensor gives it without a zero batch per layer.
        r, z, t = _draw_matrices(augmenter, keras.KerasTensor((n, DIGIT_SIZE, DIGIT_SIZE, 1)))
    return _matrices(r) @ _matrices(z) @ _matrices(t)


_SHARD_AUGMENTERS = threading.local()  # per thread: one shard at a time, each re-seeds it


def shard_augmenter(params: AugmentParams, seeds: tuple[int, int, int]):
    """`build_augmenter(params, seeds)` for one shard, drawing like a new one but built once per thread.

    Building the three layers cost 7% of a stage-3 shard, and each new augmenter would trace its graph
    again. The cached one is re-seeded instead: a SeedGenerator's state starts at [seed, 0], so assigning
    that gives the draws a new layer would give. Per thread, since threads make shards concurrently.
    """
    import tensorflow as tf

    cache = _SHARD_AUGMENTERS.__dict__.setdefault("by_params", {})
    key = (params.rotate_deg, params.zoom, params.translate)
    if key not in cache:
        augmenter = build_augmenter(params, seeds)

        # The layers read only the batch's shape, never its pixels: a batch of no channels has that shape
        # and no bytes to fill (one channel zero-filled 3 kB a digit: 0.25 of a shard's 1.2 ms of draws).
        @tf.function(reduce_retracing=True)
        def graph_draws(n):
            return _draw_matrices(augmenter, tf.zeros((n, DIGIT_SIZE, DIGIT_SIZE, 0)))

        augmenter.graph_draws = graph_draws
        cache[key] = augmenter
    augmenter = cache[key]
    for layer, seed in zip(augmenter.layers, seeds, strict=True):
        layer.seed = seed
        layer.generator.state.assign(np.array([seed, 0], layer.generator.state.dtype))
    return augmenter


# The resampling is TensorFlow's ImageProjectiveTransformV3 kernel (bilinear, constant fill 0; what
# keras.ops.image.affine_transform ran), compiled here with the same float32 operations in the same order
# (tensorflow/core/kernels/image/image_ops.h, ProjectiveGenerator): the same bytes at twice the speed, and
# the digits are read in place instead of being copied into padded frames and handed to TensorFlow twice.
_DIGITS = [numba.types.Array(t, 3, "C", readonly=True) for t in (numba.uint8, numba.float32)]


@numba.njit(cache=True, nogil=True)
def _sample(digit, t, pad, ox, oy):
    """Output pixel (ox, oy) of `_resample`: the (H, W) digit, zero-padded by `pad`, sampled bilinearly at
    the 8-number transform t (output (x, y) -> input ((t0 x + t1 y + t2) / k, (t3 x + t4 y + t5) / k),
    k = t6 x + t7 y + 1); samples outside the digit read 0 (the padding and the fill alike)."""
    h, w = digit.shape
    zero, one = np.float32(0), np.float32(1)
    fx, fy = np.float32(ox), np.float32(oy)
    k = t[6] * fx + t[7] * fy + one
    if k == zero:
        return zero
    x = t[0] * fx + t[1] * fy + t[2]
    y = t[3] * fx + t[4] * fy + t[5]
    if k != one:  # dividing by exactly 1 changes nothing (IEEE), and affine transforms always have k = 1
        x, y = x / k, y / k
    x0, y0 = np.floor(x), np.floor(y)
    c0, r0 = int(x0) - pad, int(y0) - pad  # digit column and row of (x0, y0)
    v00 = np.float32(digit[r0, c0]) if 0 <= r0 < h and 0 <= c0 < w else zero
    v01 = np.float32(digit[r0, c0 + 1]) if 0 <= r0 < h and 0 <= c0 + 1 < w else zero
    v10 = np.float32(digit[r0 + 1, c0]) if 0 <= r0 + 1 < h and 0 <= c0 < w else zero
    v11 = np.float32(digit[r0 + 1, c0 + 1]) if 0 <= r0 + 1 < h and 0 <= c0 + 1 < w else zero
    return _blend(x, y, x0, y0, v00, v01, v10, v11)


@numba.njit(cache=True, nogil=True)
def _blend(x, y, x0, y0, v00, v01, v10, v11):
    """The bilinear mix of the four float32 neighbours of (x, y) around its floor (x0, y0), in TensorFlow's
    order."""
    x1, y1 = x0 + np.float32(1), y0 + np.float32(1)
    top = (x1 - x) * v00 + (x - x0) * v01
    bottom = (x1 - x) * v10 + (x - x0) * v11
    return (y1 - y) * top + (y - y0) * bottom


@numba.njit(
    [numba.float32[:, :, ::1](d, numba.float32[:, ::1], numba.int64, numba.int64) for d in _DIGITS],
    cache=True,
    nogil=True,
)
def _resample(digits, transforms, pad, frame):
    """(D, frame, frame) float32: each digit resampled at its transform (`_sample`)."""
    out = np.empty((digits.shape[0], frame, frame), np.float32)
    for b in range(digits.shape[0]):
        for oy in range(frame):
            for ox in range(frame):
                out[b, oy, ox] = _sample(digits[b], transforms[b], pad, ox, oy)
    return out


@numba.njit(cache=True, nogil=True)
def _byte(v):
    """One resampled float32 value as its uint8: rounded half to even, clipped to [0, 255], dust zeroed."""
    v = np.rint(v)
    v = v if v > 0 else np.float32(0)  # np.clip(v, 0, 255)
    v = v if v < 255 else np.float32(255)
    byte = np.uint8(v)
    return byte if byte >= DUST_LEVEL else np.uint8(0)


_PATCHES = [numba.types.Array(t, 2, "C", readonly=True) for t in (numba.uint8, numba.float32)]  # writable too
_BOUNDS = [numba.types.UniTuple(numba.int64, 4)(patch) for patch in _PATCHES]


@numba.njit(_BOUNDS, cache=True, nogil=True)
def ink_bounds(patch: np.ndarray) -> tuple[int, int, int, int]:
    """`tight_bounds` of one C-contiguous (H, W) uint8 (or float32) patch, without numpy's per-call cost
    (the re-stroked digits, the drawn layouts and the resampled digits measure thousands of small patches).

    Returns:
        (x0, y0, x1, y1) exclusive bounds of the non-zero pixels; (0, 0, 0, 0) for an empty patch.
    """
    h, w = patch.shape
    x0, y0, x1, y1 = w, h, 0, 0
    for y in range(h):
        for x in range(w):
            if patch[y, x]:
                x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x + 1), max(y1, y + 1)
    return (0, 0, 0, 0) if x1 == 0 else (x0, y0, x1, y1)


@numba.njit(cache=True, nogil=True)
def _ink_window(digit, t, pad, frame):
    """(ox0, oy0, ox1, oy1): the output pixels of the frame that can sample the digit's ink.

    A sample reads the ink only if its input point lies within a pixel of the ink's bounding box; the
    affine map's inverse carries that box's corners to the output, widened by 2 px (the float32 forward
    map rounds ~1e-5 px differently). Non-affine transforms, or no ink: the whole frame / nothing."""
    c0, r0, c1, r1 = ink_bounds(digit)
    if r1 == 0:
        return 0, 0, 0, 0
    a, b, c, d = float(t[0]), float(t[1]), float(t[3]), float(t[4])
    det = a * d - b * c
    if t[6] != 0 or t[7] != 0 or det == 0:
        return 0, 0, frame, frame
    lo_x, lo_y, hi_x, hi_y = math.inf, math.inf, -math.inf, -math.inf
    for ix in (pad + c0 - 1.0, pad + c1 + 0.0):
        for iy in (pad + r0 - 1.0, pad + r1 + 0.0):
            u, v = ix - float(t[2]), iy - float(t[5])
            ox, oy = (d * u - b * v) / det, (a * v - c * u) / det
            lo_x, lo_y, hi_x, hi_y = min(lo_x, ox), min(lo_y, oy), max(hi_x, ox), max(hi_y, oy)
    return (
        max(0, math.floor(lo_x) - 2),
        max(0, math.floor(lo_y) - 2),
        min(frame, math.ceil(hi_x) + 3),
        min(frame, math.ceil(hi_y) + 3),
    )


@numba.njit(cache=True, nogil=True)
def _end_to_end(crops):
    """A compiled loop's (h, w) uint8 crops as one flat array, end to end (`unpack_crops` splits it)."""
    total = 0
    for crop in crops:
        total += crop.size
    flat, at = np.empty(total, np.uint8), 0
    for crop in crops:
        flat[at : at + crop.size] = crop.copy().reshape(crop.size)  # a crop is a strided view: copy first
        at += crop.size
    return flat


# zero border of a digit's padded copy: a window whose reads all land inside it skips the bounds checks
SAFE_MARGIN = 8


@numba.njit(cache=True, nogil=True)
def _sample_row(padded, t, shift, oy, ox0, points, values, out_row) -> None:
    """out_row[i] = the byte (`_byte`) of output pixel (ox0 + i, oy) of an affine t (k = 1), sampled from
    the digit's copy inside a zero border (`padded`, the digit at row and column `shift`), for every i <
    len(out_row): `_sample`'s float32 operations, with no bounds checks (the caller proved every read lands
    inside the copy, where the border's zeros are what `_sample` reads outside the digit).

    Three loops over the row, so that the arithmetic ones vectorise: the input points, the four
    neighbours' reads, the blend. `points` (2, n) and `values` (4, n) are float32 scratch, n >= the row.
    One pixel at a time, a scaled stage-3 digit took ~10 us; ~7 like this."""
    fy = np.float32(oy)
    xs, ys = points[0], points[1]
    for i in range(len(out_row)):
        fx = np.float32(ox0 + i)
        xs[i] = t[0] * fx + t[1] * fy + t[2]
        ys[i] = t[3] * fx + t[4] * fy + t[5]
    for i in range(len(out_row)):
        c0, r0 = int(np.floor(xs[i])) + shift, int(np.floor(ys[i])) + shift
        values[0, i], values[1, i] = np.float32(padded[r0, c0]), np.float32(padded[r0, c0 + 1])
        values[2, i], values[3, i] = np.float32(padded[r0 + 1, c0]), np.float32(padded[r0 + 1, c0 + 1])
    for i in range(len(out_row)):
        x, y = xs[i], ys[i]
        v = _blend(x, y, np.floor(x), np.floor(y), values[0, i], values[1, i], values[2, i], values[3, i])
        out_row[i] = _byte(v)


@numba.njit(cache=True, nogil=True)
def _reads_inside(t, pad, window, h, w) -> bool:
    """Whether every bilinear read of the affine t over the output window (ox0, oy0, ox1, oy1) falls within
    SAFE_MARGIN - 1 px of the (h, w) digit (the point's floor in [-(M - 1), size - 3 + M], M = SAFE_MARGIN,
    its reads one further right and down). The input point is affine in the output pixel, so its extremes
    sit at the window's corners; the float32 arithmetic is ~1e-4 px off that, inside the 1 px slack left
    to the copy's edge on each side."""
    if t[6] != 0 or t[7] != 0:
        return False
    ox0, oy0, ox1, oy1 = window
    lo = -(SAFE_MARGIN - 1.0)
    for ox in (float(ox0), float(ox1 - 1)):
        for oy in (float(oy0), float(oy1 - 1)):
            x = t[0] * ox + t[1] * oy + t[2] - pad
            y = t[3] * ox + t[4] * oy + t[5] - pad
            if not (lo <= x <= w - 3.0 + SAFE_MARGIN and lo <= y <= h - 3.0 + SAFE_MARGIN):
                return False
    return True


@numba.njit(
    [
        numba.types.Tuple((numba.uint8[::1], numba.int64[:, ::1]))(
            d, numba.float32[:, ::1], numba.int64, numba.int64
        )
        for d in _DIGITS
    ],
    cache=True,
    nogil=True,
)
def _warp_crops(digits, transforms, pad, frame):
    """`_resample`'s frames as bytes (`_byte`), each cropped tight, without making the frames: a digit is
    resampled only over its `_ink_window` (the rest of its frame samples no ink and is 0), from a copy in
    a zero border where every read lands inside it (`_reads_inside`: most digits). Returns the crops end
    to end (flat uint8) and their (D, 2) (h, w); an empty crop is (0, 0)."""
    crops, shapes = [], np.zeros((digits.shape[0], 2), np.int64)
    h, w = digits.shape[1], digits.shape[2]
    padded = np.zeros((h + 2 * SAFE_MARGIN, w + 2 * SAFE_MARGIN), digits.dtype)
    points, values = np.empty((2, frame), np.float32), np.empty((4, frame), np.float32)  # `_sample_row`'s
    for b in range(digits.shape[0]):
        window = _ink_window(digits[b], transforms[b], pad, frame)
        ox0, oy0, ox1, oy1 = window
        out = np.zeros((max(oy1 - oy0, 0), max(ox1 - ox0, 0)), np.uint8)
        if out.size and _reads_inside(transforms[b], pad, window, h, w):
            padded[SAFE_MARGIN : SAFE_MARGIN + h, SAFE_MARGIN : SAFE_MARGIN + w] = digits[b]
            for oy in range(oy0, oy1):
                _sample_row(padded, transforms[b], SAFE_MARGIN - pad, oy, ox0, points, values, out[oy - oy0])
        else:
            for oy in range(oy0, oy1):
                for ox in range(ox0, ox1):
                    out[oy - oy0, ox - ox0] = _byte(_sample(digits[b], transforms[b], pad, ox, oy))
        x0, y0, x1, y1 = ink_bounds(out)
        crops.append(out[y0:y1, x0:x1])
        shapes[b, 0], shapes[b, 1] = y1 - y0, x1 - x0
    return _end_to_end(crops), shapes


def _frame_transforms(transforms: np.ndarray, scales: np.ndarray, pad: int) -> np.ndarray:
    """(D, 8) float32 transforms of the digits padded by `pad`: augmentation, then zoom about the centre."""
    frame = DIGIT_SIZE + 2 * pad
    c = (frame - 1) / 2.0
    scale = np.zeros((len(scales), 3, 3))
    scale[:, 0, 0] = scale[:, 1, 1] = 1.0 / scales
    scale[:, 0, 2] = scale[:, 1, 2] = c * (1.0 - 1.0 / scales)
    scale[:, 2, 2] = 1.0
    move = np.eye(3)
    move[:2, 2] = pad  # digit -> frame coordinates
    total = move @ transforms @ np.linalg.inv(move) @ scale  # frame output -> frame input
    return total.reshape(-1, 9)[:, :8].astype(np.float32)


def warp_digits(digits: np.ndarray, transforms: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
    """Apply each digit's transform, then its scale, in ONE bilinear resampling of the batch.

    The digits are padded to a frame that holds the largest scale; a scale s zooms about the frame's
    centre c (output pixel p samples c + (p - c) / s), folded into the same matrix as the augmentation.

    Args:
        digits: (D, 28, 28) uint8 or float digits.
        transforms: (D, 3, 3) from `random_transforms`.
        scales: (D,) zoom factors (None: 1, and the 28 px frame).
    Returns:
        (D, F, F) float32 in [0, 255], F = 28 plus the padding the largest scale needs.
    """
    scales = np.ones(len(digits)) if scales is None else np.asarray(scales, np.float64)
    if len(digits) == 0:
        return np.zeros((0, DIGIT_SIZE, DIGIT_SIZE), np.float32)
    return _resample(*_warp_args(digits, transforms, scales))


def _warp_args(digits: np.ndarray, transforms: np.ndarray, scales: np.ndarray) -> tuple:
    """(digits, frame transforms, pad, frame) of a batch: the frame holds the batch's largest scale."""
    top = float(scales.max())
    pad = int(np.ceil(DIGIT_SIZE * (top - 1.0) / 2.0)) + 1 if top > 1 else 0
    digits = np.ascontiguousarray(digits, np.uint8 if digits.dtype == np.uint8 else np.float32)
    return digits, _frame_transforms(transforms, scales, pad), pad, DIGIT_SIZE + 2 * pad


def augment_digits(augmenter, digits: np.ndarray) -> np.ndarray:
    """Augment a batch once: each digit rotated, zoomed and shifted by the augmenter's random draws.

    Args:
        augmenter: from `build_augmenter`.
        digits: (D, 28, 28) uint8 MNIST digits.
    Returns:
        (D, 28, 28) float32 in [0, 255].
    """
    return warp_digits(digits, random_transforms(augmenter, len(digits)))


def tight_bounds(images: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) exclusive bounds of the non-zero pixels of each image in a (B, H, W) stack.

    Returns:
        (B, 4) int; an all-zero image gets (0, 0, 0, 0).
    """
    rows = images.any(axis=2)  # (B, H)
    cols = images.any(axis=1)  # (B, W)
    h, w = rows.shape[1], cols.shape[1]
    y0 = rows.argmax(axis=1)
    y1 = h - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = w - cols[:, ::-1].argmax(axis=1)
    bounds = np.stack([x0, y0, x1, y1], axis=1)
    bounds[~rows.any(axis=1)] = 0
    return bounds


def scaled_crops(images: np.ndarray, scales: np.ndarray, transforms: np.ndarray | None = None) -> list:
    """Zoom each (28, 28) digit by its own factor (after its augmentation `transforms`, when given, in the
    same resampling: `warp_digits`) and crop it tight around its non-zero pixels.

    Args:
        images: (D, 28, 28) digits in [0, 255].
        scales: (D,) zoom factors; the digit's 28 px box becomes 28 * scale px.
        transforms: (D, 3, 3) from `random_transforms`, or None for none.
    Returns:
        D uint8 arrays (h_i, w_i), dust removed, every edge row/column holding a non-zero pixel;
        a digit left empty comes back as shape (0, 0).
    """
    return unpack_crops(*scaled_packed(images, scales, transforms))


def scaled_packed(
    images: np.ndarray, scales: np.ndarray, transforms: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`scaled_crops` end to end: (flat uint8, (D, 2) (h, w)), the form the canvas composer takes (a
    stage-3 shard would otherwise make and join thousands of small arrays)."""
    transforms = np.broadcast_to(np.eye(3), (len(images), 3, 3)) if transforms is None else transforms
    if len(images) == 0:
        return np.zeros(0, np.uint8), np.zeros((0, 2), np.int64)
    return _warp_crops(*_warp_args(images, transforms, np.asarray(scales, np.float64)))


def unpack_crops(flat: np.ndarray, shapes: np.ndarray) -> list[np.ndarray]:
    """The crops a compiled loop returns end to end (flat uint8, (D, 2) (h, w)) as D arrays (views)."""
    ends = np.cumsum(shapes[:, 0] * shapes[:, 1]).tolist()
    return [flat[e - h * w : e].reshape(h, w) for e, (h, w) in zip(ends, shapes.tolist(), strict=True)]


def brush_widths(law: tuple[float, float, float], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) brush widths in buffer pixels from the triangular `law` (min, mode, max)."""
    lo, mode, hi = law
    if lo == hi:  # one fixed width (numpy refuses a degenerate triangle)
        return np.full(n, lo)
    return rng.triangular(lo, mode, hi, n)


def stroke_patch(lines: list[np.ndarray], widths: np.ndarray) -> np.ndarray:
    """Render buffer-pixel polylines into the smallest patch that holds them, reduced like the page.

    The patch origin sits on the 4 x 4 block grid, so the result equals the page's canvas pixels of the
    same strokes drawn at an integer canvas position.

    Returns:
        uint8 (h, w) canvas-pixel patch, not yet cropped.
    """
    points, offsets = strokes.pack_lines(lines)
    return _stroke_patch(points, offsets, np.asarray(widths, np.float64).reshape(-1))


# The patch, its crop and the re-stroking loop are compiled: per digit, a dozen numpy calls on a few
# hundred points cost more than the painting. They call strokes' compiled brush and reduction directly,
# compiled into this file's kernels: numba's on-disk cache is keyed on this file's source alone, so a
# change to those kernels takes effect here only once this file changes too (or __pycache__ is cleared):
# STROKE_KERNELS counts those changes (2: the brush evaluates a segment's edge pixels in one vector loop).
STROKE_KERNELS = 2
_POINTS = numba.types.Array(numba.float64, 2, "C", readonly=True)


@numba.njit(numba.uint8[:, ::1](_POINTS, numba.int64[::1], numba.float64[::1]), cache=True, nogil=True)
def _stroke_patch(points, offsets, widths):
    """`stroke_patch` of strokes as arrays: points (P, 2) buffer pixels, offsets (S + 1,)."""
    reach = widths.max() / 2 + 1
    origin, size = np.empty(2), np.empty(2, np.int64)
    for a in range(2):  # x, then y: the numpy expressions of the block-aligned bounds, per coordinate
        origin[a] = np.floor((points[:, a].min() - reach) / BUFFER_FACTOR) * BUFFER_FACTOR
        size[a] = int(np.ceil((points[:, a].max() + reach - origin[a]) / BUFFER_FACTOR)) * BUFFER_FACTOR
    buf = np.zeros((size[1], size[0]), np.uint8)
    local = np.empty_like(points)
    for k in range(len(points)):
        local[k, 0], local[k, 1] = points[k, 0] - origin[0], points[k, 1] - origin[1]
    strokes._paint_polylines(buf, local, offsets, widths)
    return strokes._block_means(buf, BUFFER_FACTOR)


# numba's type of the shard's np.random.Generator: compiled code draws from the same bit generator state
# with numpy's algorithms (the bytes rng.uniform / normal / integers give in Python, in the same order).
RNG = numba.typeof(np.random.default_rng(0))


@numba.njit(
    numba.types.Tuple((numba.uint8[::1], numba.int64[:, ::1]))(
        _POINTS,
        numba.int64[::1],
        numba.int64[::1],
        numba.float64[:, :, ::1],
        numba.float64[::1],
        numba.float64[::1],
        numba.float64,
        numba.float64,
        RNG,
    ),
    cache=True,
    nogil=True,
)
def _restroke(points, offsets, digit_strokes, affines, scales, widths, width_jitter, point_jitter, rng):
    """`restroked_packed` of packed strokes (`SplitStrokes.packed`): the crops end to end (flat uint8) and
    their (D, 2) (h, w)."""
    crops, shapes = [], np.zeros((len(scales), 2), np.int64)
    for i in range(len(scales)):
        s0, s1 = digit_strokes[i], digit_strokes[i + 1]
        if s1 == s0:  # no strokes: shape (0, 0), no draws
            continue
        p0, p1 = offsets[s0], offsets[s1]
        local = offsets[s0 : s1 + 1] - p0
        stroke_widths = widths[i] * rng.uniform(1 - width_jitter, 1 + width_jitter, s1 - s0)
        # one draw for all points: the generator fills it in the order the per-stroke draws took
        noise = rng.normal(0.0, point_jitter, (p1 - p0, 2))
        a = affines[i]
        moved = np.empty((p1 - p0, 2))
        for k in range(p1 - p0):  # pixel centres sit at +0.5, Keras's matrices act on pixel indices
            x, y = points[p0 + k, 0] - 0.5, points[p0 + k, 1] - 0.5
            moved[k, 0] = a[0, 0] * x + a[0, 1] * y + a[0, 2] + 0.5 + noise[k, 0]
            moved[k, 1] = a[1, 0] * x + a[1, 1] * y + a[1, 2] + 0.5 + noise[k, 1]
        patch = _stroke_patch(moved * (BUFFER_FACTOR * scales[i]), local, stroke_widths)
        x0, y0, x1, y1 = ink_bounds(patch)
        crops.append(patch[y0:y1, x0:x1])
        shapes[i, 0], shapes[i, 1] = y1 - y0, x1 - x0
    return _end_to_end(crops), shapes


def restroked_packed(
    digits: np.ndarray,
    ids: np.ndarray,
    transforms: np.ndarray | None,
    scales: np.ndarray,
    params: AugmentParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Redraw digits from their strokes with the page's brush, moved by their Keras transform, at their
    final size.

    Per digit: its MNIST original's strokes (traced once per process, `stroke_cache`), the points moved by
    the inverse of the digit's Keras matrix (the map the resampling would apply to the pixels), one brush
    width from `params.brush`, each stroke's width jittered by `width_jitter`, each point moved by
    N(0, point_jitter) digit pixels; strokes scaled by 4 * scale into buffer pixels, rendered, reduced 4 x 4
    and cropped tight (the brush's faint edge is real ink, as on the page).

    Args:
        digits: the split's (M, 28, 28) uint8 digits; ids: (D,) the rows to redraw.
        transforms: (D, 3, 3) from `random_transforms`, or None for none.
        scales: (D,) the digit's 28 px box becomes 28 * scale canvas px.
        params: the augment block (brush, width_jitter, point_jitter).
        rng: the shard's generator.
    Returns:
        The D uint8 tight crops end to end (flat) and their (D, 2) (h, w); a digit with no ink has (0, 0).
    """
    points, offsets, digit_strokes = stroke_cache.for_split(digits).packed(ids)
    n = len(digit_strokes) - 1
    transforms = np.tile(np.eye(3), (n, 1, 1)) if transforms is None else np.asarray(transforms, np.float64)
    affines = np.ascontiguousarray(np.linalg.inv(transforms)[:, :2, :])  # input pixel -> output pixel
    widths = np.asarray(brush_widths(params.brush, n, rng), np.float64)
    scales = np.ascontiguousarray(scales, np.float64)
    jitter = (float(params.width_jitter), float(params.point_jitter))
    return _restroke(points, offsets, digit_strokes, affines, scales, widths, *jitter, rng)
