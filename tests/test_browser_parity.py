"""Parity in a real browser: web/js/detector.js in headless Debian Chromium against Keras and Python TF.

The exported versions are served by the real Flask app (services.app) with its CSP; the page imports
the page's own detector.js and preprocess.js. A tiny untrained detector stands in for the trained one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.browser import CHROMIUM, chromium_page, load_in_page, run_in_page, serve_models
from multidigit import boxes, export
from multidigit.params import ExportParams, NmsParams
from tests.test_export import METRICS, save_tiny_detector, stroke_canvases

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: make install-browser"),
]
PARITY_CANVASES = 50


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict:
    """A float and a uint8 export of one tiny detector, its Keras outputs on 50 canvases, the folder."""
    from multidigit.model import inference_model

    root = tmp_path_factory.mktemp("models")
    detector = save_tiny_detector(tmp_path_factory.mktemp("keras") / "detector.keras")
    test = stroke_canvases(PARITY_CANVASES, seed=1)
    out = {"root": root, "images": test[0]}
    for quant in ("none", "float16", "uint8"):
        # an untrained net's uint8 error is not what is tested here: the browser runs the artifact as Python
        cfg = ExportParams(
            quantization=quant, parity_canvases=8, quantized_tolerance=1.0, quantized_box_tolerance=1e3
        )
        folder = export.export_version(
            detector, root, cfg=cfg, nms=NmsParams(merge=True), metrics=METRICS, test=test
        )
        out[quant] = folder.name
    model = inference_model(export.load_detector(detector))
    out["keras"] = model.predict(test[0][..., None] / np.float32(255), verbose=0)
    for quant in ("float16", "uint8"):  # the dequantized graphs the export check measured in Python
        out[f"{quant}_python"] = export.load_tfjs_graph(root / out[quant])(
            test[0][..., None] / np.float32(255)
        )
    return out


def _busy_threshold(decoded: np.ndarray) -> float:
    """A score threshold that leaves a few candidates per canvas, so NMS and the labels are exercised:
    the middle of the widest gap between slot scores ranked 0.5%-2%, far from any score."""
    ranked = np.sort((decoded[..., 4] * decoded[..., 5:].max(-1)).ravel())[::-1]
    lo, hi = len(ranked) // 200, len(ranked) // 50
    i = lo + int(np.argmax(ranked[lo:hi] - ranked[lo + 1 : hi + 1]))
    return float(ranked[i] + ranked[i + 1]) / 2


def test_float_model_loads_in_chromium_and_matches_keras(versions):
    keras_out = versions["keras"]
    threshold = _busy_threshold(keras_out)
    with serve_models(versions["root"]) as url, chromium_page(url) as page:
        info = load_in_page(page, versions["none"], "wasm")
        raw, detections = run_in_page(page, versions["images"], threshold)
        assert page.errors == []
    assert info == {"backend": "wasm", "version": versions["none"]}
    assert raw.shape == keras_out.shape == (PARITY_CANVASES, 625, 15)
    assert np.abs(raw - keras_out).max() <= ExportParams().float_tolerance
    nms = NmsParams(merge=True)  # the page merges when the manifest says so; the export below says so
    expected = boxes.postprocess(keras_out, threshold, nms.iou_threshold, nms.max_detections, nms.merge)
    assert sum(len(d["labels"]) for d in expected) >= PARITY_CANVASES  # the comparison is not vacuous
    mismatched = [
        i
        for i, (a, b) in enumerate(zip(expected, detections, strict=True))
        if not export.detections_match(a, b)
    ]
    assert mismatched == []
    for a, b in zip(expected, detections, strict=True):  # same order, best first
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(b["boxes"], a["boxes"], atol=0.01)  # merged by the same rule
    plain = boxes.postprocess(keras_out, threshold, nms.iou_threshold, nms.max_detections)
    assert any(not np.allclose(a["boxes"], p["boxes"]) for a, p in zip(expected, plain, strict=True))


@pytest.mark.parametrize("quant", ["float16", "uint8"])
def test_quantized_model_in_chromium_matches_the_dequantized_graph_in_python(versions, quant):
    """The browser runs the quantized artifact exactly as the Python check that measures its mAP cost."""
    with serve_models(versions["root"]) as url, chromium_page(url) as page:
        load_in_page(page, versions[quant], "wasm")
        raw, _ = run_in_page(page, versions["images"])
    assert np.abs(raw - versions[f"{quant}_python"]).max() <= ExportParams().float_tolerance
    assert np.abs(raw - versions["keras"]).max() > 1e-5  # the weights really are quantized


def test_cpu_backend_gives_the_same_detections(versions):
    threshold = _busy_threshold(versions["keras"])
    with serve_models(versions["root"]) as url, chromium_page(url) as page:
        assert load_in_page(page, versions["none"], "cpu")["backend"] == "cpu"
        raw, _ = run_in_page(page, versions["images"][:5], threshold)
    assert np.abs(raw - versions["keras"][:5]).max() <= ExportParams().float_tolerance


def test_browser_refuses_a_tampered_weight_file(versions, tmp_path):
    folder = shutil.copytree(versions["root"] / versions["none"], tmp_path / "tampered")
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
