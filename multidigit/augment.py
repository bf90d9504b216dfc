"""Per-digit augmentation: seeded Keras RandomRotation / RandomZoom / RandomTranslation on a batch, then
resizing to each digit's scale and cropping tight around its non-zero pixels.

Everything here works on whole batches; the only Python loops run over distinct output sizes.
"""

from __future__ import annotations

import os

import numpy as np

from multidigit.constants import DIGIT_SIZE
from multidigit.params import AugmentParams

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
