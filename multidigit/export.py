"""Export: the stage-3 Keras detector -> the detector artifact -> SavedModel + TF.js in one version folder.

    detector.keras -> with_direct_dilations -> artifact.build_detector_fn (post-processing in the graph)
      -> <version>/saved_model/            tf.saved_model of the module (served by /api/detect)
      -> <version>/{model.json, group1-shard*.bin}   tensorflowjs conversion of that SavedModel,
                                                     weights quantized per params export.quantization
      -> <version>/manifest.json           the contract: inputs, outputs, post-processing, metrics, digests
    (written atomically: a failed check publishes nothing)

Before the folder is published the converted graph is run back in Python (`load_tfjs_graph`, the
quantized weights dequantized exactly as TF.js does) against the in-memory module on `parity_canvases`
test canvases: the same detections (labels, shown, boxes and scores within tolerance). The test-split
mAP of both graphs (evaluation's `score_detections`) is recorded, so the manifest states what
quantization cost. The DVC stage `export` runs `main()` only after evaluate@stage3 passed its gate; it
then registers the version in MLflow (multidigit.registry). `export_artifact` is the light entry point:
a given in-memory detector to a version folder, no pipeline files (test fixtures use it).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multidigit import artifact, boxes
from multidigit.atomic import atomic_path, save_json
from multidigit.constants import DEFAULT_PARAMS_FILE, METRICS_DIR, MODELS_DIR, TFJS_DIR
from multidigit.manifest import MANIFEST_NAME, MODEL_JSON, build_manifest, file_sha256
from multidigit.params import ExportParams, NmsParams, load_params

DETECTOR_PATH = MODELS_DIR / "stage3" / "detector.keras"
METRICS_PATH = METRICS_DIR / "stage3.json"
# tensorflowjs quantization_dtype_map per params value (True = every weight, the CLI's bare flag).
QUANTIZE: dict[str, dict[str, bool] | None] = {
    "none": None,
    "float16": {"float16": True},
    "uint8": {"uint8": True},
}
GATE_KEYS = ("metrics/mAP50", "metrics/mAP50-95")


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


def _tfjs_signature_names(model_json: Path) -> None:
    """Give every output of the converted graph its SavedModel name.

    The converter names an output after the signature key only when no other output has the same dtype
    and shape, so `labels` and `shown` (both int32 (K,)) come out as "Identity_2:0" / "Identity_4:0".
    The frozen graph's outputs `Identity`, `Identity_1`, ... follow the signature's sorted keys, which
    maps them back; the parity check then runs the graph by these names, so a wrong mapping cannot pass.
    """
    keys = sorted(artifact.OUTPUTS)
    spec = json.loads(model_json.read_text())
    outputs = spec["signature"]["outputs"]
    renamed = {}
    for name, info in outputs.items():
        node = info["name"].split(":")[0]
        index = 0 if node == "Identity" else int(node.removeprefix("Identity_"))
        renamed[name if name in keys else keys[index]] = info
    if sorted(renamed) != keys:
        raise ValueError(f"export: converted outputs {sorted(outputs)} do not map onto {keys}")
    spec["signature"]["outputs"] = renamed
    model_json.write_text(json.dumps(spec))


def convert_artifact(module, out_dir: Path, quantization: str) -> None:
    """Write `module` as `out_dir/saved_model/` and its TF.js graph model (model.json + shards) in `out_dir`.

    Args:
        module: a `multidigit.artifact.build_detector_fn` module.
        out_dir: existing empty folder.
        quantization: "none", "float16" or "uint8" (TF.js weights only; the SavedModel stays float32).
    """
    if quantization not in QUANTIZE:
        raise ValueError(f"export.quantization: {quantization!r}, allowed: {', '.join(QUANTIZE)}")
    _quiet_tfdf()
    from tensorflowjs.converters.tf_saved_model_conversion_v2 import convert_tf_saved_model

    saved = artifact.save_artifact(module, Path(out_dir) / artifact.SAVED_MODEL_DIR)
    convert_tf_saved_model(str(saved), str(out_dir), quantization_dtype_map=QUANTIZE[quantization])
    _tfjs_signature_names(Path(out_dir) / MODEL_JSON)


class TfjsGraph:
    """An exported TF.js graph model run in Python TensorFlow, with the artifact's `.detect`.

    The weights are read back with tensorflowjs's own reader (uint8/float16 dequantized as TF.js
    does), put into the graph's Const nodes and the graph is imported whole, so this measures exactly
    the artifact the browser loads. `op_types` lists the graph's ops.
    """

    def __init__(self, model_dir: Path):
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
        self.op_types = sorted({node.op for node in graph_def.node})
        sig = spec["signature"]
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        tensor = wrapped.graph.get_tensor_by_name
        self._fn = wrapped.prune(
            [tensor(sig["inputs"][name]["name"]) for name in artifact.INPUTS],
            {name: tensor(sig["outputs"][name]["name"]) for name in artifact.OUTPUTS},
        )

    def detect(self, image, score_threshold) -> dict[str, Any]:
        return self._fn(image, score_threshold)


def load_tfjs_graph(model_dir: Path) -> TfjsGraph:
    """The TF.js graph model in `model_dir` as an object with `.detect(image, score_threshold)`."""
    return TfjsGraph(model_dir)


# ---------------------------------------------------------------- checks
def operating_thresholds(metrics: dict[str, float], nms: NmsParams) -> dict[str, Any]:
    """The manifest's post-processing block: evaluation's calibrated score threshold when it has one,
    and every nms param the graph bakes in."""
    calibrated = metrics.get("operating/score_threshold")
    return {
        "score": float(calibrated if calibrated is not None else nms.score_threshold),
        "score_source": f"{METRICS_PATH} operating/score_threshold"
        if calibrated is not None
        else "params nms.score_threshold",
        "iou": nms.iou_threshold,
        "max_detections": nms.max_detections,
        "merge": nms.merge,
        "peaks": nms.peaks,
        "agnostic_iou": nms.agnostic_iou,
        "agnostic_containment": nms.agnostic_containment,
        "containment_any_class": nms.containment_any_class,
        "ink_shrink": nms.ink_shrink,
        "ink_grow": nms.ink_grow,
    }


def detections_agree(a: boxes.Detections, b: boxes.Detections) -> tuple[bool, float, float]:
    """(same labels and shown flags in the same order, max box difference px, max score difference)."""
    same = len(a["labels"]) == len(b["labels"]) and bool(
        np.array_equal(a["labels"], b["labels"]) and np.array_equal(a["shown"], b["shown"])
    )
    if not same or len(a["labels"]) == 0:
        return same, 0.0, 0.0
    return same, _max_diff(a["boxes"], b["boxes"]), _max_diff(a["scores"], b["scores"])


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference; infinite when either side is not finite (NaN > tolerance is False, so a
    NaN would pass as agreement: a float16 constant that overflowed once did)."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(diff.max()) if np.isfinite(diff).all() else math.inf


def parity_report(
    reference: list[boxes.Detections],
    converted: list[boxes.Detections],
    flip_tolerances: dict[str, float] | None = None,
) -> dict[str, Any]:
    """How the converted graph's detections compare with the module's, canvas by canvas.

    Args:
        reference, converted: one canvas's detections per item, from the module and the converted graph.
        flip_tolerances: `parity_tolerances` of a quantized graph. A canvas listing the same boxes whose
            finite box or score difference exceeds them counts as differing, as a label flip does: a
            candidate scoring at the threshold on one side only still votes in the merge and moves a box
            (measured: 4 px, a suppressed 5 at 0.3373 against the threshold 0.3376). Non-finite
            differences stay in the maxima, so a broken graph still fails on them. None: no such canvas.
    """
    agree = [detections_agree(a, b) for a, b in zip(reference, converted, strict=True)]
    limit_box, limit_score = (
        (flip_tolerances["max_abs_diff_boxes_px"], flip_tolerances["max_abs_diff_scores"])
        if flip_tolerances
        else (math.inf, math.inf)
    )

    def flipped(box: float, score: float) -> bool:
        return math.isfinite(box + score) and (box > limit_box or score > limit_score)

    moved = [same and flipped(box, score) for same, box, score in agree]
    matched = [(box, score) for (same, box, score), m in zip(agree, moved, strict=True) if same and not m]
    return {
        "canvases": len(reference),
        "detections": int(sum(len(d["labels"]) for d in reference)),
        "shown": int(sum(int(d["shown"].sum()) for d in reference)),
        # canvases with the same labels and shown flags (and, for a quantized graph, not moved by a flip)
        "detections_matched": len(matched),
        "moved_by_flip": sum(moved),
        "max_abs_diff_boxes_px": max((box for box, _ in matched), default=0.0),
        "max_abs_diff_scores": max((score for _, score in matched), default=0.0),
    }


def read_height_of(cfg: ExportParams) -> dict[str, Any] | None:
    """The manifest's input.read_height: what the page's second look reads at (multidigit/rescale.py)."""
    if cfg.read_height is None:
        return None
    return {"height": cfg.read_height, "band": list(cfg.read_band)}


def parity_tolerances(cfg: ExportParams) -> dict[str, float]:
    """The limits `parity_failure` applies, keyed by the report entry they bound."""
    if cfg.quantization == "none":
        return {"max_abs_diff_scores": cfg.float_tolerance, "max_abs_diff_boxes_px": cfg.float_tolerance}
    return {
        "max_abs_diff_scores": cfg.quantized_tolerance,
        "max_abs_diff_boxes_px": cfg.quantized_box_tolerance,
    }


def parity_failure(report: dict[str, Any], cfg: ExportParams) -> str | None:
    """One line saying how a converted graph breaks parity, or None.

    Float: the same detections on every canvas, boxes and scores within `float_tolerance`. Quantized:
    up to `quantized_mismatches` canvases may differ (a score at the threshold flips: a label or shown flag,
    or a box moved beyond the tolerances by a merge vote; `parity_report`), the others within the
    quantized tolerances; the recorded mAP cost accounts for the flips.
    """
    n, q = report["canvases"], cfg.quantization
    for key, limit in parity_tolerances(cfg).items():
        if report[key] > limit:
            return f"parity: {q} TF.js {key} {report[key]:.4g} > tolerance {limit} on {n} test canvases"
    allowed = 0 if q == "none" else cfg.quantized_mismatches
    if n - report["detections_matched"] > allowed:
        return (
            f"parity: {q} TF.js detections differ on {n - report['detections_matched']} of {n} test canvases"
            f" (allowed {allowed})"
        )
    return None


def map50_95(detections: list[boxes.Detections], gt_boxes: np.ndarray, gt_labels: np.ndarray) -> float:
    """COCO mAP@.5:.95 of all kept boxes (at evaluation's SCORE_FLOOR), scored by evaluation."""
    from multidigit.evaluation.coco import score_detections

    return round(score_detections(gt_boxes, gt_labels, detections).stats["metrics/mAP50-95"], 4)


def check_converted(
    module, model_dir: Path, images: np.ndarray, cfg: ExportParams, score: float,
    gt: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Compare the converted graph with the in-memory module: parity on the first canvases, mAP on all.

    Args:
        module: the `build_detector_fn` module the folder was converted from.
        model_dir: the converted TF.js folder.
        images: uint8 (B, 100, 100) test canvases.
        cfg: the export block (tolerances, parity canvas count).
        score: the operating score threshold the parity canvases are compared at.
        gt: (boxes (B, K, 4), labels (B, K)) of the same canvases, for the mAP of both graphs; None: skip.
    Returns:
        {"parity": {...}, "ops": [...]} and, with `gt`, "map50_95_keras", "map50_95_tfjs", "map50_95_cost".
    Raises:
        ValueError: the graph lacks the NMS op, or the detections differ beyond the tolerances.
    """
    from multidigit.evaluation.coco import SCORE_FLOOR

    graph = load_tfjs_graph(model_dir)
    if artifact.NMS_OP not in graph.op_types:
        raise ValueError(f"export: the TF.js graph has no {artifact.NMS_OP} op ({', '.join(graph.op_types)})")
    n = min(cfg.parity_canvases, len(images))
    flips = None if cfg.quantization == "none" else parity_tolerances(cfg)
    parity = parity_report(*(artifact.detect_canvases(g, images[:n], score) for g in (module, graph)), flips)
    failure = parity_failure(parity, cfg)
    if failure:
        raise ValueError(failure)
    out: dict[str, Any] = {"parity": {**parity, "tolerance": parity_tolerances(cfg)}, "ops": graph.op_types}
    if gt is not None:
        keras_map, tfjs_map = (
            map50_95(artifact.detect_canvases(g, images, SCORE_FLOOR), *gt) for g in (module, graph)
        )
        cost = round(keras_map - tfjs_map, 4)
        out.update(map50_95_keras=keras_map, map50_95_tfjs=tfjs_map, map50_95_cost=cost)
    return out


# ---------------------------------------------------------------- the stage
def make_version(detector_path: Path, quantization: str) -> str:
    """UTC timestamp + the detector file's short sha256 + quantization: sortable and traceable."""
    digest = file_sha256(Path(detector_path))[:8]
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{digest}-{quantization}"


def export_artifact(
    detector, out_dir: Path, post: NmsParams, quantization: str, *, version: str,
    cfg: ExportParams | None = None, metrics: dict[str, float] | None = None,
    images: np.ndarray | None = None, gt: tuple[np.ndarray, np.ndarray] | None = None,
    source: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Publish one version folder for an in-memory detector: SavedModel, TF.js graph, checks, manifest.

    Args:
        detector: the Keras training detector.
        out_dir: the version folder to write (replaced atomically), e.g. models/tfjs/<version>.
        post: the nms block baked into the graph (its score_threshold is the manifest's default unless
            `metrics` holds a calibrated one).
        quantization: TF.js weight quantization ("none", "float16", "uint8").
        version: the version name recorded in the manifest.
        cfg: the export block for the parity tolerances (default: the schema's, with `quantization`).
        metrics: evaluation metrics copied into the manifest (may hold operating/score_threshold).
        images: uint8 (B, 100, 100) canvases for the parity check; None: one black canvas (the graph
            still runs end to end in Python, but nothing is detected, so pass real canvases).
        gt: ground truth of `images`, for the mAP of both graphs.
        source: where the detector came from, for the manifest.
    Returns:
        `out_dir`.
    """
    cfg = (cfg or ExportParams()).model_copy(update={"quantization": quantization})
    metrics = metrics or {}
    thresholds = operating_thresholds(metrics, post)
    images = np.zeros((1, 100, 100), np.uint8) if images is None else images
    module = artifact.build_detector_fn(with_direct_dilations(detector), post)
    with atomic_path(Path(out_dir), is_dir=True) as tmp:
        convert_artifact(module, tmp, quantization)
        check = check_converted(module, tmp, images, cfg, thresholds["score"], gt)
        manifest = build_manifest(
            tmp, version=version, grid=grid_info(detector), thresholds=thresholds, metrics=metrics,
            quantization={"dtype": quantization, **check}, source=source or {}, read_brush=cfg.read_brush,
            read_height=read_height_of(cfg),
        )  # fmt: skip
        save_json(tmp / MANIFEST_NAME, manifest)
    return Path(out_dir)


def export_version(
    detector_path: Path,
    out_root: Path,
    *,
    cfg: ExportParams,
    nms: NmsParams,
    metrics: dict[str, float],
    test: Sequence[np.ndarray],
) -> Path:
    """Convert, check and publish one version folder under `out_root` from a .keras file.

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
    images, gt_boxes, gt_labels = test
    version = make_version(detector_path, cfg.quantization)
    return export_artifact(
        load_detector(detector_path), Path(out_root) / version, nms, cfg.quantization, version=version,
        cfg=cfg, metrics=metrics, images=images, gt=(gt_boxes, gt_labels),
        source={"keras": str(detector_path), "sha256": file_sha256(Path(detector_path))},
    )  # fmt: skip


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
    from multidigit.evaluation.gates import gate_failure

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
