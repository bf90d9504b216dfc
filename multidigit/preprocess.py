"""The one definition of the model input: uint8 canvases -> float32 (B, 100, 100, 1) in [0, 1].

Training, evaluation, export, the Flask /api/detect route and the page (web/js/detector.js) all use it.
"""

from __future__ import annotations

import numpy as np

from multidigit.constants import CANVAS_SIZE

PIXEL_SCALE = 255.0  # uint8 grey level of full ink


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Scale canvases to the detector's input.

    Args:
        images: uint8 (B, 100, 100) white digits on black (a single (100, 100) canvas is also taken).
    Returns:
        float32 (B, 100, 100, 1) in [0, 1].
    Raises:
        ValueError: the array is not (B, 100, 100) / (100, 100) or not uint8.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != (CANVAS_SIZE, CANVAS_SIZE):
        raise ValueError(f"images: shape {images.shape}, need (B, {CANVAS_SIZE}, {CANVAS_SIZE}) uint8")
    if images.dtype != np.uint8:
        raise ValueError(f"images: dtype {images.dtype}, need uint8 (0-255)")
    return (images.astype(np.float32) / PIXEL_SCALE)[..., None]
