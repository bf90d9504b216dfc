"""Per-digit augmentation: seeded Keras RandomRotation / RandomZoom / RandomTranslation on a batch, then
either resizing to each digit's scale, or re-stroking (the digit's skeleton traced and redrawn with the
page's round brush at its final size, so the stroke width follows the brush, not the digit's size), and
cropping tight around its non-zero pixels.

The Keras steps and resizing work on whole batches; re-stroking loops over the digits (a few segments
each).
"""

from __future__ import annotations

import os

import numpy as np

from multidigit import strokes
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


def augment_digits(augmenter, digits: np.ndarray) -> np.ndarray:
    """Run the augmenter once over a batch.

    Args:
        augmenter: from `build_augmenter`.
        digits: (D, 28, 28) uint8 MNIST digits.
    Returns:
        (D, 28, 28) float32 in [0, 255].
    """
    if len(digits) == 0:
        return np.zeros((0, DIGIT_SIZE, DIGIT_SIZE), np.float32)
    batch = digits.astype(np.float32)[..., None]  # (D, 28, 28, 1)
    out = augmenter(batch, training=True)
    return np.asarray(out)[..., 0]


def _to_uint8(images: np.ndarray) -> np.ndarray:
    pixels = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    pixels[pixels < DUST_LEVEL] = 0
    return pixels


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


def scaled_crops(images: np.ndarray, scales: np.ndarray) -> list[np.ndarray]:
    """Zoom each (28, 28) float digit by its own factor (one batched affine transform into a frame big
    enough for the largest) and crop it tight around its non-zero pixels.

    Args:
        images: (D, 28, 28) float32 in [0, 255].
        scales: (D,) zoom factors; the digit's 28 px box becomes 28 * scale px.
    Returns:
        D uint8 arrays (h_i, w_i), dust removed, every edge row/column holding a non-zero pixel;
        a digit left empty comes back as shape (0, 0).
    """
    if np.all(scales == 1.0):
        pixels = _to_uint8(images)
    else:
        import keras

        # pad every digit to a frame that holds the largest zoom, then zoom about the frame centre:
        # output pixel p samples input c + (p - c) / s
        pad = int(np.ceil(DIGIT_SIZE * (max(1.0, float(scales.max())) - 1.0) / 2.0)) + 1
        frame = DIGIT_SIZE + 2 * pad
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))[..., None]  # (D, F, F, 1)
        inv = 1.0 / scales.astype(np.float32)
        shift = (frame - 1) / 2.0 * (1.0 - inv)
        zeros = np.zeros_like(inv)
        transform = np.stack([inv, zeros, shift, zeros, inv, shift, zeros, zeros], axis=1)
        out = keras.ops.image.affine_transform(padded, transform, interpolation="bilinear")
        pixels = _to_uint8(np.asarray(out)[..., 0])
    return [img[y0:y1, x0:x1] for img, (x0, y0, x1, y1) in zip(pixels, tight_bounds(pixels), strict=True)]


def brush_widths(params: AugmentParams, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) brush widths in buffer pixels from the triangular law `params.brush` (min, mode, max)."""
    lo, mode, hi = params.brush
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
    pts = np.concatenate(lines)
    reach = float(np.max(widths)) / 2 + 1
    origin = np.floor((pts.min(axis=0) - reach) / BUFFER_FACTOR) * BUFFER_FACTOR
    size = np.ceil((pts.max(axis=0) + reach - origin) / BUFFER_FACTOR).astype(int) * BUFFER_FACTOR
    buf = np.zeros((size[1], size[0]), np.uint8)
    strokes.paint_strokes(buf, [line - origin for line in lines], widths)
    return strokes.reduce_blocks(buf, BUFFER_FACTOR)


def restroked_crops(
    images: np.ndarray, scales: np.ndarray, params: AugmentParams, rng: np.random.Generator
) -> list[np.ndarray]:
    """Redraw each (augmented) digit from its strokes with the page's brush at its final size.

    Per digit: one brush width from `params.brush`, each stroke's width jittered by `width_jitter`, each
    stroke point moved by N(0, point_jitter) digit pixels; strokes scaled by 4 * scale into buffer
    pixels, rendered, reduced 4 x 4 and cropped tight (the brush's faint edge is real ink, as on the page).

    Args:
        images: (D, 28, 28) float32 in [0, 255] (after the Keras layers).
        scales: (D,) the digit's 28 px box becomes 28 * scale canvas px.
        params: the augment block (brush, width_jitter, point_jitter).
        rng: the shard's generator.
    Returns:
        D uint8 tight crops; a digit with no ink comes back as shape (0, 0).
    """
    skeletons = strokes.thin(images > strokes.INK_LEVEL)
    codes = strokes.neighbour_codes(skeletons)
    widths = brush_widths(params, len(images), rng)
    out = []
    for image, skeleton, code, scale, width in zip(images, skeletons, codes, scales, widths, strict=True):
        lines = strokes.digit_strokes(image, skeleton, code)
        if not lines:
            out.append(np.zeros((0, 0), np.uint8))
            continue
        j = params.width_jitter
        stroke_widths = width * rng.uniform(1 - j, 1 + j, len(lines))
        jittered = [line + rng.normal(0.0, params.point_jitter, line.shape) for line in lines]
        patch = stroke_patch([line * (BUFFER_FACTOR * scale) for line in jittered], stroke_widths)
        x0, y0, x1, y1 = tight_bounds(patch[None])[0]
        out.append(patch[y0:y1, x0:x1])
    return out
