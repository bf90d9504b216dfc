"""Stage `evaluate@<stage>`: score a trained detector on its stage's test split, then apply the mAP gate.

Order of work: detections on val pick the operating score threshold (max F1); detections on test give
COCO mAP/AR (pycocotools), per-class AP, P/R/F1 and the confusion matrix at that threshold, count and
whole-canvas accuracy, buckets by digit count and overlap, matched IoU and inference speed. Outputs:
`metrics/<stage>.json` (flat floats, slash keys), `plots/<stage>/` (PNGs + curve CSVs), one MLflow run
`evaluate@<stage>` tagged gate=passed|failed. A failed gate still writes every output (so a person can
see why) and then raises `GateFailed`, one line, so DVC records nothing and later stages do not run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multidigit import metrics as mt
from multidigit.atomic import atomic_path, save_json
from multidigit.coco import coco_detections, coco_ground_truth, coco_metrics
from multidigit.constants import (
    CLASS_NAMES,
    DEFAULT_PARAMS_FILE,
    METRICS_DIR,
    MODELS_DIR,
    PLOTS_DIR,
    STAGES,
)
from multidigit.params import EvaluateParams, GateParams, NmsParams, Params, load_params

# Detections down to this score feed COCO mAP and the F1 sweep (COCO practice); the operating threshold
# is chosen afterwards, and NMS-then-threshold equals threshold-then-NMS, so nothing is lost.
SCORE_FLOOR = 0.001
DECIMALS = 4
SPEED_REPEATS = 30  # single-canvas calls timed for ms at batch 1
SPEED_BATCH = 256  # the batch of the throughput figure (fixed: it names the metric key)
CURVE_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # thresholds of the F1 CSV


class GateFailed(RuntimeError):
    """A stage's test mAP is below its gate; the message is one line."""


@dataclass
class Evaluation:
    """A stage's metrics plus what the plots need."""

    metrics: dict[str, float]
    figures: dict[str, Any] = field(default_factory=dict)


def coco_section(gt: dict, results: list, buckets: dict[str, np.ndarray]) -> tuple[dict[str, float], Any]:
    """COCO mAP/AR, per-class AP and per-bucket mAP; returns (metrics, the whole-split CocoResult)."""
    whole = coco_metrics(gt, results)
    out = dict(whole.stats)
    for c, name in enumerate(CLASS_NAMES):
        if not np.isnan(whole.ap50[c]):
            out[f"ap50/{name}"], out[f"ap/{name}"] = float(whole.ap50[c]), float(whole.ap[c])
    for name, idx in buckets.items():
        sub = coco_metrics(gt, results, image_ids=idx + 1)  # image id = canvas index + 1
        out[f"bucket/{name}/mAP50"] = sub.stats["metrics/mAP50"]
        out[f"bucket/{name}/mAP50-95"] = sub.stats["metrics/mAP50-95"]
    return out, whole


def operating_section(
    m: mt.SplitMatches, threshold: float, buckets: dict[str, np.ndarray]
) -> tuple[dict[str, float], mt.CanvasCounts]:
    """P/R/F1, counts, canvas accuracy and matched IoU at the operating threshold, overall and per bucket."""
    counts = mt.canvas_counts(m, threshold)
    out = {**mt.class_prf(m, threshold), **mt.canvas_accuracies(counts), **mt.matched_iou_stats(m, threshold)}
    for name, idx in buckets.items():
        acc = mt.canvas_accuracies(counts, idx)
        out[f"bucket/{name}/canvas_accuracy"] = acc["canvas/accuracy"]
        out[f"bucket/{name}/count_accuracy"] = acc["count/accuracy"]
        out[f"bucket/{name}/canvases"] = float(len(idx))
    return out, counts


def confusion_section(cm: np.ndarray) -> dict[str, float]:
    """Totals of the confusion matrix: misses, false positives, digits read as the wrong class."""
    digits = cm[: mt.BACKGROUND, : mt.BACKGROUND]
    return {
        "confusion/missed": float(cm[: mt.BACKGROUND, mt.BACKGROUND].sum()),
        "confusion/false_positives": float(cm[mt.BACKGROUND, : mt.BACKGROUND].sum()),
        "confusion/misread": float(digits.sum() - np.trace(digits)),
        # Of the digits found (IoU >= 0.5 with any label), the share read as the right class.
        "class/accuracy": float(np.trace(digits) / digits.sum()) if digits.sum() else 0.0,
    }


def evaluate_detections(
    test_boxes: np.ndarray,
    test_labels: np.ndarray,
    test_dets: list[mt.Detections],
    val_matches: mt.SplitMatches,
) -> Evaluation:
    """Every metric of the test split, the operating threshold taken from val (no model needed).

    Args:
        test_boxes: (N, K, 4) ground-truth xywh; test_labels: (N, K) padded with -1.
        test_dets: N detection dicts, scores down to SCORE_FLOOR.
        val_matches: `metrics.match_split` of the val split's detections (for the threshold).
    Returns:
        The `Evaluation`: metrics (unrounded) and the arrays the figures draw.
    """
    threshold, val_f1 = mt.best_f1_threshold(val_matches)
    buckets = {**mt.count_buckets(test_labels), **mt.overlap_buckets(test_boxes, test_labels)}
    gt, results = coco_ground_truth(test_boxes, test_labels), coco_detections(test_dets)
    coco_out, whole = coco_section(gt, results, buckets)
    m = mt.match_split(test_boxes, test_labels, test_dets)
    op_out, counts = operating_section(m, threshold, buckets)
    cm = mt.confusion_matrix(test_boxes, test_labels, test_dets, threshold)
    metrics = {
        **coco_out,
        **op_out,
        **confusion_section(cm),
        "operating/score_threshold": threshold,
        "operating/val_f1": val_f1,
        "data/test_canvases": float(len(test_labels)),
        "data/test_digits": float(np.sum(test_labels >= 0)),
    }
    curves = {"all": mt.f1_curve(m), **{n: mt.f1_curve(m, c) for c, n in enumerate(CLASS_NAMES)}}
    figures = {"coco": whole, "curves": curves, "cm": cm, "counts": counts, "threshold": threshold}
    return Evaluation(metrics=metrics, figures=figures)


def gate_failure(stage: str, metrics: dict[str, float], gate: GateParams | None) -> str | None:
    """The one-line gate message, or None when every threshold is met (or the stage has no gate)."""
    if gate is None:
        return None
    checks = (("map50", "metrics/mAP50", gate.map50), ("map50_95", "metrics/mAP50-95", gate.map50_95))
    failed = []
    for name, key, minimum in checks:
        value = metrics[key]
        if value < minimum:
            places = 3 if f"{value:.3f}" != f"{minimum:.3f}" else DECIMALS
            failed.append(f"{name} {value:.{places}f} < {minimum:.{places}f}")
    return f"gate failed: {stage} " + ", ".join(failed) if failed else None


def inference_speed(model: Any, images: np.ndarray, nms: NmsParams) -> dict[str, float]:
    """Milliseconds per canvas at batch 1 and canvases per second at batch 256, through `predict_canvases`
    (tf.function forward pass + NMS at the default score threshold), each timed after a warm-up call.

    Args:
        model: the inference model from `predict.load_detector`.
        images: (N, 100, 100) uint8 canvases to time on (repeated to fill a batch of 256).
        nms: the NMS params.
    Returns:
        {"speed/ms_batch1", "speed/canvases_per_s_b256"}.
    """
    from multidigit.predict import predict_canvases

    predict_canvases(model, images[:1], nms, batch_size=1)  # traces the batch-1 graph
    single = []
    for i in range(SPEED_REPEATS):
        start = time.perf_counter()
        predict_canvases(model, images[i % len(images)][None], nms, batch_size=1)
        single.append(time.perf_counter() - start)
    batch = np.resize(images, (SPEED_BATCH, *images.shape[1:]))
    predict_canvases(model, batch, nms, batch_size=SPEED_BATCH)  # traces the batch-256 graph
    full = []
    for _ in range(3):
        start = time.perf_counter()
        predict_canvases(model, batch, nms, batch_size=SPEED_BATCH)
        full.append(time.perf_counter() - start)
    return {
        "speed/ms_batch1": 1000.0 * float(np.median(single)),
        "speed/canvases_per_s_b256": SPEED_BATCH / float(np.median(full)),
    }


def write_figures(
    ev: Evaluation,
    test: Any,
    test_dets: list[mt.Detections],
    out_dir: str | Path,
    stage: str,
    gallery_size: int,
) -> None:
    """All plots and curve CSVs of a stage into `out_dir`, replaced as a whole.

    Args:
        ev: the stage's `Evaluation`.
        test: the test `Canvases` (images, boxes, labels).
        test_dets: the test detections (scores down to SCORE_FLOOR).
        out_dir: plots/<stage>.
        stage: the stage name, for titles.
        gallery_size: canvases per gallery.
    """
    from multidigit import plots

    f, threshold = ev.figures, ev.figures["threshold"]
    coco, counts = f["coco"], f["counts"]
    kept = [mt.keep_above(d, threshold) for d in test_dets]
    worst = mt.worst_canvases(counts, gallery_size)
    missed, extra = counts.n_gt - counts.n_tp, counts.n_det - counts.n_tp
    with atomic_path(out_dir, is_dir=True) as tmp:
        plots.plot_pr_curves(
            coco.recall_points,
            coco.precision50,
            coco.ap50,
            tmp / "pr_curves.png",
            f"{stage} test: PR at IoU 0.5",
        )
        plots.plot_f1_confidence(
            f["curves"], threshold, tmp / "f1_confidence.png", f"{stage} test: F1 vs score"
        )
        plots.plot_confusion(f["cm"], tmp / "confusion.png", f"{stage} test at score >= {threshold:.3f}")
        first = range(min(gallery_size, len(test.labels)))
        plots.plot_canvases(
            test.images, test.boxes, test.labels, kept, first, tmp / "gallery.png", f"{stage} test canvases"
        )
        captions = [f"#{i}: {missed[i]} missed, {extra[i]} extra" for i in worst]
        plots.plot_canvases(
            test.images, test.boxes, test.labels, kept, worst, tmp / "worst.png",
            f"{stage}: the {len(worst)} worst test canvases (misread = missed + extra)", captions,
        )  # fmt: skip
        sampled = mt.curve_at(f["curves"]["all"], CURVE_GRID)
        plots.write_curve_csv(tmp / "f1_confidence.csv", sampled)
        valid = coco.precision50[np.all(coco.precision50 > -1, axis=1)]
        mean_precision = valid.mean(axis=0) if len(valid) else np.zeros_like(coco.recall_points)
        plots.write_curve_csv(
            tmp / "pr_curve.csv", {"recall": coco.recall_points, "precision": mean_precision}
        )


def evaluate_stage(cfg: Params, stage: str) -> Evaluation:
    """Load the stage's detector and canvases, compute every metric and write plots/<stage>/.

    Args:
        cfg: the validated params.
        stage: "stage1" | "stage2" | "stage3".
    Returns:
        The `Evaluation`, speed included (metrics unrounded).
    """
    from multidigit.canvas import read_canvases
    from multidigit.predict import load_detector, predict_canvases

    model_path = MODELS_DIR / stage / "detector.keras"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no trained detector; run `dvc repro train@{stage}` first")
    model = load_detector(model_path)
    params: EvaluateParams = cfg.evaluate

    def detect(split: str) -> tuple[Any, list[mt.Detections]]:
        canvases = read_canvases(stage, split)
        dets = predict_canvases(
            model, canvases.images, cfg.nms, score_threshold=SCORE_FLOOR, batch_size=params.batch_size
        )
        return canvases, dets

    val, val_dets = detect("val")
    test, test_dets = detect("test")
    ev = evaluate_detections(
        test.boxes, test.labels, test_dets, mt.match_split(val.boxes, val.labels, val_dets)
    )
    ev.metrics.update(inference_speed(model, test.images, cfg.nms))
    write_figures(ev, test, test_dets, PLOTS_DIR / stage, stage, params.gallery_size)
    return ev


def run_stage(cfg: Params, stage: str) -> tuple[dict[str, float], str | None]:
    """Evaluate a stage, write metrics/<stage>.json, log the MLflow run tagged with the gate result.

    Args:
        cfg: the validated params.
        stage: "stage1" | "stage2" | "stage3".
    Returns:
        (the rounded metrics, the gate's one-line failure or None).
    """
    import mlflow

    from multidigit.tracking import stage_run

    if stage not in STAGES:
        raise ValueError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
    metrics_path = METRICS_DIR / f"{stage}.json"
    with stage_run(cfg.mlflow, f"evaluate@{stage}", tags={"stage": stage}):
        ev = evaluate_stage(cfg, stage)
        metrics = {k: round(float(v), DECIMALS) for k, v in sorted(ev.metrics.items())}
        save_json(metrics_path, metrics)
        failure = gate_failure(stage, metrics, cfg.evaluate.gates.get(stage))
        mlflow.set_tags({"gate": "failed" if failure else "passed", "gate_message": failure or ""})
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(metrics_path))
        mlflow.log_artifacts(str(PLOTS_DIR / stage), artifact_path="plots")
    return metrics, failure


def headline(stage: str, metrics: dict[str, float]) -> str:
    """One line of a stage's main numbers, for the console and the flow log."""
    return (
        f"{stage}: mAP50 {metrics['metrics/mAP50']:.4f}  mAP50-95 {metrics['metrics/mAP50-95']:.4f}  "
        f"F1 {metrics['f1/all']:.4f} at score >= {metrics['operating/score_threshold']:.3f}  "
        f"canvas accuracy {metrics['canvas/accuracy']:.4f}  -> {METRICS_DIR / f'{stage}.json'}"
    )


def main(params: str | Path = DEFAULT_PARAMS_FILE, stage: str = "stage3") -> None:
    """`multidigit evaluate --stage S`: evaluate, write outputs, raise `GateFailed` below the gate."""
    metrics, failure = run_stage(load_params(params), stage)
    print(headline(stage, metrics))
    if failure:
        raise GateFailed(failure)
