"""services/: every route, header, cache rule and 400/404/413 case through Flask's test client."""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multidigit.artifact import SAVED_MODEL_DIR
from services.app import create_app
from services.drawing import InputError, json_to_canvas, png_to_canvas, reduce_drawing
from services.headers import CSP
from tests.conftest import run_python

ROOT = Path(__file__).resolve().parents[1]
VERSION = "20250101-000000-test"
WEIGHTS = bytes(range(256)) * 8  # stands in for a weight shard: the service only serves its bytes


def _write_version(models: Path, version: str = VERSION) -> Path:
    folder = models / version
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"format": "graph-model", "weightsManifest": []}))
    (folder / "group1-shard1of1.bin").write_bytes(WEIGHTS)
    manifest = {"version": version, "model": "model.json", "thresholds": {"score": 0.37, "iou": 0.4}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (models / "champion.json").write_text(json.dumps({"version": version}))
    return folder


def _app(tmp_path: Path, models: Path, **extra):
    config = {
        "TESTING": True,
        "MODELS_DIR": models,
        "CANVAS_DIR": tmp_path / "no-canvases",
        "MNIST_DIR": tmp_path / "no-mnist",
        **extra,
    }
    return create_app(config)


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    path = tmp_path / "tfjs"
    _write_version(path)
    return path


@pytest.fixture()
def client(tmp_path: Path, models: Path):
    return _app(tmp_path, models).test_client()


@pytest.fixture()
def empty_client(tmp_path: Path):
    return _app(tmp_path, tmp_path / "no-models").test_client()


def _png(array: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- the drawing reduction
def test_reduce_drawing_area_averages_blocks_rounding_half_up():
    drawing = np.zeros((400, 400), np.uint8)
    drawing[0:4, 0:4] = 255  # full block -> 255
    drawing[0, 4:8] = [255, 255, 1, 0]  # sum 511 / 16 = 31.94 -> 32
    drawing[4, 0] = 8  # sum 8 / 16 = 0.5 -> rounds up to 1
    canvas = reduce_drawing(drawing)
    assert canvas.shape == (100, 100) and canvas.dtype == np.uint8
    assert (canvas[0, 0], canvas[0, 1], canvas[1, 0]) == (255, 32, 1)
    assert canvas.sum() == 255 + 32 + 1


def test_reduce_drawing_keeps_a_100px_canvas_and_undoes_a_nearest_upscale():
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (100, 100), dtype=np.uint8)
    assert np.array_equal(reduce_drawing(canvas), canvas)
    assert np.array_equal(reduce_drawing(np.kron(canvas, np.ones((4, 4), np.uint8))), canvas)


@pytest.mark.parametrize("shape", [(100, 99), (150, 150), (900, 900), (50, 50)])
def test_reduce_drawing_refuses_other_sizes(shape):
    with pytest.raises(InputError, match="need a square grey image of side 100"):
        reduce_drawing(np.zeros(shape, np.uint8))


def test_png_red_channel_is_the_grey_level_in_every_mode():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (200, 200), dtype=np.uint8)
    expected = reduce_drawing(grey)
    for mode in ("L", "RGB", "RGBA", "LA"):
        assert np.array_equal(png_to_canvas(_png(grey, mode)), expected), mode


def test_json_pixels_are_rounded_grey_levels():
    pixels = np.zeros((100, 100))
    pixels[3, 4], pixels[5, 6] = 254.5, 0.49
    canvas = json_to_canvas(json.dumps({"pixels": pixels.tolist()}).encode())
    assert (canvas[3, 4], canvas[5, 6], canvas.sum()) == (255, 0, 255)


# ---------------------------------------------------------------- the page and static files
class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.inline_scripts, self.style_attrs = [], 0, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [attrs[k] for k in ("src", "href") if attrs.get(k)]
        self.inline_scripts += tag == "script" and not attrs.get("src")
        self.style_attrs += "style" in attrs


def test_page_is_served_with_security_headers(client):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == CSP
    assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert "script-src 'self' 'wasm-unsafe-eval' blob:" in CSP and "unsafe-inline" not in CSP
    # cross-origin isolated, so the wasm backend may run threads (SharedArrayBuffer)
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["ETag"]


def test_page_references_only_local_files_and_has_no_inline_script(client):
    refs = _Refs()
    refs.feed(client.get("/").get_data(as_text=True))
    assert refs.inline_scripts == 0 and refs.style_attrs == 0
    assert {"/vendor/tfjs/tf.es2017.min.js", "/js/app.js", "/css/style.css"} <= set(refs.refs)
    for ref in refs.refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        assert client.get(ref).status_code == 200, ref


def test_every_module_the_page_imports_is_served_as_javascript(client):
    for name in ("app", "drawing", "preprocess", "detector"):
        response = client.get(f"/js/{name}.js")
        assert response.status_code == 200 and response.mimetype == "text/javascript", name
        for imported in re.findall(r'from "\./([\w.]+)"', response.get_data(as_text=True)):
            assert client.get(f"/js/{imported}").status_code == 200, imported


def test_etag_revalidation_gives_304(client):
    first = client.get("/css/style.css")
    again = client.get("/css/style.css", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_text_is_gzipped_when_accepted_and_stays_revalidatable(client):
    plain = client.get("/vendor/tfjs/tf.es2017.min.js")
    zipped = client.get("/vendor/tfjs/tf.es2017.min.js", headers={"Accept-Encoding": "gzip, br"})
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    body = gzip.decompress(zipped.data)
    assert body == plain.data and len(zipped.data) < len(body) / 2
    assert zipped.headers["ETag"].startswith('W/"')
    cached = client.get(
        "/vendor/tfjs/tf.es2017.min.js",
        headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]},
    )
    assert cached.status_code == 304


def test_binary_files_are_not_gzipped(client):
    response = client.get(
        "/vendor/tfjs-backend-wasm/tfjs-backend-wasm-simd.wasm", headers={"Accept-Encoding": "gzip"}
    )
    assert response.status_code == 200 and response.mimetype == "application/wasm"
    assert "Content-Encoding" not in response.headers
    wasm = ROOT / "node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm"
    assert response.data == wasm.read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/nope.html",
        "/js/missing.js",
        "/vendor/left-pad/index.js",
        "/vendor/tfjs/../package.json",
        "/vendor/tfjs/..%2f..%2fpackage.json",
        "/vendor/tfjs/%2e%2e/package.json",
        "/../services/app.py",
        "/js/../../services/app.py",
        "/%2e%2e/pyproject.toml",
        "/services/app.py",
        "/index.html/../../etc/passwd",
        "/models/../champion.json",
        f"/models/{VERSION}/../champion.json",
        f"/models/{VERSION}/..%2fchampion.json",
        "/models/..%2f..%2fetc/passwd",
        f"/models/{VERSION}/missing.bin",
        f"/models/{VERSION}/notes.txt",
        "/models/other-version/model.json",
    ],
)
def test_unknown_paths_and_traversal_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404, path
    assert b"Traceback" not in response.data


# ---------------------------------------------------------------- the champion's files
def test_versioned_model_files_are_immutable_with_right_types(client, models):
    model = client.get(f"/models/{VERSION}/model.json")
    assert model.status_code == 200 and model.mimetype == "application/json"
    assert model.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert model.data == (models / VERSION / "model.json").read_bytes()
    shard = client.get(f"/models/{VERSION}/group1-shard1of1.bin", headers={"Accept-Encoding": "gzip"})
    assert shard.status_code == 200 and shard.mimetype == "application/octet-stream"
    assert shard.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert shard.data == WEIGHTS and "Content-Encoding" not in shard.headers
    again = client.get(
        f"/models/{VERSION}/group1-shard1of1.bin", headers={"If-None-Match": shard.headers["ETag"]}
    )
    assert again.status_code == 304
    assert client.get(f"/models/{VERSION}/manifest.json").json["thresholds"]["score"] == 0.37


def test_api_model_is_the_champions_manifest(client, models):
    _write_version(models, "20250202-000000-next")  # a newer export that becomes champion
    response = client.get("/api/model")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-cache"
    assert response.json["version"] == "20250202-000000-next"
    assert response.json["model_url"] == "/models/20250202-000000-next/model.json"
    assert response.json["thresholds"] == {"score": 0.37, "iou": 0.4}
    assert client.get(f"/models/{VERSION}/model.json").status_code == 200  # old versions stay servable


def test_healthz_reports_the_model(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "model": VERSION}


def test_without_a_model_healthz_is_503_and_api_model_404(empty_client):
    health = empty_client.get("/healthz")
    assert health.status_code == 503 and health.json == {"status": "no-model", "model": None}
    model = empty_client.get("/api/model")
    assert model.status_code == 404 and model.json["model"] is None
    assert empty_client.get("/").status_code == 200  # the page still loads and says so


@pytest.mark.parametrize("champion", ['{"version": "gone"}', "not json", '{"version": "../../etc"}', "[1]"])
def test_a_broken_champion_file_means_no_model(tmp_path, champion):
    models = tmp_path / "tfjs"
    _write_version(models)
    (models / "champion.json").write_text(champion)
    client = _app(tmp_path, models).test_client()
    assert client.get("/healthz").status_code == 503
    assert client.get("/api/model").status_code == 404


# ---------------------------------------------------------------- POST /api/detect: bad input
def _detect(client, data, content_type, query=""):
    return client.post(f"/api/detect{query}", data=data, content_type=content_type)


def test_body_over_one_megabyte_is_413_json(client):
    response = _detect(client, b"\0" * (1024 * 1024 + 1), "image/png")
    assert response.status_code == 413 and "error" in response.json


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (b"\x89PNG\r\n\x1a\nbroken", "image/png", "not a decodable PNG"),
        (b"", "image/png", "not a decodable PNG"),
        (_png(np.zeros((64, 64), np.uint8)), "image/png", "need a square grey image"),
        (_png(np.zeros((100, 300), np.uint8)), "image/png", "need a square grey image"),
        (b"{", "application/json", "not valid JSON"),
        (b'{"pixels": 3}', "application/json", "list of 100 rows"),
        (b"[]", "application/json", '"pixels" key'),
        (json.dumps({"pixels": [[0] * 100] * 99}).encode(), "application/json", "list of 100 rows"),
        (json.dumps({"pixels": [[0] * 100] * 99 + [[0] * 7]}).encode(), "application/json", "pixels[99]"),
        (
            json.dumps({"pixels": [[0] * 100] * 99 + [["a"] * 100]}).encode(),
            "application/json",
            "not a number",
        ),
        (json.dumps({"pixels": [[0] * 100] * 99 + [[300] * 100]}).encode(), "application/json", "0..255"),
        (
            json.dumps({"pixels": [[0] * 100] * 99 + [[True] * 100]}).encode(),
            "application/json",
            "not a number",
        ),
    ],
)
def test_undecodable_or_wrong_shape_is_400_json(client, data, content_type, message):
    response = _detect(client, data, content_type)
    assert response.status_code == 400
    assert message in response.json["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "", "image/jpeg"])
def test_a_body_of_another_content_type_is_415_json(client, content_type):
    response = _detect(client, b"pixels", content_type)
    assert response.status_code == 415
    assert f"content type {content_type or '(none)'!r} not accepted" in response.json["error"]


def test_gif_bytes_labelled_png_are_400(client):
    buf = io.BytesIO()
    Image.new("L", (100, 100)).save(buf, format="GIF")
    response = _detect(client, buf.getvalue(), "image/png")
    assert response.status_code == 400 and "need a PNG" in response.json["error"]


@pytest.mark.parametrize("query", ["?score_threshold=abc", "?score_threshold=1.5", "?score_threshold=nan"])
def test_bad_score_threshold_is_400(client, query):
    response = _detect(client, _png(np.zeros((100, 100), np.uint8)), "image/png", query)
    assert response.status_code == 400 and "score_threshold" in response.json["error"]


def test_valid_input_without_an_exported_artifact_is_503_json(client, empty_client):
    response = _detect(client, _png(np.zeros((400, 400), np.uint8)), "image/png")
    assert response.status_code == 503  # the champion folder has TF.js files but no saved_model/
    assert "no model exported yet: artifact: no SavedModel at" in response.json["error"]
    response = _detect(empty_client, _png(np.zeros((400, 400), np.uint8)), "image/png")
    assert response.status_code == 503 and "no champion version exported" in response.json["error"]


def test_wrong_method_is_405_json(client):
    response = client.get("/api/detect")
    assert response.status_code == 405 and "error" in response.json


# ---------------------------------------------------------------- examples and OpenAPI
def test_examples_come_from_mnist_test_digits_before_canvases_exist(tmp_path, models, mnist_splits):
    from multidigit.mnist import read_split

    mnist = mnist_splits

    client = _app(tmp_path, models, MNIST_DIR=mnist).test_client()
    data = client.get("/api/examples").json
    assert data["source"] == "mnist/test" and len(data["examples"]) == 8
    _, labels = read_split("test", mnist)
    first = data["examples"][0]
    assert first["labels"] == labels[:2].tolist()
    pixels = np.frombuffer(base64.b64decode(first["pixels_b64"]), np.uint8).reshape(100, 100)
    for x, y, w, h in first["boxes"]:  # each box is tight: its border rows/columns hold ink
        box = pixels[int(y) : int(y + h), int(x) : int(x + w)]
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()


def test_examples_prefer_stage3_test_canvases(tmp_path, models):
    pytest.importorskip("multidigit.canvas")
    shard = tmp_path / "canvases" / "stage3" / "test"
    shard.mkdir(parents=True)
    images = np.zeros((3, 100, 100), np.uint8)
    images[:, 10:20, 30:40] = 200
    boxes = np.zeros((3, 10, 4), np.float32)
    boxes[:, 0] = [30, 10, 10, 10]
    labels = np.full((3, 10), -1, np.int16)
    labels[:, 0] = [4, 5, 6]
    np.savez_compressed(shard / "shard-00000.npz", images=images, boxes=boxes, labels=labels)
    client = _app(tmp_path, models, CANVAS_DIR=tmp_path / "canvases").test_client()
    data = client.get("/api/examples").json
    assert data["source"] == "canvases/stage3/test"
    assert [e["labels"] for e in data["examples"]] == [[4], [5], [6]]
    assert data["examples"][1]["boxes"] == [[30.0, 10.0, 10.0, 10.0]]
    assert base64.b64decode(data["examples"][0]["pixels_b64"]) == images[0].tobytes()


def test_examples_are_empty_without_any_data(client):
    assert client.get("/api/examples").json == {"source": None, "size": 100, "examples": []}


def test_openapi_documents_every_api_route(client):
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.")
    app_routes = {r.rule for r in client.application.url_map.iter_rules() if r.rule.startswith("/api/")}
    assert app_routes | {"/healthz"} == set(doc["paths"])
    assert set(doc["paths"]["/api/detect"]["post"]["requestBody"]["content"]) == {
        "image/png",
        "application/json",
    }


# ---------------------------------------------------------------- POST /api/detect with exported artifacts
@pytest.fixture(scope="module")
def two_versions(tmp_path_factory) -> dict:
    """Two exported versions of different tiny detectors, a canvas, and each one's expected answer."""
    from multidigit import artifact, export
    from tests.test_export import POST, busy_threshold, decoded_of, stroke_canvases, tiny_detector

    root = tmp_path_factory.mktemp("artifacts")
    images = stroke_canvases(8, seed=3)[0]
    out = {"root": root, "canvas": images[0], "keras": {}}
    for name, seed in (("v-one", 7), ("v-two", 8)):
        detector = tiny_detector()
        if seed != 7:  # other prediction weights, same architecture: the two versions answer differently
            predict = detector.get_layer("predict")
            kernel, bias = predict.get_weights()
            predict.set_weights([kernel + np.random.default_rng(seed).normal(0, 0.05, kernel.shape), bias])
        metrics = {
            "operating/score_threshold": busy_threshold(decoded_of(detector, images)),
            "metrics/mAP50-95": 0.5 if name == "v-one" else 0.6,  # v-two is the better one: it takes champion
        }
        folder = export.export_artifact(
            detector, root / "versions" / name, POST, "none", version=name, images=images, metrics=metrics
        )
        out[name] = folder
        (found,) = artifact.detect_canvases(
            artifact.load_artifact(folder), images[:1], metrics["operating/score_threshold"]
        )
        out[f"{name}-expected"] = artifact.shown_only(found)
        out["keras"][name] = root / f"{name}.keras"
        detector.save(out["keras"][name])
    return out


@pytest.mark.slow
def test_loading_an_artifact_hides_tensorflows_bool_notice(two_versions):
    folder = two_versions["v-one"]
    blank = "np.zeros((1, 100, 100, 1), np.float32)"
    raw = run_python(
        f"import numpy as np, multidigit, tensorflow as tf; "
        f"fn = tf.saved_model.load({str(folder / SAVED_MODEL_DIR)!r}); fn.detect({blank}, 0.5)"
    ).stderr
    if "DT_BOOL" not in raw:  # TensorFlow prints it on this CPU or not (it did on the AMD EPYCs here)
        pytest.skip("this CPU's TensorFlow prints no DT_BOOL notice on a first run")
    for code in (
        f"import numpy as np; from multidigit import artifact; fn = artifact.load_artifact({str(folder)!r}); "
        "artifact.detect_canvases(fn, np.zeros((1, 100, 100), np.uint8), 0.5)",
        f"from services import inference; assert inference.preload({str(folder)!r})",
    ):
        later = run_python(code).stderr
        assert "DT_BOOL" not in later and "Traceback" not in later, later


def _served_detections(client, canvas: np.ndarray, query: str = "") -> dict:
    response = _detect(client, _png(np.kron(canvas, np.ones((4, 4), np.uint8))), "image/png", query)
    assert response.status_code == 200, response.json
    return response.json


def _as_lists(det: dict) -> list:
    return [(int(lab), round(float(s), 4)) for lab, s in zip(det["labels"], det["scores"], strict=True)]


@pytest.mark.slow
def test_detect_serves_the_champions_artifact_with_its_thresholds(tmp_path, two_versions):
    models = tmp_path / "tfjs"
    shutil.copytree(two_versions["v-one"], models / "v-one")
    (models / "champion.json").write_text(json.dumps({"version": "v-one"}))
    client = _app(tmp_path, models).test_client()
    body = _served_detections(client, two_versions["canvas"])
    manifest = json.loads((models / "v-one" / "manifest.json").read_text())
    assert body["model"] == "v-one" and body["score_threshold"] == manifest["thresholds"]["score"]
    want = two_versions["v-one-expected"]
    assert len(body["detections"]) == len(want["labels"]) > 0
    assert [(d["label"], d["score"]) for d in body["detections"]] == _as_lists(want)
    np.testing.assert_allclose([[d[k] for k in "xywh"] for d in body["detections"]], want["boxes"], atol=0.01)
    assert _served_detections(client, two_versions["canvas"], "?score_threshold=1")["detections"] == []


@pytest.mark.slow
def test_rollback_changes_what_detect_returns_without_a_restart(
    tmp_path, two_versions, params_dict, monkeypatch
):
    from multidigit import registry
    from multidigit.params import validate_params

    for var in ("MLFLOW_TRACKING_URI", "MULTIDIGIT_PIPELINE_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    params_dict["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "service-tests",
                             "registered_model": "service-rollback"}  # fmt: skip
    cfg = validate_params(params_dict)
    models = tmp_path / "tfjs"
    client = _app(tmp_path, models).test_client()  # one app, one process, for the whole test
    answers = {}
    for name in ("v-one", "v-two"):
        folder = shutil.copytree(two_versions[name], models / name)
        _, promoted, reason = registry.register_export(
            cfg, folder, two_versions["keras"][name], gate_passed=True
        )
        assert promoted, reason
        body = _served_detections(client, two_versions["canvas"])
        assert body["model"] == name
        answers[name] = [(d["label"], d["score"]) for d in body["detections"]]
        assert answers[name] == _as_lists(two_versions[f"{name}-expected"])
    assert answers["v-one"] != answers["v-two"]  # the two versions really answer differently
    registry.rollback(cfg, models)
    body = _served_detections(client, two_versions["canvas"])
    assert (
        body["model"] == "v-one"
        and [(d["label"], d["score"]) for d in body["detections"]] == answers["v-one"]
    )


@pytest.mark.slow
def test_preload_loads_the_champion_when_the_app_is_created(tmp_path, two_versions):
    from services import inference

    models = tmp_path / "tfjs"
    shutil.copytree(two_versions["v-two"], models / "v-two")
    (models / "champion.json").write_text(json.dumps({"version": "v-two"}))
    inference._loaded.pop(str((models / "v-two").resolve()), None)
    _app(tmp_path, models, PRELOAD_MODEL=True)
    assert str((models / "v-two").resolve()) in inference._loaded


def test_web_js_has_no_post_processing():
    """The page runs the exported graph; no scoring, IoU, NMS or merge code lives in web/js."""
    code = re.compile(
        r"nonMaxSuppression|\biou\w*\s*[(=]|intersection|classOffset|merge\w*\s*\(|argMax", re.I
    )
    for path in sorted((ROOT / "web" / "js").glob("*.js")):
        lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("//")]
        assert [line for line in lines if code.search(line)] == [], path.name
    detector = (ROOT / "web" / "js" / "detector.js").read_text()
    assert "executeAsync({ image, score_threshold: threshold }, names)" in detector
