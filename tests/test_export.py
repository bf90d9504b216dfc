"""multidigit/artifact.py, export.py and manifest.py: the graph with post-processing, conversion, parity,
manifest, sha256 checks.

A tiny untrained detector (width 8) stands in for the trained one, so nothing here depends on pipeline
outputs; it has the real (B, 100, 100, 1) -> (B, G, G, A, 15) contract. Thresholds are chosen from its
scores (`busy_threshold`) so NMS, the merge and the one-box rule all have work to do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from multidigit import artifact, boxes, export
from multidigit.manifest import IntegrityError, file_sha256, verify_model_dir
from multidigit.params import ExportParams, NmsParams
from multidigit.predict import postprocess_by

METRICS = {"metrics/mAP50": 0.99, "metrics/mAP50-95": 0.9, "operating/score_threshold": 0.41}
# Post-processing with every step active: the merge, the fit to ink, and a one-box rule strict enough to
# hide boxes.
POST = NmsParams(merge=True, agnostic_iou=0.3, agnostic_containment=0.6, ink_shrink=0.2, ink_grow=1)


def stroke_canvases(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (n, 100, 100) canvases of white digit-sized strokes on black, their xywh boxes and labels."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 100, 100), np.uint8)
    boxes_ = np.zeros((n, 3, 4), np.float32)
    labels = np.full((n, 3), -1, np.int16)
    for i in range(n):
        for k in range(int(rng.integers(1, 4))):
            w, h = (int(v) for v in rng.integers(10, 28, 2))
            x, y = (int(v) for v in rng.integers(0, 100 - 28, 2))
            images[i, y : y + h, x : x + 3] = 255  # a "1" with a bar: enough structure for numerics
            images[i, y : y + 3, x : x + w] = 200
            boxes_[i, k], labels[i, k] = (x, y, w, h), rng.integers(0, 10)
    return images, boxes_, labels


def mnist_canvases(mnist_splits: Path, n: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 100, 100) canvases of 1-6 real MNIST test digits pasted at random places (may overlap)."""
    from multidigit.canvas import compose_canvas
    from multidigit.mnist import read_split

    digits, _ = read_split("test", mnist_splits)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 7))
        corners = rng.integers(0, 100 - 28, (k, 2))
        out.append(compose_canvas(list(digits[rng.integers(0, len(digits), k)]), corners, 100))
    return np.stack(out)


def tiny_detector():
    """An untrained width-8 detector, seeded, its prediction conv scaled up and unbiased so scores spread
    over (0, 1) like a trained model's instead of crowding at one value (where any rounding reorders them)."""
    import keras

    from multidigit.model import build_detector
    from multidigit.params import ModelParams

    keras.utils.set_random_seed(7)
    # no full-resolution stem: with it this untrained net's scores crowd at 0.0500 even scaled up, and a box
    # scored exactly at the threshold is listed by one runtime and not the other (a plain conv: no new op)
    detector = build_detector(ModelParams(width=8, stem_filters=0))
    predict = detector.get_layer("predict")
    kernel, bias = predict.get_weights()
    # objectness bias 0 instead of the 0.01 prior: untrained scores would all sit near 0.01 * 0.1
    predict.set_weights([kernel * 8.0, np.zeros_like(bias)])
    return detector


def save_tiny_detector(path: Path) -> Path:
    tiny_detector().save(path)
    return path


def decoded_of(detector, images: np.ndarray, peaks: bool = False) -> np.ndarray:
    """(B, N, 15) Keras inference-model output: the input of the numpy reference post-processing."""
    from multidigit.model import inference_model
    from multidigit.preprocess import to_model_input

    return inference_model(detector, peaks).predict(to_model_input(images), verbose=0)


def busy_threshold(decoded: np.ndarray) -> float:
    """A score threshold that leaves a few candidates per canvas: the middle of the widest gap between
    slot scores ranked 0.5%-2%, far from any score, so float rounding cannot move a slot across it."""
    ranked = np.sort((decoded[..., 4] * decoded[..., 5:].max(-1)).ravel())[::-1]
    lo, hi = len(ranked) // 200, len(ranked) // 50
    i = lo + int(np.argmax(ranked[lo:hi] - ranked[lo + 1 : hi + 1]))
    return float(ranked[i] + ranked[i + 1]) / 2


def reference(
    decoded: np.ndarray, images: np.ndarray, threshold: float, post: NmsParams = POST
) -> list[boxes.Detections]:
    return postprocess_by(post, decoded, images, threshold)


def _by_box(det: dict) -> dict:
    """A canvas's detections ordered by their box (whole pixels), then label: two graphs may list boxes
    whose scores tie within the quantization's error in either order (an untrained SiLU net ties often)."""
    if len(det["labels"]) == 0:
        return det
    boxes = np.round(np.asarray(det["boxes"], dtype=np.float64))
    order = np.lexsort((np.asarray(det["labels"]), boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0]))
    return {key: np.asarray(det[key])[order] for key in ("labels", "shown", "boxes", "scores")}


def assert_same_detections(got: list, want: list, atol: float) -> None:
    """Same detections on every canvas: labels and shown flags equal, boxes and scores within atol, the
    detections paired by box rather than by score order."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        g, w = _by_box(g), _by_box(w)
        np.testing.assert_array_equal(g["labels"], w["labels"], err_msg=f"canvas {i}")
        np.testing.assert_array_equal(g["shown"], w["shown"], err_msg=f"canvas {i}")
        np.testing.assert_allclose(g["boxes"], w["boxes"], atol=atol, err_msg=f"canvas {i}")
        np.testing.assert_allclose(g["scores"], w["scores"], atol=atol, err_msg=f"canvas {i}")


@pytest.fixture(scope="module")
def detector():
    return tiny_detector()


@pytest.fixture(scope="module")
def canvases() -> np.ndarray:
    return stroke_canvases(16)[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, detector) -> Path:
    """One float export of the tiny detector with every post-processing step on, shared below."""
    images, gt_boxes, gt_labels = stroke_canvases(12)
    metrics = {**METRICS, "operating/score_threshold": busy_threshold(decoded_of(detector, images))}
    return export.export_artifact(
        detector, tmp_path_factory.mktemp("tfjs") / "v-float", POST, "none", version="v-float",
        cfg=ExportParams(parity_canvases=8), metrics=metrics, images=images, gt=(gt_boxes, gt_labels),
    )  # fmt: skip


# ---------------------------------------------------------------- the numpy reference
def test_one_box_rule_hides_a_second_class_on_the_same_digit_but_keeps_a_chain_greedy():
    b = np.array([[10, 10, 20, 30], [11, 10, 20, 30], [60, 10, 20, 30], [31, 10, 20, 30]], np.float32)
    labels = np.array([6, 0, 1, 6])
    np.testing.assert_array_equal(boxes.one_box_per_digit(b, labels, 0.5, 1.0), [1, 0, 1, 1])
    # containment: a small box of another class inside a better one is hidden, the reverse is not
    nested = np.array([[10, 10, 30, 30], [15, 15, 10, 10], [50, 50, 10, 10], [48, 48, 30, 30]], np.float32)
    shown = boxes.one_box_per_digit(nested, np.array([1, 2, 3, 4]), 1.0, 0.8)
    np.testing.assert_array_equal(shown, [1, 0, 1, 1])
    # greedy: a box hidden by a better one no longer hides the boxes after it
    chain = np.array([[0, 0, 20, 20], [4, 0, 20, 20], [8, 0, 20, 20]], np.float32)
    np.testing.assert_array_equal(boxes.one_box_per_digit(chain, np.array([1, 2, 1]), 0.5, 1.0), [1, 0, 1])
    np.testing.assert_array_equal(boxes.one_box_per_digit(chain, np.array([1, 2, 3]), 1.0, 1.0), [1, 1, 1])


def test_containment_any_class_also_hides_a_stroke_read_again_as_its_own_digit():
    # a 5 found whole, its lower bowl read again as a 5 (NMS keeps it: IoU is only the area ratio, 0.3),
    # and a neighbouring 5 that touches the first box (containment 0.1: kept)
    b = np.array([[10, 10, 20, 30], [14, 24, 14, 13], [28, 10, 20, 30]], np.float32)
    labels = np.array([5, 5, 5])
    assert boxes.iou_matrix(b[:1], b[1:2])[0, 0] < 0.45  # what class-aware NMS would let through
    np.testing.assert_array_equal(boxes.one_box_per_digit(b, labels, 0.3, 0.5), [1, 1, 1])
    np.testing.assert_array_equal(boxes.one_box_per_digit(b, labels, 0.3, 0.5, True), [1, 0, 1])
    # greedy in score order as before: the nested box is kept when it scores better than its host
    np.testing.assert_array_equal(boxes.one_box_per_digit(b[[1, 0, 2]], labels, 0.3, 0.5, True), [1, 1, 1])


def test_shown_only_keeps_the_shown_rows():
    det = {
        "boxes": np.arange(12, dtype=np.float32).reshape(3, 4),
        "scores": np.array([0.9, 0.8, 0.7], np.float32),
        "labels": np.array([1, 2, 3], np.int32),
        "shown": np.array([True, False, True]),
    }
    kept = artifact.shown_only(det)
    assert kept["labels"].tolist() == [1, 3] and kept["boxes"][1].tolist() == [8, 9, 10, 11]


# ---------------------------------------------------------------- pure export helpers
def test_operating_thresholds_prefer_the_calibrated_score_and_record_every_post_param():
    nms = NmsParams(
        score_threshold=0.5, iou_threshold=0.4, max_detections=7, agnostic_iou=0.6, agnostic_containment=0.7,
        peaks=True,
    )  # fmt: skip
    calibrated = export.operating_thresholds(METRICS, nms)
    assert (calibrated["score"], calibrated["iou"], calibrated["max_detections"]) == (0.41, 0.4, 7)
    assert calibrated["agnostic_iou"] == 0.6 and calibrated["agnostic_containment"] == 0.7
    assert calibrated["peaks"] is True
    assert "operating/score_threshold" in calibrated["score_source"]
    assert export.operating_thresholds({}, nms)["score"] == 0.5


def test_parity_failure_names_what_differs():
    det = {"boxes": np.zeros((1, 4), np.float32), "scores": np.ones(1, np.float32)}
    a = {**det, "labels": np.array([3]), "shown": np.array([True])}
    moved = {**a, "boxes": a["boxes"] + 0.01}
    flipped = {**a, "shown": np.array([False])}
    report = export.parity_report([a, a], [moved, a])
    assert report["detections_matched"] == 2 and report["max_abs_diff_boxes_px"] == pytest.approx(0.01)
    assert "max_abs_diff_boxes_px 0.01 > tolerance 0.001" in export.parity_failure(
        report, ExportParams(quantization="none")
    )
    assert export.parity_failure(report, ExportParams(quantization="uint8")) is None
    report = export.parity_report([a, a], [flipped, a])
    assert "detections differ on 1 of 2 test canvases (allowed 0)" in export.parity_failure(
        report, ExportParams(quantization="none")
    )
    assert export.parity_failure(report, ExportParams(quantization="float16", quantized_mismatches=1)) is None
    broken = {**a, "boxes": np.full((1, 4), np.nan, np.float32)}  # e.g. a constant float16 turned to inf
    half = ExportParams(quantization="float16")
    for flips in (None, export.parity_tolerances(half)):  # non-finite is never a flip
        report = export.parity_report([a, a], [broken, a], flips)
        assert "max_abs_diff_boxes_px inf > tolerance 2.0" in export.parity_failure(report, half)
    # a quantized graph: a box moved beyond the tolerance by a merge vote at the threshold is a flip
    voted = {**a, "boxes": a["boxes"] + np.array([0, 4, 0, -4], np.float32)}
    report = export.parity_report([a, a], [voted, a], export.parity_tolerances(half))
    keys = ("detections_matched", "moved_by_flip", "max_abs_diff_boxes_px")
    assert tuple(report[k] for k in keys) == (1, 1, 0)
    assert export.parity_failure(report, half) is None  # quantized_mismatches 3
    assert "detections differ on 1 of 2 test canvases (allowed 0)" in export.parity_failure(
        report, half.model_copy(update={"quantized_mismatches": 0})
    )
    report = export.parity_report([a, a], [voted, a])  # without flip tolerances it is a moved box
    assert "max_abs_diff_boxes_px 4 > tolerance 2.0" in export.parity_failure(report, half)


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
        export.convert_artifact(None, Path("."), "int4")


# ---------------------------------------------------------------- the graph equals Keras + numpy
@pytest.mark.slow
def test_module_equals_keras_and_numpy_postprocessing(detector, canvases, mnist_splits):
    module = artifact.build_detector_fn(detector, POST)
    images = np.concatenate([canvases, mnist_canvases(mnist_splits, 16)])
    decoded = decoded_of(detector, images)
    threshold = busy_threshold(decoded)
    want = reference(decoded, images, threshold)
    got = artifact.detect_canvases(module, images, threshold)
    assert_same_detections(got, want, atol=1e-3)
    kept, shown = sum(len(d["labels"]) for d in want), sum(int(d["shown"].sum()) for d in want)
    assert shown < kept and shown >= len(images) // 2  # the rule hid some boxes and left most
    other_class_only = POST.model_copy(update={"containment_any_class": False})
    assert_same_detections(
        artifact.detect_canvases(artifact.build_detector_fn(detector, other_class_only), images, threshold),
        reference(decoded, images, threshold, other_class_only),
        atol=1e-3,
    )
    plain = reference(
        decoded, images, threshold, NmsParams(merge=False, agnostic_iou=1.0, agnostic_containment=1.0)
    )
    assert any(not np.allclose(g["boxes"], p["boxes"]) for g, p in zip(got, plain, strict=True))  # merged
    assert all(p["shown"].all() for p in plain)  # 1.0 turns the rule off


def test_graph_fit_to_ink_equals_numpy_on_random_ink_and_boxes():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    moved = 0
    for trial in range(60):
        image = np.zeros((100, 100), np.uint8)
        for _ in range(6):  # blocks of ink, some touching, plus scattered specks
            x0, y0 = rng.integers(0, 92, 2)
            image[y0 : y0 + rng.integers(1, 25), x0 : x0 + rng.integers(1, 25)] = rng.integers(1, 256)
        image[rng.random((100, 100)) < 0.005] = 9
        k = int(rng.integers(0, 8))
        wh = rng.uniform(0.3, 45, (k, 2))
        got_in = np.concatenate([rng.uniform(-8, 100, (k, 2)), wh], axis=1).astype(np.float32)
        post = NmsParams(ink_shrink=float(rng.choice([0.1, 0.25, 0.5])), ink_grow=int(rng.integers(0, 4)))
        want = boxes.fit_to_ink(image, got_in, post.ink_shrink, post.ink_grow)
        got = artifact._fit_to_ink(tf, tf.constant(image / 255, tf.float32), tf.constant(got_in), post)
        np.testing.assert_array_equal(got.numpy(), want, err_msg=f"trial {trial}")
        moved += int((np.abs(want - np.round(got_in)) > 0).any(axis=1).sum())
    assert moved > 20  # many boxes actually moved, so the comparison is not vacuous


@pytest.mark.slow
def test_module_with_peaks_equals_keras_and_numpy_and_lists_one_slot_per_peak(detector, canvases):
    post = POST.model_copy(update={"peaks": True})
    module = artifact.build_detector_fn(detector, post)
    decoded, spread = decoded_of(detector, canvases, peaks=True), decoded_of(detector, canvases)
    obj = spread[..., 4].reshape(len(canvases), 25, 25)
    padded = np.pad(obj, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    best = np.max([padded[:, i : i + 25, j : j + 25] for i in range(3) for j in range(3)], axis=0)
    np.testing.assert_array_equal(decoded[..., 4], np.where(obj >= best, obj, 0.0).reshape(len(canvases), -1))
    assert 0 < (decoded[..., 4] > 0).sum() < (spread[..., 4] > 0).sum()
    threshold = busy_threshold(decoded)  # busy among the peaks: a few listed per canvas
    want = reference(decoded, canvases, threshold, post)
    assert sum(len(d["labels"]) for d in want) >= len(canvases) // 2  # peaks are left to compare
    assert_same_detections(artifact.detect_canvases(module, canvases, threshold), want, atol=1e-3)


@pytest.mark.slow
def test_exported_graphs_contain_nms_v5_and_equal_keras_and_numpy(exported, detector, canvases):
    spec = json.loads((exported / "model.json").read_text())
    ops = {node["op"] for node in spec["modelTopology"]["node"]}
    assert artifact.NMS_OP in ops and "CombinedNonMaxSuppression" not in ops
    assert set(spec["signature"]["inputs"]) == set(artifact.INPUTS)
    assert set(spec["signature"]["outputs"]) == set(artifact.OUTPUTS)
    decoded = decoded_of(detector, canvases)
    threshold = busy_threshold(decoded)
    want = reference(decoded, canvases, threshold)
    assert sum(len(d["labels"]) for d in want) > len(canvases)  # the comparison is not vacuous
    for graph in (artifact.load_artifact(exported), export.load_tfjs_graph(exported)):
        assert_same_detections(artifact.detect_canvases(graph, canvases, threshold), want, atol=1e-3)


@pytest.mark.slow
def test_no_two_shown_boxes_overlap_beyond_the_rule(detector, canvases, mnist_splits):
    unfitted = artifact.build_detector_fn(detector, POST.model_copy(update={"ink_shrink": 0.0}))
    fitted = artifact.build_detector_fn(detector, POST)
    images = np.concatenate([canvases, mnist_canvases(mnist_splits, 32, seed=1)])
    found = moved = 0
    pairs = zip(*(artifact.detect_canvases(g, images, 0.0) for g in (unfitted, fitted)), strict=True)
    for det, fit in pairs:  # threshold 0: every slot a candidate
        shown = artifact.shown_only(det)
        iou = boxes.iou_matrix(shown["boxes"], shown["boxes"])
        inside = boxes.containment_matrix(shown["boxes"], shown["boxes"])  # [i, j]: i inside j
        other = shown["labels"][:, None] != shown["labels"][None, :]
        later = np.tril(np.ones_like(other), -1)  # i scored below j
        assert not (other & (iou > POST.agnostic_iou)).any()
        assert not (later & (inside > POST.agnostic_containment)).any()  # any class: containment_any_class
        found += len(det["labels"]) - len(shown["labels"])
        # the rule judges the boxes as predicted: fitting them to ink after it moves edges, never what is
        # listed
        for key in ("labels", "shown", "scores"):
            np.testing.assert_array_equal(fit[key], det[key])
        moved += int((fit["boxes"] != det["boxes"]).any(axis=1).sum())
    assert found > 0 and moved > 0  # the rule had boxes to hide, the fit boxes to move


# ---------------------------------------------------------------- the published folder
@pytest.mark.slow
def test_export_writes_a_verified_version_with_its_manifest(exported):
    manifest = verify_model_dir(exported)
    assert manifest["version"] == exported.name
    files = set(manifest["files"])
    assert {"model.json", "group1-shard1of1.bin", "saved_model/saved_model.pb"} <= files
    assert any(name.startswith("saved_model/variables/") for name in files)
    for name, entry in manifest["files"].items():
        assert entry == {"size": (exported / name).stat().st_size, "sha256": file_sha256(exported / name)}
    assert manifest["inputs"]["image"]["shape"] == [1, 100, 100, 1] and manifest["classes"] == list(
        "0123456789"
    )
    assert set(manifest["outputs"]) == {"boxes", "scores", "labels", "shown", "count"}
    assert manifest["grid"] == {"stride": 4, "size": 25, "boxes_per_cell": 1, "slots": 625}
    post = manifest["thresholds"]
    baked = ("iou", "merge", "peaks", "agnostic_iou", "agnostic_containment", "containment_any_class")
    assert tuple(post[k] for k in baked) == (0.45, True, False, 0.3, 0.6, True)
    assert (post["ink_shrink"], post["ink_grow"]) == (0.2, 1)
    assert post["score"] == manifest["metrics"]["operating/score_threshold"]
    quant = manifest["quantization"]
    assert quant["dtype"] == "none" and quant["parity"]["canvases"] == 8
    assert quant["parity"]["detections_matched"] == 8 and quant["parity"]["detections"] > 0
    assert quant["parity"]["max_abs_diff_boxes_px"] <= 1e-3  # the converted graph matches the module
    assert artifact.NMS_OP in quant["ops"]
    assert quant["map50_95_cost"] == pytest.approx(quant["map50_95_keras"] - quant["map50_95_tfjs"], abs=1e-4)
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["group1-shard1of1.bin", "saved_model/variables/variables.data-00000-of-00001"]
)
def test_tampered_weight_file_fails_its_sha256_check(exported, tmp_path, name):
    copy = shutil.copytree(exported, tmp_path / exported.name)
    target = copy / name
    expected = file_sha256(target)
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        verify_model_dir(copy)
    message = str(err.value)
    assert "\n" not in message and str(target) in message
    assert f"expected {expected} got {file_sha256(target)}" in message


@pytest.mark.slow
def test_missing_and_unlisted_files_are_refused(exported, tmp_path):
    copy = shutil.copytree(exported, tmp_path / "v")
    (copy / "saved_model" / "extra.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=r"unlisted files saved_model/extra\.bin"):
        verify_model_dir(copy)
    (copy / "saved_model" / "extra.bin").unlink()
    (copy / "group1-shard1of1.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"group1-shard1of1\.bin is listed but missing"):
        verify_model_dir(copy)


@pytest.mark.slow
def test_quantization_shrinks_weights_keeps_float16_parity_and_a_tight_tolerance_fails(
    detector, canvases, tmp_path
):
    module = artifact.build_detector_fn(detector, POST)
    sizes = {}
    for quant in ("none", "float16", "uint8"):
        (tmp_path / quant).mkdir()
        export.convert_artifact(module, tmp_path / quant, quant)
        sizes[quant] = (tmp_path / quant / "group1-shard1of1.bin").stat().st_size
    assert sizes["uint8"] < sizes["none"] / 3.5  # 1 byte per weight instead of 4, plus min/scale
    threshold = busy_threshold(decoded_of(detector, canvases))
    cfg = ExportParams(quantization="uint8", parity_canvases=16, quantized_tolerance=1e-7)
    with pytest.raises(
        ValueError, match=r"parity: uint8 TF\.js (max_abs_diff_scores .* > tolerance 1e-07|detections)"
    ):
        export.check_converted(module, tmp_path / "uint8", canvases, cfg, threshold)
    export.check_converted(module, tmp_path / "none", canvases, ExportParams(quantization="none"), threshold)
    # float16 rounds the graph's constants too: one out of its range would turn boxes to NaN here
    half = ExportParams(quantization="float16")
    export.check_converted(module, tmp_path / "float16", canvases, half, threshold)
