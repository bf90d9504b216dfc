"""Parity in a real browser: web/js/detector.js in headless Debian Chromium runs the exported graph.

The exported versions are served by the real Flask app (services.app) with its CSP; the page imports the
page's own detector.js and preprocess.js. A tiny untrained detector stands in for the trained one, with
every post-processing step active (merge, one box per digit) at a threshold that leaves work for them.
The page's detections must equal Python's on the same graph within 0.01 px: labels, shown flags, order.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from benchmarks.browser import (
    CHROMIUM,
    chromium_page,
    load_in_page,
    run_in_page,
    serve_models,
    wasm_threads,
)
from multidigit import artifact, export
from multidigit.params import ExportParams
from tests.test_export import (
    POST,
    assert_same_detections,
    busy_threshold,
    decoded_of,
    reference,
    stroke_canvases,
    tiny_detector,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: make install-browser"),
]
PARITY_CANVASES = 40
PAGE_PX = 0.01  # the page's boxes equal Python's within this many pixels


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict:
    """A float, float16 and uint8 export of one tiny detector, its canvases and busy threshold."""
    root = tmp_path_factory.mktemp("models")
    detector = tiny_detector()
    images = stroke_canvases(PARITY_CANVASES, seed=1)[0]
    decoded = decoded_of(detector, images)
    threshold = busy_threshold(decoded)
    out = {
        "root": root,
        "images": images,
        "threshold": threshold,
        "reference": reference(decoded, images, threshold),
    }
    for quant in ("none", "float16", "uint8"):
        # an untrained net's uint8 error is not what is tested here: the browser runs the artifact as Python
        cfg = ExportParams(parity_canvases=8, quantized_tolerance=1.0, quantized_box_tolerance=1e3,
                           quantized_mismatches=8)  # fmt: skip
        metrics = {"operating/score_threshold": threshold}
        export.export_artifact(detector, root / quant, POST, quant, version=quant, cfg=cfg, metrics=metrics,
                               images=images[:8])  # fmt: skip
        out[f"{quant}_python"] = artifact.detect_canvases(
            export.load_tfjs_graph(root / quant), images, threshold
        )
    return out


def test_float_graph_in_chromium_equals_python_and_keras_with_numpy(versions):
    with serve_models(versions["root"]) as url, chromium_page(url) as page:
        info = load_in_page(page, "none", "wasm")
        threads = wasm_threads(page.evaluate("navigator.hardwareConcurrency"))
        page_dets = run_in_page(page, versions["images"], versions["threshold"])
        default = run_in_page(page, versions["images"][:3])  # no threshold: the manifest's
        shown = page.evaluate(
            """async () => {
                const px = new Float32Array(100 * 100);
                return [(await window.detector.run(px)).length, (await window.detector.detect(px)).length];
            }"""
        )
        assert page.errors == []
    # the served app is cross-origin isolated, so wasm may run threads (the parity holds on them)
    assert info == {"backend": "wasm", "version": "none", "threads": threads}
    want = versions["reference"]
    kept = sum(len(d["labels"]) for d in want)
    assert kept >= PARITY_CANVASES and sum(int(d["shown"].sum()) for d in want) < kept  # rule hid some
    assert_same_detections(page_dets, versions["none_python"], atol=PAGE_PX)
    assert_same_detections(page_dets, want, atol=1e-3)  # and the graph is Keras + numpy post-processing
    assert_same_detections(default, page_dets[:3], atol=0.0)
    assert shown[1] <= shown[0]


@pytest.mark.parametrize("quant", ["float16", "uint8"])
def test_quantized_graph_in_chromium_equals_the_dequantized_graph_in_python(versions, quant):
    """The browser runs the quantized artifact exactly as the Python check that measures its mAP cost."""
    with serve_models(versions["root"]) as url, chromium_page(url) as page:
        load_in_page(page, quant, "wasm")
        page_dets = run_in_page(page, versions["images"], versions["threshold"])
    assert_same_detections(page_dets, versions[f"{quant}_python"], atol=PAGE_PX)
    # the weights really are quantized (read from the manifest the page loaded: the fit to ink puts box
    # edges on whole pixels, so the detections no longer show the quantization's small error)
    spec = json.loads((versions["root"] / quant / "model.json").read_text())
    weights = [w for group in spec["weightsManifest"] for w in group["weights"] if w["dtype"] == "float32"]
    assert weights and all(w.get("quantization", {}).get("dtype") == quant for w in weights)


def test_detect_lists_only_the_shown_boxes(versions):
    with serve_models(versions["root"]) as url, chromium_page(url) as page:
        load_in_page(page, "none", "wasm")
        listed = page.evaluate(
            """async ({images, threshold}) => {
                const bytes = Uint8Array.from(atob(images), (c) => c.charCodeAt(0));
                const out = [];
                for (let i = 0; i < bytes.length / 10000; i++) {
                    const px = window.preprocess.toModelInput(bytes.subarray(i * 10000, (i + 1) * 10000));
                    const found = await window.detector.detect(px, {scoreThreshold: threshold});
                    out.push(found.map((d) => d.label));
                }
                return out;
            }""",
            {"images": base64.b64encode(versions["images"].tobytes()).decode(),
             "threshold": versions["threshold"]},
        )  # fmt: skip
    want = [artifact.shown_only(d)["labels"].tolist() for d in versions["none_python"]]
    assert listed == want


def test_cpu_backend_gives_the_same_detections(versions):
    with serve_models(versions["root"]) as url, chromium_page(url) as page:
        assert load_in_page(page, "none", "cpu")["backend"] == "cpu"
        page_dets = run_in_page(page, versions["images"][:8], versions["threshold"])
    assert_same_detections(page_dets, versions["none_python"][:8], atol=PAGE_PX)


def test_browser_refuses_a_tampered_weight_file(versions, tmp_path):
    folder = shutil.copytree(versions["root"] / "none", tmp_path / "tampered")
    shard = folder / "group1-shard1of1.bin"
    data = bytearray(shard.read_bytes())
    data[7] ^= 0x01
    shard.write_bytes(bytes(data))
    with (
        serve_models(tmp_path) as url,
        chromium_page(url) as page,
        pytest.raises(Exception, match=r"sha256 mismatch: group1-shard1of1\.bin expected [0-9a-f]{64} got"),
    ):
        load_in_page(page, "tampered", "wasm")
