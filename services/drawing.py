"""The drawing reduction: a drawn picture -> the uint8 (100, 100) canvas the model was trained on.

ONE definition (`multidigit.strokes.reduce_drawing`, imported here), mirrored line for line by
`web/js/preprocess.js` (the browser tests check both give the same bytes on the same drawing):

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
import struct
from typing import Any

import numpy as np
from PIL import Image

from multidigit import strokes
from multidigit.constants import CANVAS_SIZE
from multidigit.strokes import MAX_FACTOR  # largest drawing: 800 x 800 (the 1 MB body limit is first)

MAX_SIDE = CANVAS_SIZE * MAX_FACTOR
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# First bytes of the images most often sent by mistake, so the error can name what was sent.
OTHER_FORMATS = {b"GIF8": "GIF", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"RIFF": "WebP", b"II*\0": "TIFF"}


class InputError(ValueError):
    """A request body that cannot become a (100, 100) canvas; the message is shown to the client."""

    status = 400


class MediaTypeError(InputError):
    """A body of a content type the service does not read (HTTP 415 Unsupported Media Type)."""

    status = 415


def reduce_drawing(image: np.ndarray) -> np.ndarray:
    """THE reduction, `multidigit.strokes.reduce_drawing`; a drawing of another size is an InputError.

    Args:
        image: uint8 (f*100, f*100) grey drawing, white on black, 1 <= f <= MAX_FACTOR.
    Returns:
        uint8 (100, 100) canvas.
    """
    try:
        return strokes.reduce_drawing(image)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _png_size(body: bytes) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, read before PIL decodes anything (bombs stop here)."""
    if not body.startswith(PNG_SIGNATURE):
        kind = next((name for magic, name in OTHER_FORMATS.items() if body.startswith(magic)), None)
        if kind is None and body.lstrip()[:1] in (b"{", b"["):
            kind = "JSON (send it as application/json)"
        raise InputError(f"body is {kind or 'not a PNG (no PNG signature)'}, need a PNG")
    if len(body) < 24 or body[12:16] != b"IHDR":
        raise InputError("body is not a decodable PNG: no IHDR header chunk after the signature")
    width, height = struct.unpack(">II", body[16:24])
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise InputError(f"image is {width}x{height}, at most {MAX_SIDE}x{MAX_SIDE}")
    return width, height


def _grey_levels(img: Image.Image) -> np.ndarray:
    """uint8 (H, W) grey levels of a decoded PNG: the red channel for colour, as the page reads its canvas."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit grey: 0..65535 -> 0..255 rounded half up (PIL's convert("L") would clip at 255 instead).
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return ((wide + 128) // 257).astype(np.uint8)
    if img.mode in ("RGB", "RGBA"):
        return np.asarray(img.getchannel("R"), dtype=np.uint8)
    if img.mode in ("P", "PA"):  # palette: look the colours up, then take red like any colour image
        return np.asarray(img.convert("RGB").getchannel("R"), dtype=np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)  # L, LA, 1


def png_to_canvas(body: bytes) -> np.ndarray:
    """Decode a PNG drawing (grey 1..16 bit, palette, RGB or RGBA; side 100*f) to the uint8 (100, 100) canvas.

    The grey level is the red channel, as on the page; alpha is ignored (the page draws opaque). The size
    is checked from the header first, so a small body declaring a huge image is refused undecoded.
    """
    width, height = _png_size(body)
    try:
        with Image.open(io.BytesIO(body), formats=["PNG"]) as img:
            if img.size != (width, height):
                raise InputError(
                    f"PNG header says {width}x{height} but PIL reads {img.size[0]}x{img.size[1]}"
                )
            img.load()
            array = _grey_levels(img)
    except InputError:
        raise
    except Exception as exc:
        # Any decoder failure on an untrusted body is the client's: PIL raises OSError, ValueError,
        # SyntaxError, EOFError, zlib.error, DecompressionBombError (not an OSError), ...
        detail = (str(exc).splitlines() or [""])[0][:120]
        raise InputError(f"body is not a decodable PNG ({type(exc).__name__}: {detail})") from None
    return reduce_drawing(array)


def _json_document(body: bytes) -> Any:
    """json.loads with every failure (syntax, encoding, nesting depth) turned into one InputError line."""
    if body[:8] == PNG_SIGNATURE:
        raise InputError("body is a PNG, not JSON: send it as image/png")
    try:
        return json.loads(body)
    except RecursionError:
        raise InputError('JSON body is nested too deeply; need {"pixels": [[...], ...]} (3 levels)') from None
    except json.JSONDecodeError as exc:
        raise InputError(f"body is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except UnicodeDecodeError:
        raise InputError("body is not valid JSON (not UTF-8, UTF-16 or UTF-32 text)") from None
    except ValueError:  # Python refuses integers of more than sys.get_int_max_str_digits() digits
        raise InputError("body is not valid JSON (a number too long to convert)") from None


def json_to_canvas(body: bytes) -> np.ndarray:
    """Decode `{"pixels": [[...100 numbers 0..255...] x 100]}` to the uint8 (100, 100) canvas.

    Numbers are grey levels like a training canvas (white digit = 255 on black = 0), rounded. Work is
    linear in the body: the shape is checked row by row before any number is converted.
    """
    doc = _json_document(body)
    if not isinstance(doc, dict) or "pixels" not in doc:
        raise InputError('JSON body needs a "pixels" key: a 100 x 100 array of numbers 0..255')
    pixels = doc["pixels"]
    if not isinstance(pixels, list) or len(pixels) != CANVAS_SIZE:
        shown = f"a list of {len(pixels)} rows" if isinstance(pixels, list) else type(pixels).__name__
        raise InputError(f"pixels must be a list of {CANVAS_SIZE} rows, got {shown}")
    for i, row in enumerate(pixels):
        if not isinstance(row, list) or len(row) != CANVAS_SIZE:
            raise InputError(f"pixels[{i}] must be a list of {CANVAS_SIZE} numbers")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in row):
            raise InputError(f"pixels[{i}] holds a value that is not a number")
    try:
        array = np.asarray(pixels, dtype=np.float64)
    except OverflowError:  # an integer beyond float range, e.g. 10**400
        raise InputError("pixels must be finite numbers in 0..255") from None
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
    Raises:
        InputError: one line naming what is wrong with the body or its content type.
    """
    if content_type not in ("image/png", "application/json"):
        shown = content_type or "(none)"
        raise MediaTypeError(f"content type {shown!r} not accepted, use image/png or application/json")
    if not body:
        what = "a decodable PNG" if content_type == "image/png" else "valid JSON"
        raise InputError(f"body is empty, not {what}")
    return png_to_canvas(body) if content_type == "image/png" else json_to_canvas(body)
