"""The drawing reduction: a drawn picture -> the uint8 (100, 100) canvas the model was trained on.

ONE definition, mirrored line for line by `web/js/preprocess.js` (the browser tests check both give
the same bytes on the same drawing):

1. The page draws white strokes on black on a square buffer of side `f * 100` (f = 4: 400 x 400);
   the brush width is in buffer pixels (default 10 = 2.5 canvas pixels, an MNIST stroke at scale 1).
2. Grey level = the red channel (the drawing is grey, so R = G = B).
3. Area-average each f x f block, rounding half up in integers: `(sum + f*f // 2) // (f*f)`.
   The result is a uint8 (100, 100) image like a training canvas (white digits on black).
4. `multidigit.preprocess.to_model_input` then scales it to float32 [0, 1] for the model.

Also decodes the two bodies `POST /api/detect` accepts (a PNG, or JSON pixels) into that canvas.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from multidigit.constants import CANVAS_SIZE

MAX_FACTOR = 8  # largest accepted drawing: 800 x 800 (a 1 MB body limit applies before this)


class InputError(ValueError):
    """A request body that cannot become a (100, 100) canvas; the message is shown to the client."""


def reduce_drawing(image: np.ndarray) -> np.ndarray:
    """Area-average a square grey drawing of side f*100 down to the model's canvas.

    Args:
        image: uint8 (f*100, f*100) grey drawing, white on black, 1 <= f <= MAX_FACTOR.
    Returns:
        uint8 (100, 100) canvas.
    """
    side = image.shape[0]
    factor = side // CANVAS_SIZE
    if image.ndim != 2 or image.shape != (side, side) or side % CANVAS_SIZE or not 1 <= factor <= MAX_FACTOR:
        raise InputError(
            f"image is {'x'.join(map(str, image.shape))}, need a square grey image of side 100, 200, ..., "
            f"{CANVAS_SIZE * MAX_FACTOR}"
        )
    area = factor * factor
    # (100, f, 100, f) blocks; int64 sums cannot overflow (at most 64 * 255).
    sums = image.astype(np.int64).reshape(CANVAS_SIZE, factor, CANVAS_SIZE, factor).sum(axis=(1, 3))
    return ((sums + area // 2) // area).astype(np.uint8)


def png_to_canvas(body: bytes) -> np.ndarray:
    """Decode a PNG drawing (grey, RGB or RGBA; side 100*f) to the uint8 (100, 100) canvas.

    The grey level is the red channel, as on the page; alpha is ignored (the page draws opaque).
    """
    try:
        with Image.open(io.BytesIO(body)) as img:
            if img.format != "PNG":
                raise InputError(f"body is {img.format}, need a PNG")
            if max(img.size) > CANVAS_SIZE * MAX_FACTOR:
                raise InputError(f"image is {img.size[0]}x{img.size[1]}, at most 800x800")
            img.load()
            grey = img.getchannel("R") if img.mode in ("RGB", "RGBA") else img.convert("L")
            array = np.asarray(grey, dtype=np.uint8)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"body is not a decodable PNG ({type(exc).__name__})") from None
    return reduce_drawing(array)


def json_to_canvas(body: bytes) -> np.ndarray:
    """Decode `{"pixels": [[...100 numbers 0..255...] x 100]}` to the uint8 (100, 100) canvas.

    Numbers are grey levels like a training canvas (white digit = 255 on black = 0), rounded.
    """
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"body is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or "pixels" not in doc:
        raise InputError('JSON body needs a "pixels" key: a 100 x 100 array of numbers 0..255')
    pixels = doc["pixels"]
    if not isinstance(pixels, list) or len(pixels) != CANVAS_SIZE:
        raise InputError(f"pixels must be a list of {CANVAS_SIZE} rows")
    for i, row in enumerate(pixels):
        if not isinstance(row, list) or len(row) != CANVAS_SIZE:
            raise InputError(f"pixels[{i}] must be a list of {CANVAS_SIZE} numbers")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in row):
            raise InputError(f"pixels[{i}] holds a value that is not a number")
    array = np.asarray(pixels, dtype=np.float64)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise InputError("pixels must be finite numbers in 0..255")
    return np.floor(array + 0.5).astype(np.uint8)


def canvas_from_body(body: bytes, content_type: str) -> np.ndarray:
    """Dispatch on the content type: image/png or application/json.

    Args:
        body: the raw request body.
        content_type: the request's mimetype (without parameters).
    Returns:
        uint8 (100, 100) canvas.
    """
    if content_type == "image/png":
        return png_to_canvas(body)
    if content_type == "application/json":
        return json_to_canvas(body)
    shown = content_type or "(none)"
    raise InputError(f"content type {shown!r} not accepted, use image/png or application/json")
