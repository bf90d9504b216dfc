"""Export: the stage-3 Keras detector -> SavedModel -> TF.js graph model in `models/tfjs/<version>/`.

    detector.keras -> inference_model (B, 100, 100, 1) -> (B, N, 15) decoded   (model contract)
      -> Keras 3 `model.export` SavedModel (temp folder)
      -> tensorflowjs converter, weights quantized per params export.quantization
      -> models/tfjs/<version>/{model.json, group1-shard*.bin, manifest.json}   (written atomically)

Before the folder is published the converted graph is run back in Python (`load_tfjs_graph`, the
quantized weights dequantized exactly as TF.js does) against Keras: the raw outputs must agree within
the params tolerance on `parity_canvases` test canvases, and the test-split mAP of both is recorded, so
the manifest states what quantization cost. The DVC stage `export` runs `main()` only after
evaluate@stage3 passed its gate; it then registers the version in MLflow (multidigit.registry).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from multidigit import boxes
from multidigit.atomic import atomic_path, save_json
from multidigit.constants import DEFAULT_PARAMS_FILE, METRICS_DIR, MODELS_DIR
from multidigit.evaluate import SCORE_FLOOR  # mAP and live slots: the same floor as evaluate@stage3
from multidigit.manifest import MANIFEST_NAME, MODEL_JSON, build_manifest, file_sha256
from multidigit.params import ExportParams, NmsParams, load_params

TFJS_DIR = MODELS_DIR / "tfjs"
DETECTOR_PATH = MODELS_DIR / "stage3" / "detector.keras"
METRICS_PATH = METRICS_DIR / "stage3.json"
# tensorflowjs quantization_dtype_map per params value (True = every weight, the CLI's bare flag).
QUANTIZE: dict[str, dict[str, bool] | None] = {
    "none": None,
    "float16": {"float16": True},
    "uint8": {"uint8": True},
}
GATE_KEYS = ("metrics/mAP50", "metrics/mAP50-95")
MATCH_IOU = 0.95  # a TF.js detection matches its Keras twin: same label and IoU above this
BATCH = 256

Predict = Callable[[np.ndarray], np.ndarray]  # float32 (B, 100, 100, 1) -> (B, N, 15)


# ---------------------------------------------------------------- conversion
def load_detector(path: Path):
    """The Keras training detector (B, 100, 100, 1) -> (B, G, G, A, 15) from a .keras file."""
    import keras

    import multidigit.model  # noqa: F401  registers DecodeGrid and friends for deserialisation

    if not Path(path).is_file():
        raise FileNotFoundError(f"export: detector {path} not found; run `dvc repro train@stage3` first")
    return keras.saving.load_model(path, compile=False)


def grid_info(detector) -> dict[str, int]:
    """{"stride", "size", "boxes_per_cell", "slots"} of a training detector, for the manifest."""
    from multidigit.model import grid_of

    stride, per_cell = grid_of(detector)
    size = boxes.grid_size(stride)
    return {"stride": stride, "size": size, "boxes_per_cell": per_cell, "slots": size * size * per_cell}


def with_direct_dilations(model):
    """A copy of `model` whose dilated 3x3 convs export as one Conv2D op each (same weights).

    TF lowers a dilated `tf.nn.convolution` to SpaceToBatchND -> Conv2D -> BatchToSpaceND; TF.js's wasm
    backend spends more time in those two reshuffles than in all the convolutions (profiled: ~13 of
    ~25 ms per canvas). `tf.nn.conv2d(dilations=)` is a single op that TF.js (XNNPACK) runs directly.
    """
    import keras
    import tensorflow as tf

    class DirectDilatedConv2D(keras.layers.Conv2D):
        def convolution_op(self, inputs, kernel):
            return tf.nn.conv2d(
                inputs, kernel, self.strides, self.padding.upper(), dilations=self.dilation_rate
            )

    def clone(layer):
        dilated = type(layer) is keras.layers.Conv2D and any(d != 1 for d in layer.dilation_rate)
        if dilated and layer.data_format == "channels_last":
            return DirectDilatedConv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _quiet_tfdf() -> None:
    # tensorflowjs imports tensorflow_decision_forests, whose welcome banner imports IPython (not
    # installed) whenever stdout is not a terminal: under pytest, DVC or Prefect. Ask for no banner.
    os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")


def convert_model(model, out_dir: Path, quantization: str) -> None:
    """Write `model` as a TF.js graph model (model.json + weight shards) into `out_dir`.

    Args:
        model: a Keras model with one (B, 100, 100, 1) input.
        out_dir: existing empty folder.
        quantization: "none", "float16" or "uint8" (weights only; activations stay float32).
    """
    if quantization not in QUANTIZE:
        raise ValueError(f"export.quantization: {quantization!r}, allowed: {', '.join(QUANTIZE)}")
    _quiet_tfdf()
    from tensorflowjs.converters.tf_saved_model_conversion_v2 import convert_tf_saved_model

    model = with_direct_dilations(model)
    with tempfile.TemporaryDirectory(prefix="savedmodel-") as tmp:
        model.export(str(Path(tmp) / "saved_model"), format="tf_saved_model", verbose=False)
        convert_tf_saved_model(
            str(Path(tmp) / "saved_model"), str(out_dir), quantization_dtype_map=QUANTIZE[quantization]
        )


def load_tfjs_graph(model_dir: Path) -> Predict:
    """Run an exported TF.js graph model in Python TensorFlow.

    The weights are read back with tensorflowjs's own reader (uint8/float16 dequantized as TF.js
    does), put into the graph's Const nodes and the graph is imported whole, so this measures exactly
    the artifact the browser loads.

    Args:
        model_dir: a folder with model.json and its weight shards.
    Returns:
        A function float32 (B, 100, 100, 1) -> float32 (B, N, 15).
    """
    _quiet_tfdf()
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflowjs.read_weights import read_weights

    spec = json.loads((Path(model_dir) / MODEL_JSON).read_text())
    graph_def = tf.compat.v1.GraphDef()
    json_format.ParseDict(spec["modelTopology"], graph_def, ignore_unknown_fields=True)
    weights = {
        w["name"]: w["data"] for w in read_weights(spec["weightsManifest"], str(model_dir), flatten=True)
    }
    for node in graph_def.node:
        if node.name in weights:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name]))
    (inp,) = spec["signature"]["inputs"].values()
    (out,) = spec["signature"]["outputs"].values()
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    fn = wrapped.prune(
        wrapped.graph.get_tensor_by_name(inp["name"]), wrapped.graph.get_tensor_by_name(out["name"])
    )

    def predict(x: np.ndarray) -> np.ndarray:
        starts = tqdm(range(0, len(x), BATCH), desc="tfjs graph", unit="batch", leave=False)
        return np.concatenate([fn(tf.constant(x[i : i + BATCH])).numpy() for i in starts])

    return predict


# ---------------------------------------------------------------- checks
def operating_thresholds(metrics: dict[str, float], nms: NmsParams) -> dict[str, Any]:
    """Decoding thresholds for the manifest: evaluation's calibrated score threshold when it has one."""
    calibrated = metrics.get("operating/score_threshold")
    return {
        "score": float(calibrated if calibrated is not None else nms.score_threshold),
        "score_source": f"{METRICS_PATH} operating/score_threshold"
        if calibrated is not None
        else "params nms.score_threshold",
        "iou": nms.iou_threshold,
        "max_detections": nms.max_detections,
        "merge": nms.merge,
    }


def detections_match(a: boxes.Detections, b: boxes.Detections, min_iou: float = MATCH_IOU) -> bool:
    """Same number of detections, and each of `a` has a same-label twin in `b` with IoU > min_iou."""
    if len(a["labels"]) != len(b["labels"]):
        return False
    if len(a["labels"]) == 0:
        return True
    iou = boxes.iou_matrix(a["boxes"], b["boxes"])
    iou[a["labels"][:, None] != b["labels"][None, :]] = 0.0
    free = np.ones(len(b["labels"]), bool)
    for row in iou:
        j = int(np.argmax(np.where(free, row, -1.0)))
        if not free[j] or row[j] <= min_iou:
            return False
        free[j] = False
    return True


def map50_95(decoded: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray, nms: NmsParams) -> float:
    """COCO mAP@.5:.95 of decoded outputs (B, N, 15) against padded ground truth (B, K, 4) / (B, K)."""
    from multidigit.coco import coco_detections, coco_ground_truth, coco_metrics

    dets = boxes.postprocess(decoded, SCORE_FLOOR, nms.iou_threshold, nms.max_detections, nms.merge)
    result = coco_metrics(coco_ground_truth(gt_boxes, gt_labels), coco_detections(dets))
    return round(result.stats["metrics/mAP50-95"], 4)


def parity_report(reference: np.ndarray, converted: np.ndarray, thresholds: dict[str, Any]) -> dict[str, Any]:
    """Raw-output differences and final-detection agreement of two (B, N, 15) outputs.

    Slots by reference score: live (>= evaluate's SCORE_FLOOR, what mAP sees) and candidates (>= the
    operating threshold, what the page can show). A dead slot's box is never decoded into a detection
    and its size is an unconstrained exp() that can reach thousands of pixels, where float rounding
    alone exceeds any pixel tolerance, so boxes are compared on live / candidate slots only.
    """
    diff = np.abs(reference - converted)
    score = reference[..., 4] * reference[..., 5:].max(-1)
    live, candidate = score >= SCORE_FLOOR, score >= thresholds["score"]
    post = [
        boxes.postprocess(
            x, thresholds["score"], thresholds["iou"], thresholds["max_detections"], thresholds["merge"]
        )
        for x in (reference, converted)
    ]
    matched = sum(detections_match(a, b) for a, b in zip(*post, strict=True))

    def worst(channels: slice, mask: np.ndarray) -> float:
        return float(diff[..., channels][mask].max()) if mask.any() else 0.0

    return {
        "canvases": len(reference),
        "max_abs_diff": float(diff.max()),  # every slot and channel, boxes in pixels
        "max_abs_diff_probs": float(diff[..., 4:].max()),  # objectness and class probabilities
        "max_abs_diff_boxes_px": worst(slice(0, 4), live),
        "max_abs_diff_probs_candidates": worst(slice(4, None), candidate),
        "max_abs_diff_boxes_px_candidates": worst(slice(0, 4), candidate),
        "live_slots": int(live.sum()),
        "candidate_slots": int(candidate.sum()),
        "detections": int(sum(len(d["labels"]) for d in post[0])),
        "detections_matched": int(matched),  # canvases whose final detections match
    }


def parity_tolerances(cfg: ExportParams) -> dict[str, float]:
    """The limits `parity_failure` applies, keyed by the report entry they bound."""
    if cfg.quantization == "none":
        return {"max_abs_diff_probs": cfg.float_tolerance, "max_abs_diff_boxes_px": cfg.float_tolerance}
    return {
        "max_abs_diff_probs_candidates": cfg.quantized_tolerance,
        "max_abs_diff_boxes_px_candidates": cfg.quantized_box_tolerance,
    }


def parity_failure(report: dict[str, Any], cfg: ExportParams) -> str | None:
    """One line saying how a converted model breaks parity, or None.

    Float: probabilities of every slot and boxes of live slots within `float_tolerance`, and the same
    final detections on every canvas. Quantized: probabilities and boxes of candidate slots within the
    stated quantized tolerances; a detection whose score sits at the threshold may flip, which the
    recorded mAP cost accounts for.
    """
    n, q = report["canvases"], cfg.quantization
    for key, limit in parity_tolerances(cfg).items():
        if report[key] > limit:
            return f"parity: {q} TF.js {key} {report[key]:.4g} > tolerance {limit} on {n} test canvases"
    if q == "none" and report["detections_matched"] < n:
        return f"parity: final detections differ on {n - report['detections_matched']} of {n} test canvases"
    return None


def check_converted(
    model, model_dir: Path, images: np.ndarray, gt: tuple[np.ndarray, np.ndarray], cfg: ExportParams,
    nms: NmsParams, thresholds: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Compare the converted graph with Keras: parity on the first canvases, mAP on all of them.

    Args:
        model: the Keras inference model.
        model_dir: the converted TF.js folder.
        images: float32 (B, 100, 100, 1) test canvases.
        gt: (boxes (B, K, 4), labels (B, K)) of the same canvases.
        cfg: the export block (tolerances, parity canvas count).
        nms: the nms block.
        thresholds: the manifest's decoding thresholds.
    Returns:
        {"parity": {...}, "map50_95_keras", "map50_95_tfjs", "map50_95_cost"}.
    Raises:
        ValueError: the outputs differ beyond the tolerances (`parity_failure`).
    """
    keras_out = model.predict(images, batch_size=BATCH, verbose=0)
    tfjs_out = load_tfjs_graph(model_dir)(images)
    n = min(cfg.parity_canvases, len(images))
    parity = parity_report(keras_out[:n], tfjs_out[:n], thresholds)
    failure = parity_failure(parity, cfg)
    if failure:
        raise ValueError(failure)
    keras_map, tfjs_map = (map50_95(x, *gt, nms) for x in (keras_out, tfjs_out))
    return {
        "parity": {**parity, "tolerance": parity_tolerances(cfg)},
        "map50_95_keras": keras_map,
        "map50_95_tfjs": tfjs_map,
        "map50_95_cost": round(keras_map - tfjs_map, 4),
    }


# ---------------------------------------------------------------- the stage
def make_version(detector_path: Path, quantization: str) -> str:
    """UTC timestamp + the detector file's short sha256 + quantization: sortable and traceable."""
    digest = file_sha256(Path(detector_path))[:8]
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{digest}-{quantization}"


def export_version(
    detector_path: Path,
    out_root: Path,
    *,
    cfg: ExportParams,
    nms: NmsParams,
    metrics: dict[str, float],
    test: Sequence[np.ndarray],
) -> Path:
    """Convert, check and publish one version folder under `out_root`.

    Args:
        detector_path: the Keras training detector (.keras).
        out_root: models/tfjs.
        cfg: the export block.
        nms: the nms block.
        metrics: the stage-3 evaluation metrics (flat dict), copied into the manifest.
        test: (images uint8 (B, 100, 100), boxes (B, K, 4), labels (B, K)) test canvases.
    Returns:
        The published folder `out_root/<version>`.
    """
    from multidigit.model import inference_model
    from multidigit.preprocess import to_model_input

    images, gt_boxes, gt_labels = test
    detector = load_detector(detector_path)
    model = inference_model(detector)
    version = make_version(detector_path, cfg.quantization)
    thresholds = operating_thresholds(metrics, nms)
    final = Path(out_root) / version
    with atomic_path(final, is_dir=True) as tmp:
        convert_model(model, tmp, cfg.quantization)
        check = check_converted(
            model, tmp, to_model_input(images), (gt_boxes, gt_labels), cfg, nms, thresholds
        )
        manifest = build_manifest(
            tmp,
            version=version,
            grid=grid_info(detector),
            thresholds=thresholds,
            metrics=metrics,
            quantization={"dtype": cfg.quantization, **check},
            source={"keras": str(detector_path), "sha256": file_sha256(Path(detector_path))},
        )
        save_json(tmp / MANIFEST_NAME, manifest)
    return final


def read_metrics(path: Path = METRICS_PATH) -> dict[str, float]:
    """The evaluation metrics JSON; one-line errors when it is missing or lacks the gate's keys."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"export: {path} not found; run `dvc repro evaluate@stage3` first")
    metrics = json.loads(Path(path).read_text())
    missing = [key for key in GATE_KEYS if key not in metrics]
    if missing:
        raise ValueError(f"export: {path} lacks {', '.join(missing)}; rerun evaluate@stage3")
    return metrics


def main(params: str | Path = DEFAULT_PARAMS_FILE) -> Path:
    """DVC stage `export`: gate check, convert + check + publish, register (and maybe promote) in MLflow.

    Args:
        params: the params YAML.
    Returns:
        The published version folder.
    """
    from multidigit import registry
    from multidigit.canvas import read_canvases
    from multidigit.evaluate import gate_failure

    cfg = load_params(params)
    metrics = read_metrics()
    # evaluate@stage3 already refused to finish below its gate; a stale or hand-edited metrics file
    # must not sneak a model past it, so the gate is applied again here.
    failure = gate_failure("stage3", metrics, cfg.evaluate.gates.get("stage3"))
    if failure:
        raise ValueError(f"export: {failure}; nothing exported")
    test = read_canvases("stage3", "test")
    folder = export_version(
        DETECTOR_PATH, TFJS_DIR, cfg=cfg.export, nms=cfg.nms, metrics=metrics,
        test=(test.images, test.boxes, test.labels),
    )  # fmt: skip
    registry.register_export(cfg, folder, DETECTOR_PATH, gate_passed=True)
    print(f"exported {folder}")
    return folder
