"""Property-based fuzz of the live server (gunicorn on loopback): malformed bodies never give a 500.

Hypothesis generates bodies (random bytes, random JSON, near-miss pixel arrays, PNGs of any size and
mode, truncated PNGs), content types, query strings, methods and paths. Every answer must be a
deliberate one: 2xx/3xx/4xx, or 503 {"error": "no model trained yet ..."} for a well-formed drawing
while no Keras detector is trained. Bounded: derandomized, a fixed number of examples per property.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.liveserver import ROOT, live_server

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
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
DETECTOR = Path(os.environ.get("MULTIDIGIT_E2E_DETECTOR", ROOT / "models" / "stage3" / "detector.keras"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    with live_server(tmp / "logs", threads=8, DETECTOR_PATH=DETECTOR) as url:
        session = requests.Session()
        # One connection per request: a pooled keep-alive socket that gunicorn closed after its
        # 2 s idle timeout would show up as a spurious "connection aborted".
        session.headers["Connection"] = "close"
        yield url, session
        session.close()


def _png(draw) -> bytes:
    side = draw(st.sampled_from([1, 7, 28, 100, 101, 200, 400, 800, 801]))
    height = draw(st.sampled_from([side, side, 3, 100]))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "1", "P", "I;16"]))
    value = draw(st.integers(0, 255))
    img = Image.fromarray(np.full((height, side), value, np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()
    cut = draw(st.integers(0, len(data)))
    return data if draw(st.booleans()) else data[:cut]


def _pixels(draw) -> bytes:
    rows = draw(st.sampled_from([0, 1, 99, 100, 101]))
    cols = draw(st.sampled_from([0, 100, 100, 99]))
    value = draw(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-(2**70), 2**70),
            st.sampled_from([None, True, "7", [], {}]),
        )
    )
    body = {"pixels": [[value] * cols for _ in range(rows)]}
    return json.dumps(body, allow_nan=True).encode()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "pixels", "png"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2048))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    return _pixels(draw) if kind == "pixels" else _png(draw)


def _assert_deliberate(response: requests.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, (
        response.status_code,
        response.text[:200],
    )
    if response.status_code == 503:
        assert response.json()["error"].startswith("no model trained yet")
    is_detect = response.request.url.split("?")[0].endswith("/api/detect")
    if response.status_code >= 400 and is_detect and response.request.method != "HEAD":  # HEAD: no body
        assert "error" in response.json()


@FUZZ
@given(body=bodies(), content_type=CONTENT_TYPES, threshold=st.none() | st.text(max_size=12))
def test_detect_never_answers_500(server, body, content_type, threshold):
    url, session = server
    params = {} if threshold is None else {"score_threshold": threshold}
    response = session.post(
        f"{url}/api/detect", data=body, headers={"Content-Type": content_type}, params=params, timeout=120
    )
    _assert_deliberate(response)


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
def test_any_method_and_path_never_answers_500(server, method, path, body):
    url, session = server
    response = session.request(method, url + path, data=body, timeout=60)
    _assert_deliberate(response)


def test_oversized_body_is_refused_with_413(server):
    url, session = server
    response = session.post(
        f"{url}/api/detect", data=b"\0" * (2 * 1024 * 1024), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 413 and "error" in response.json()
