"""POST /api/detect on bad input: every body is answered on purpose, never with a 5xx.

The app is the real Flask app (`create_app`, its test client) serving a REAL exported model: a tiny
detector from `multidigit.model.build_detector` (seeded, untrained) exported by
`multidigit.export.export_artifact` into a version folder with champion.json, so every well-formed body
runs the whole inference path (decode, the graph, the answer) rather than stopping at a 503.

Named bodies from issue 15 (a decompression bomb, truncated / 16-bit / palette PNGs, huge sizes, deeply
nested JSON, 10^6 numbers, wrong content types, empty bodies) each get a 4xx whose JSON error is one line
naming the problem; then hypothesis generates bodies, content types, thresholds, methods and paths.
Bounded: derandomized, a fixed number of examples per property.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.app import create_app
from services.drawing import InputError, json_to_canvas, png_to_canvas
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CONTENT_TYPES = st.sampled_from(
    [
        "image/png",
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "",
    ]
)
VERSION = "20260101-000000-fuzz-none"
MODES = ["L", "RGB", "RGBA", "LA", "1", "P", "I;16"]


# ---------------------------------------------------------------- the app on a tiny real model
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """models/tfjs-like folder: champion.json -> one exported version of a tiny untrained detector."""
    import keras
    import yaml

    from multidigit.export import export_artifact
    from multidigit.model import build_detector
    from multidigit.params import ModelParams, validate_params

    root = tmp_path_factory.mktemp("fuzz-models")
    nms = validate_params(yaml.safe_load((ROOT / "params.yaml").read_text())).nms
    keras.utils.set_random_seed(0)
    detector = build_detector(ModelParams(width=4))
    export_artifact(detector, root / "tfjs" / VERSION, nms, "none", version=VERSION)
    (root / "tfjs" / "champion.json").write_text(json.dumps({"version": VERSION}))
    return root


@pytest.fixture(scope="module")
def client(models_dir: Path):
    app = create_app(
        {
            "TESTING": True,
            "MODELS_DIR": models_dir / "tfjs",
            "CANVAS_DIR": models_dir / "no-canvases",
            "MNIST_DIR": models_dir / "no-mnist",
        }
    )
    return app.test_client()


def _post(client, body: bytes, content_type: str, query: str = ""):
    return client.post(f"/api/detect{query}", data=body, headers={"Content-Type": content_type})


def _png(array: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _assert_detections(answer: dict) -> None:
    """A 200 answer: a list of boxes inside the canvas with a digit label and a score in [0, 1]."""
    assert isinstance(answer["detections"], list)
    for det in answer["detections"]:
        box = [det[k] for k in "xywh"]
        assert all(isinstance(v, int | float) and np.isfinite(v) for v in box), det
        assert det["label"] in range(10) and 0.0 <= det["score"] <= 1.0, det


def _assert_deliberate(response) -> None:
    """No 5xx; an error under /api/ is JSON {"error": one line}; a 200 from /api/detect is well formed."""
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:300])
    api = response.request.path.startswith("/api/") and response.request.method != "HEAD"
    if response.status_code >= 400 and api:
        error = response.get_json()["error"]
        assert isinstance(error, str) and error and "\n" not in error and len(error) < 300, error
    if response.status_code == 200 and response.request.path == "/api/detect":
        _assert_detections(response.get_json())


# ---------------------------------------------------------------- the real model answers
def test_a_drawing_runs_the_exported_model(client, models_dir):
    drawing = np.zeros((400, 400), np.uint8)
    drawing[100:300, 180:220] = 255
    response = _post(client, _png(drawing), "image/png", "?score_threshold=0")
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    _assert_detections(answer)
    # threshold 0 keeps every candidate, so even untrained weights list boxes: inference really ran
    assert 1 <= len(answer["detections"]) <= 20
    assert response.get_json()["score_threshold"] == 0.0


# ---------------------------------------------------------------- named bad bodies
def _bomb() -> bytes:
    """A real 20000 x 20000 PNG (1 bit, ~50 KB): PIL alone raises DecompressionBombError on it."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    return buf.getvalue()


def _header_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is rewritten to claim another size (its CRC is then wrong)."""
    data = bytearray(_png(np.zeros((1, 1), np.uint8)))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


GOOD = _png(np.zeros((400, 400), np.uint8))
ZEROS = [[0] * 100 for _ in range(100)]
BAD_BODIES = {
    "decompression bomb": (_bomb(), "image/png", 400, "20000x20000"),
    "header claims 100000 px": (_header_claiming(100_000, 100_000), "image/png", 400, "100000x100000"),
    "801 px": (_png(np.zeros((801, 801), np.uint8)), "image/png", 400, "at most 800x800"),
    "not square": (_png(np.zeros((300, 400), np.uint8)), "image/png", 400, "square"),
    "truncated": (GOOD[: len(GOOD) // 2], "image/png", 400, "not a decodable PNG"),
    "signature only": (GOOD[:8], "image/png", 400, "not a decodable PNG"),
    "gif as png": (b"GIF89a" + bytes(40), "image/png", 400, "GIF"),
    "json as png": (b'{"pixels": []}', "image/png", 400, "application/json"),
    "png as json": (GOOD, "application/json", 400, "image/png"),
    "empty png": (b"", "image/png", 400, "empty"),
    "empty json": (b"", "application/json", 400, "empty"),
    "deep arrays": (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "nested too deeply"),
    "deep objects": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json", 400, "nested too deeply"),
    "10^6 numbers": (b"[" + b"0," * 999_999 + b"0]", "application/json", 413, "byte limit"),
    "500000 numbers": (b"[" + b"0," * 499_999 + b"0]", "application/json", 400, '"pixels"'),
    "int beyond float": (
        json.dumps({"pixels": [[10**400] * 100, *ZEROS[1:]]}).encode(),
        "application/json",
        400,
        "0..255",
    ),
    "nan": (
        json.dumps({"pixels": [[float("nan")] * 100, *ZEROS[1:]]}).encode(),
        "application/json",
        400,
        "finite",
    ),
    "digits beyond int limit": (b'{"pixels": [' + b"1" * 5000 + b"]}", "application/json", 400, "too long"),
    "not utf": (b"\xff\xfe\xfa{", "application/json", 400, "not valid JSON"),
    "text/plain": (GOOD, "text/plain", 415, "content type 'text/plain'"),
    "multipart": (GOOD, "multipart/form-data; boundary=x", 415, "content type 'multipart/form-data'"),
    "no content type": (GOOD, "", 415, "(none)"),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_body_is_a_4xx_naming_the_problem(client, name):
    body, content_type, status, words = BAD_BODIES[name]
    response = _post(client, body, content_type)
    assert response.status_code == status, (name, response.get_json())
    error = response.get_json()["error"]
    assert words in error and "\n" not in error, (name, error)


def test_16_bit_and_palette_pngs_decode_like_8_bit_grey():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (200, 200), dtype=np.uint8)
    expected = png_to_canvas(_png(grey))
    wide = _png(grey.astype(np.uint16) * 257, "I;16")  # 8-bit level v is 16-bit v * 257
    assert Image.open(io.BytesIO(wide)).mode == "I;16"
    assert np.array_equal(png_to_canvas(wide), expected)
    assert np.array_equal(png_to_canvas(_png(grey, "P")), expected)
    assert (png_to_canvas(_png(np.full((100, 100), 128 * 257, np.uint16), "I;16")) == 128).all()


def test_a_million_numbers_are_refused_in_linear_time():
    # The 1 MB body limit stops this at the app; the decoder alone must still refuse it without
    # looking at every number more than once (shape first, then values).
    rows = b"[" + b",".join([b"[" + b",".join([b"1"] * 10_000) + b"]"] * 100) + b"]"
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"pixels\[0\] must be a list of 100 numbers"):
        json_to_canvas(b'{"pixels": ' + rows + b"}")
    assert time.perf_counter() - start < 10  # linear: about 0.1 s; quadratic work would take minutes


# ---------------------------------------------------------------- generated bodies
def _png_body(draw) -> bytes:
    side = draw(st.sampled_from([1, 7, 28, 100, 101, 200, 400, 800, 801]))
    height = draw(st.sampled_from([side, side, 3, 100]))
    mode = draw(st.sampled_from(MODES))
    value = draw(st.integers(0, 255))
    data = _png(np.full((height, side), value, np.uint8), mode)
    cut = draw(st.integers(0, len(data)))
    return data if draw(st.booleans()) else data[:cut]


def _pixels_body(draw) -> bytes:
    rows = draw(st.sampled_from([0, 1, 99, 100, 101]))
    cols = draw(st.sampled_from([0, 100, 100, 99]))
    value = draw(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-(2**70), 2**70),
            st.sampled_from([None, True, "7", [], {}, 10**400]),
        )
    )
    return json.dumps({"pixels": [[value] * cols for _ in range(rows)]}, allow_nan=True).encode()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "pixels", "png", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2048))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.sampled_from([1, 2, 3, 4, 100, 999, 1000, 5000, 100_000]))  # past the recursion limit
        return b'{"pixels": ' + b"[" * depth + b"]" * depth + b"}"
    return _pixels_body(draw) if kind == "pixels" else _png_body(draw)


@st.composite
def drawings(draw) -> tuple[bytes, str]:
    """Well-formed bodies: a PNG of side 100 * f in any mode, or a JSON 100 x 100 array.

    The PNG holds a few filled rectangles (strokes-like, so it compresses under the 1 MB body limit
    the way a real drawing does; random noise at 800 x 800 RGBA would not).
    """
    if draw(st.booleans()):
        side = 100 * draw(st.integers(1, 8))
        pixels = np.zeros((side, side), np.uint8)
        for _ in range(draw(st.integers(0, 4))):
            x, y = draw(st.integers(0, side - 1)), draw(st.integers(0, side - 1))
            w, h = draw(st.integers(1, side)), draw(st.integers(1, side))
            pixels[y : y + h, x : x + w] = draw(st.integers(0, 255))
        return _png(pixels, draw(st.sampled_from(MODES))), "image/png"
    value = draw(st.floats(0, 255) | st.integers(0, 255))
    return json.dumps({"pixels": [[value] * 100 for _ in range(100)]}).encode(), "application/json"


THRESHOLDS = st.none() | st.text(max_size=12) | st.floats(0, 1).map(str)


@FUZZ
@given(body=bodies(), content_type=CONTENT_TYPES, threshold=THRESHOLDS)
def test_detect_never_answers_5xx(client, body, content_type, threshold):
    response = client.post(
        "/api/detect",
        data=body,
        headers={"Content-Type": content_type},
        query_string={} if threshold is None else {"score_threshold": threshold},
    )
    _assert_deliberate(response)


@FUZZ
@given(drawing=drawings(), threshold=st.floats(0, 1))
def test_every_well_formed_drawing_is_detected(client, drawing, threshold):
    body, content_type = drawing
    query = {"score_threshold": threshold}
    response = client.post(
        "/api/detect", data=body, headers={"Content-Type": content_type}, query_string=query
    )
    assert response.status_code == 200, response.get_json()
    _assert_detections(response.get_json())


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    path=st.sampled_from(
        ["/", "/api/", "/api/detect", "/api/model", "/models/", "/vendor/tfjs/", "/js/"]
    ).flatmap(
        lambda prefix: st.text(st.characters(codec="ascii", exclude_characters="#?"), max_size=30).map(
            lambda tail: prefix + tail
        )
    ),
    body=st.binary(max_size=256),
)
def test_any_method_and_path_never_answers_5xx(client, method, path, body):
    _assert_deliberate(client.open(path, method=method, data=body))
