"""multidigit/export.py and multidigit/manifest.py: conversion, Python parity check, manifest, sha256 checks.

A tiny untrained detector (width 8) stands in for the trained one, so nothing here depends on pipeline
outputs; it has the real (B, 100, 100, 1) -> (B, N, 15) contract.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from multidigit import export
from multidigit.manifest import IntegrityError, file_sha256, verify_model_dir
from multidigit.params import ExportParams, NmsParams

METRICS = {"metrics/mAP50": 0.99, "metrics/mAP50-95": 0.9, "operating/score_threshold": 0.41}


def stroke_canvases(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (n, 100, 100) canvases of white digit-sized strokes on black, their xywh boxes and labels."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 100, 100), np.uint8)
    boxes = np.zeros((n, 3, 4), np.float32)
    labels = np.full((n, 3), -1, np.int16)
    for i in range(n):
        for k in range(int(rng.integers(1, 4))):
            w, h = (int(v) for v in rng.integers(10, 28, 2))
            x, y = (int(v) for v in rng.integers(0, 100 - 28, 2))
            images[i, y : y + h, x : x + 3] = 255  # a "1" with a bar: enough structure for numerics
            images[i, y : y + 3, x : x + w] = 200
            boxes[i, k], labels[i, k] = (x, y, w, h), rng.integers(0, 10)
    return images, boxes, labels


def save_tiny_detector(path: Path) -> Path:
    """An untrained width-8 detector, seeded, its prediction conv scaled up so scores spread over (0, 1)
    like a trained model's instead of crowding at one value (where any rounding reorders them)."""
    import keras

    from multidigit.model import build_detector
    from multidigit.params import ModelParams

    keras.utils.set_random_seed(7)
    detector = build_detector(ModelParams(width=8))
    predict = detector.get_layer("predict")
    kernel, bias = predict.get_weights()
    predict.set_weights([kernel * 8.0, bias])
    detector.save(path)
    return path


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory) -> Path:
    return save_tiny_detector(tmp_path_factory.mktemp("detector") / "detector.keras")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_detector) -> Path:
    """One float export of the tiny detector, shared by the read-only tests below."""
    out = tmp_path_factory.mktemp("tfjs")
    return export.export_version(
        tiny_detector,
        out,
        cfg=ExportParams(quantization="none", parity_canvases=8),
        nms=NmsParams(),
        metrics=METRICS,
        test=stroke_canvases(12),
    )


# ---------------------------------------------------------------- pure helpers
def test_operating_thresholds_prefer_the_calibrated_score():
    nms = NmsParams(score_threshold=0.5, iou_threshold=0.4, max_detections=7)
    calibrated = export.operating_thresholds(METRICS, nms)
    assert (calibrated["score"], calibrated["iou"], calibrated["max_detections"]) == (0.41, 0.4, 7)
    assert "operating/score_threshold" in calibrated["score_source"]
    assert export.operating_thresholds({}, nms)["score"] == 0.5


def test_detections_match_needs_same_labels_and_tight_boxes():
    a = {"boxes": np.array([[10, 10, 20, 30], [50, 50, 20, 20]], np.float32), "labels": np.array([3, 7])}
    shifted = {"boxes": a["boxes"] + np.array([0.2, 0, 0, 0], np.float32), "labels": a["labels"]}
    assert export.detections_match(a, {"boxes": a["boxes"][::-1], "labels": a["labels"][::-1]})
    assert export.detections_match(a, shifted)  # IoU ~0.99
    assert not export.detections_match(a, {"boxes": a["boxes"], "labels": np.array([3, 8])})
    assert not export.detections_match(a, {"boxes": a["boxes"] + 3, "labels": a["labels"]})  # IoU < 0.95
    assert not export.detections_match(a, {"boxes": a["boxes"][:1], "labels": a["labels"][:1]})


def test_export_refuses_a_failed_gate(tmp_path, monkeypatch, params_dict):
    params_dict["evaluate"]["gates"]["stage3"] = {"map50": 0.97, "map50_95": 0.85}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/stage3.json").write_text(json.dumps({"metrics/mAP50": 0.5, "metrics/mAP50-95": 0.3}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"gate failed: stage3 map50 0\.500 < 0\.970.*nothing exported"):
        export.main("params.yaml")
    assert not (tmp_path / "models").exists()


def test_export_names_missing_metrics(tmp_path, monkeypatch, params_dict):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"metrics/stage3\.json not found"):
        export.main("params.yaml")


def test_unknown_quantization_is_refused():
    with pytest.raises(ValueError, match=r"export\.quantization: 'int4', allowed: none, float16, uint8"):
        export.convert_model(None, Path("."), "int4")


# ---------------------------------------------------------------- a real conversion
@pytest.mark.slow
def test_export_writes_a_verified_version_with_its_manifest(exported):
    manifest = verify_model_dir(exported)
    assert manifest["version"] == exported.name and exported.name.endswith("-none")
    assert {"model.json", "group1-shard1of1.bin"} <= set(manifest["files"])
    for name, entry in manifest["files"].items():
        assert entry == {"size": (exported / name).stat().st_size, "sha256": file_sha256(exported / name)}
    assert manifest["input"]["shape"] == [1, 100, 100, 1] and manifest["classes"] == list("0123456789")
    assert manifest["grid"] == {"stride": 4, "size": 25, "boxes_per_cell": 1, "slots": 625}
    assert manifest["output"]["shape"] == [625, 15]
    assert manifest["thresholds"]["score"] == 0.41 and manifest["metrics"] == METRICS
    quant = manifest["quantization"]
    assert quant["dtype"] == "none" and quant["parity"]["canvases"] == 8
    assert quant["parity"]["max_abs_diff"] <= 1e-3  # the converted graph matches Keras
    assert quant["parity"]["detections_matched"] == 8
    assert quant["map50_95_cost"] == pytest.approx(quant["map50_95_keras"] - quant["map50_95_tfjs"], abs=1e-4)
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


@pytest.mark.slow
def test_tampered_weight_file_fails_its_sha256_check(exported, tmp_path):
    copy = shutil.copytree(exported, tmp_path / exported.name)
    shard = copy / "group1-shard1of1.bin"
    expected = file_sha256(shard)
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        verify_model_dir(copy)
    message = str(err.value)
    assert "\n" not in message and str(shard) in message
    assert f"expected {expected} got {file_sha256(shard)}" in message


@pytest.mark.slow
def test_missing_and_unlisted_files_are_refused(exported, tmp_path):
    copy = shutil.copytree(exported, tmp_path / "v")
    (copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=r"unlisted files extra\.bin"):
        verify_model_dir(copy)
    (copy / "extra.bin").unlink()
    (copy / "group1-shard1of1.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"group1-shard1of1\.bin is listed but missing"):
        verify_model_dir(copy)


@pytest.mark.slow
def test_quantization_shrinks_weights_and_a_tight_tolerance_fails_parity(tiny_detector, tmp_path):
    from multidigit.model import inference_model

    model = inference_model(export.load_detector(tiny_detector))
    sizes = {}
    for quant in ("none", "uint8"):
        (tmp_path / quant).mkdir()
        export.convert_model(model, tmp_path / quant, quant)
        sizes[quant] = (tmp_path / quant / "group1-shard1of1.bin").stat().st_size
    assert sizes["uint8"] < sizes["none"] / 3.5  # 1 byte per weight instead of 4, plus min/scale
    images, boxes, labels = stroke_canvases(4)
    cfg = ExportParams(quantization="uint8", parity_canvases=4, quantized_tolerance=1e-6)
    thresholds = export.operating_thresholds({}, NmsParams(score_threshold=0.0))  # every slot a candidate
    with pytest.raises(
        ValueError,
        match=r"parity: uint8 TF\.js max_abs_diff_probs_candidates .* > tolerance 1e-06 on 4 test",
    ):
        export.check_converted(
            model,
            tmp_path / "uint8",
            images[..., None] / np.float32(255),
            (boxes, labels),
            cfg,
            NmsParams(),
            thresholds,
        )
