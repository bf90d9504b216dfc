"""Stage `evaluate@<stage>`: score a trained detector on its stage's test split (and, for stage 3, the
drawn split), then apply the stage's gate.

Order of work: the detector runs on val at SCORE_FLOOR, and the threshold at which the shown candidates
read the most canvases exactly (`evaluate.operating_point`; or max F1) is the operating score threshold.
On test it runs twice: at SCORE_FLOOR for COCO mAP/AR, per-class AP and per-bucket mAP (every
class-aware candidate, the standard way), and at the operating threshold for what a person sees: P/R/F1,
confusion, count and whole-canvas accuracy, buckets and matched IoU are computed on exactly the `shown`
detections. Stage 3 scores the drawn split the same way (`drawn.score_drawn`): read as drawn
(`drawn/...`, the detector's own figures, which the drawn gate checks), and as the page reads it
(`drawn_page/...`: the strokes at `export.read_brush`, read again rescaled where `export.read_height`
asks, boxes moved to the brush drawn; `rescale.read_drawings`).
Outputs: `metrics/<stage>.json` (model quality only, flat floats, slash keys; timings are in
benchmarks/inference.py), `plots/<stage>/` (PNGs + curve CSVs), one MLflow run `evaluate@<stage>`
tagged gate=passed|failed. A failed gate still writes every output (so a person can see why) and then
raises `GateFailed`, one line, so DVC records nothing and later stages do not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multidigit.atomic import atomic_path, save_json
from multidigit.boxes import Detections
from multidigit.constants import (
    CLASS_NAMES,
    DEFAULT_PARAMS_FILE,
    DRAWN_SPLIT,
    METRICS_DIR,
    MODELS_DIR,
    PLOTS_DIR,
    STAGES,
)
from multidigit.evaluation import coco
from multidigit.evaluation import drawn as dr
from multidigit.evaluation import matching as mt
from multidigit.evaluation.coco import SCORE_FLOOR
from multidigit.evaluation.gates import DECIMALS, GateFailed, gate_failure
from multidigit.params import NmsParams, Params, load_params

__all__ = ["SCORE_FLOOR", "GateFailed", "evaluate_stage", "headline", "main", "run_stage"]

CURVE_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # thresholds of the F1 CSV
DRAWN_STAGE = "stage3"  # the one stage that generates the drawn split

# images uint8 (B, 100, 100), score threshold -> one Detections (with "shown") per canvas
Detect = Callable[[np.ndarray, float], list[Detections]]


@dataclass
class Evaluation:
    """A split's metrics plus what the plots need."""

    metrics: dict[str, float]
    figures: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the detector
def detector_for(model_path: Path, nms: NmsParams) -> Detect:
    """THE one place evaluation gets detections from: a function of (images, score threshold).

    It runs the detector artifact (`artifact.build_detector_fn`, the graph export saves and the page and
    /api/detect run), so the figures count exactly what the page shows: `shown` from its one-box rule.
    """
    import keras

    import multidigit.model  # noqa: F401  registers the custom layers for deserialisation
    from multidigit.artifact import build_detector_fn, detect_canvases

    fn = build_detector_fn(keras.saving.load_model(model_path, compile=False), nms)
    return lambda images, score_threshold: detect_canvases(fn, images, score_threshold)


# ---------------------------------------------------------------- scoring (no model needed)
def calibrate_threshold(
    boxes: np.ndarray, labels: np.ndarray, candidates: list[Detections], rule: str = "canvas"
) -> tuple[float, float]:
    """The operating score threshold of the shown candidates (val) by `evaluate.operating_point`: the most
    canvases read exactly (`canvas`) or the highest F1 (`f1`); returns (threshold, F1 there).

    Why canvases: F1 is flat near its top (stage-3 val: 0.947-0.949 from 0.40 to 0.65), so its argmax
    wanders across machine types while count accuracy falls from 0.91 to 0.81 over that range; a person
    judges a drawing by whether it was read whole (docs/tuning.md, thirteenth pass)."""
    m = mt.match_split(boxes, labels, [mt.shown_only(d) for d in candidates])
    return mt.best_canvas_threshold(m) if rule == "canvas" else mt.best_f1_threshold(m)


def coco_section(gt: dict, results: list, buckets: dict[str, np.ndarray]) -> tuple[dict[str, float], Any]:
    """COCO mAP/AR, per-class AP and per-bucket mAP from one COCOeval; returns (metrics, whole CocoResult)."""
    evaluator = coco.run_cocoeval(gt, results)
    whole = coco.coco_metrics(gt, results, evaluator=evaluator)
    out = dict(whole.stats)
    for c, name in enumerate(CLASS_NAMES):
        if not np.isnan(whole.ap50[c]):
            out[f"ap50/{name}"], out[f"ap/{name}"] = float(whole.ap50[c]), float(whole.ap[c])
    for name, idx in buckets.items():
        sub = coco.coco_metrics(gt, results, image_ids=idx + 1, evaluator=evaluator)  # image id = index + 1
        out[f"bucket/{name}/mAP50"] = sub.stats["metrics/mAP50"]
        out[f"bucket/{name}/mAP50-95"] = sub.stats["metrics/mAP50-95"]
    return out, whole


def operating_section(
    m: mt.SplitMatches, buckets: dict[str, np.ndarray]
) -> tuple[dict[str, float], mt.CanvasCounts]:
    """P/R/F1, counts, canvas accuracy and matched IoU of the page's detections, overall and per bucket.

    `m` matches only what the page shows at the operating threshold, so every detection in it counts
    (threshold 0: no second filter).
    """
    counts = mt.canvas_counts(m, 0.0)
    out = {**mt.class_prf(m, 0.0), **mt.canvas_accuracies(counts), **mt.matched_iou_stats(m, 0.0)}
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


def score_split(
    boxes: np.ndarray,
    labels: np.ndarray,
    candidates: list[Detections],
    shown: list[Detections],
    threshold: float,
) -> Evaluation:
    """Every metric of the test split.

    Args:
        boxes: (N, K, 4) ground-truth xywh; labels: (N, K) padded with -1.
        candidates: N detection dicts at SCORE_FLOOR (COCO mAP: every candidate, shown or not).
        shown: N detection dicts run at `threshold`; only those marked shown count (user-facing figures).
        threshold: the operating score threshold, chosen on val.
    Returns:
        The `Evaluation`: metrics (unrounded) and the arrays the figures draw.
    """
    shown = [mt.shown_only(d) for d in shown]
    buckets = {**mt.count_buckets(labels), **mt.overlap_buckets(boxes, labels)}
    coco_out, whole = coco_section(
        coco.coco_ground_truth(boxes, labels), coco.coco_detections(candidates), buckets
    )
    m = mt.match_split(boxes, labels, shown)
    op_out, counts = operating_section(m, buckets)
    cm = mt.confusion_matrix(mt.match_split(boxes, labels, shown, class_aware=False))
    sweep = mt.match_split(boxes, labels, [mt.shown_only(d) for d in candidates])
    metrics = {
        **coco_out,
        **op_out,
        **confusion_section(cm),
        "operating/score_threshold": threshold,
        "data/test_canvases": float(len(labels)),
        "data/test_digits": float(np.sum(labels >= 0)),
    }
    curves = {"all": mt.f1_curve(sweep), **{n: mt.f1_curve(sweep, c) for c, n in enumerate(CLASS_NAMES)}}
    figures = {"coco": whole, "curves": curves, "cm": cm, "counts": counts, "threshold": threshold}
    return Evaluation(metrics=metrics, figures=figures)


# ---------------------------------------------------------------- figures
def write_figures(
    ev: Evaluation, test: Any, shown: list[Detections], out: Path, stage: str, gallery_size: int
) -> None:
    """The test split's plots and curve CSVs into the folder `out` (already a temporary folder).

    Args:
        ev: the test split's `Evaluation`.
        test: the test `Canvases` (images, boxes, labels).
        shown: what the page lists on each test canvas.
        out: the folder to write into.
        stage: the stage name, for titles.
        gallery_size: canvases per gallery.
    """
    from multidigit.evaluation import figures as fg

    f, threshold = ev.figures, ev.figures["threshold"]
    coco_result, counts = f["coco"], f["counts"]
    worst = mt.worst_canvases(counts, gallery_size)
    missed, extra = counts.n_gt - counts.n_tp, counts.n_det - counts.n_tp
    title = f"{stage} test: PR at IoU 0.5"
    fg.plot_pr_curves(
        coco_result.recall_points, coco_result.precision50, coco_result.ap50, out / "pr_curves.png", title
    )
    fg.plot_f1_confidence(f["curves"], threshold, out / "f1_confidence.png", f"{stage} test: F1 vs score")
    fg.plot_confusion(f["cm"], out / "confusion.png", f"{stage} test at score >= {threshold:.3f}")
    first = range(min(gallery_size, len(test.labels)))
    fg.plot_canvases(
        test.images, test.boxes, test.labels, shown, first, out / "gallery.png", f"{stage} test canvases"
    )
    captions = [f"#{i}: {missed[i]} missed, {extra[i]} extra" for i in worst]
    fg.plot_canvases(
        test.images, test.boxes, test.labels, shown, worst, out / "worst.png",
        f"{stage}: the {len(worst)} worst test canvases (misread = missed + extra)", captions,
    )  # fmt: skip
    fg.write_curve_csv(out / "f1_confidence.csv", mt.curve_at(f["curves"]["all"], CURVE_GRID))
    valid = coco_result.precision50[np.all(coco_result.precision50 > -1, axis=1)]
    mean_precision = valid.mean(axis=0) if len(valid) else np.zeros_like(coco_result.recall_points)
    fg.write_curve_csv(
        out / "pr_curve.csv", {"recall": coco_result.recall_points, "precision": mean_precision}
    )


def write_drawn_figures(
    score: dr.DrawnScore, drawn: Any, brush: np.ndarray, shown: list[Detections], out: Path, k: int
) -> None:
    """plots/stage3/drawn_worst.png: the k worst drawn canvases, with what the page read vs what was drawn."""
    from multidigit.evaluation import figures as fg

    worst = dr.worst_drawn(score, k)
    captions = []
    for i in worst:
        keep = drawn.labels[i] >= 0
        truth = "".join(map(str, dr.read_digits(drawn.boxes[i][keep], drawn.labels[i][keep])))
        read = "".join(map(str, dr.read_digits(shown[i]["boxes"], shown[i]["labels"]))) or "-"
        read = read if len(read) <= len(truth) + 2 else read[: len(truth) + 2] + "…"  # fits the panel
        captions.append(f"#{i} brush {brush[i]:g}: {truth} read {read}")
    title = f"the {len(worst)} worst drawn canvases (misread sequence first, then misses + extras)"
    fg.plot_canvases(
        drawn.images, drawn.boxes, drawn.labels, shown, worst, out / "drawn_worst.png", title, captions
    )


# ---------------------------------------------------------------- the stage
def page_figures(cfg: Params, detect: Detect, threshold: float, drawn: Any, strokes: list) -> dict:
    """`drawn_page/...`: the drawn split's page figures (recall, precision, count, canvas and sequence
    accuracy, overall and per bucket) as the page reads its strokes; {} when the page reads them as drawn
    (no `export.read_brush`), since `drawn/...` are then the page's figures. `strokes`: (brush width,
    polylines) per canvas of `drawn`."""
    from multidigit.rescale import read_drawings

    if cfg.export.read_brush is None:
        return {}
    drawings = [(lines, [width] * len(lines)) for width, lines in strokes]
    second = None if cfg.export.read_height is None else (cfg.export.read_height, cfg.export.read_band)
    read = cfg.export.read_brush
    _, dets, _ = read_drawings(lambda images: detect(images, threshold), drawings, read, second)
    brush = np.array([width for width, _ in strokes], np.float64)
    metrics = dr.score_drawn(drawn.boxes, drawn.labels, brush, dets, dets).metrics
    # mAP ranks every candidate down to the score floor; the page's reading keeps only what it lists
    return {
        dr.PAGE_PREFIX + key.removeprefix(dr.PREFIX): value
        for key, value in metrics.items()
        if not key.endswith(("mAP50", "mAP50-95"))
    }


def read_drawn(stage: str) -> tuple[Any, list] | None:
    """The drawn split's canvases and per canvas (brush width, strokes), or None when the stage has no
    drawn split (only stage 3 generates one; a stage-3 drawn gate then fails as missing)."""
    from multidigit import canvas

    if stage != DRAWN_STAGE or not sorted((canvas.CANVAS_OUT / stage / DRAWN_SPLIT).glob("shard-*.npz")):
        return None
    return canvas.read_canvases(stage, DRAWN_SPLIT), canvas.read_strokes(stage, DRAWN_SPLIT)


def evaluate_stage(cfg: Params, stage: str) -> Evaluation:
    """Load the stage's detector and canvases, compute every metric and write plots/<stage>/.

    Args:
        cfg: the validated params.
        stage: "stage1" | "stage2" | "stage3".
    Returns:
        The test split's `Evaluation`, with the drawn split's `drawn/...` metrics added for stage 3
        (metrics unrounded).
    """
    from multidigit.canvas import read_canvases

    model_path = MODELS_DIR / stage / "detector.keras"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no trained detector; run `dvc repro train@{stage}` first")
    detect, params = detector_for(model_path, cfg.nms), cfg.evaluate
    val = read_canvases(stage, "val")
    threshold, val_f1 = calibrate_threshold(
        val.boxes, val.labels, detect(val.images, SCORE_FLOOR), params.operating_point
    )
    test = read_canvases(stage, "test")
    shown = [mt.shown_only(d) for d in detect(test.images, threshold)]
    ev = score_split(test.boxes, test.labels, detect(test.images, SCORE_FLOOR), shown, threshold)
    ev.metrics["operating/val_f1"] = val_f1
    drawn = read_drawn(stage)
    if drawn is not None:  # the same detector, the same val threshold
        canvases, strokes = drawn
        brush = np.array([width for width, _ in strokes], np.float64)
        drawn_shown = [mt.shown_only(d) for d in detect(canvases.images, threshold)]
        drawn_floor = detect(canvases.images, SCORE_FLOOR)
        score = dr.score_drawn(canvases.boxes, canvases.labels, brush, drawn_floor, drawn_shown)
        ev.metrics.update(score.metrics)
        ev.metrics.update(page_figures(cfg, detect, threshold, canvases, strokes))
    with atomic_path(PLOTS_DIR / stage, is_dir=True) as out:
        write_figures(ev, test, shown, out, stage, params.gallery_size)
        if drawn is not None:
            write_drawn_figures(score, canvases, brush, drawn_shown, out, params.gallery_size)
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
    line = (
        f"{stage}: mAP50 {metrics['metrics/mAP50']:.4f}  mAP50-95 {metrics['metrics/mAP50-95']:.4f}  "
        f"F1 {metrics['f1/all']:.4f} at score >= {metrics['operating/score_threshold']:.3f}  "
        f"canvas accuracy {metrics['canvas/accuracy']:.4f}"
    )
    if "drawn/mAP50" in metrics:
        line += (
            f"  drawn mAP50 {metrics['drawn/mAP50']:.4f} sequence {metrics['drawn/sequence_accuracy']:.4f}"
        )
    return f"{line}  -> {METRICS_DIR / f'{stage}.json'}"


def main(params: str | Path = DEFAULT_PARAMS_FILE, stage: str = "stage3") -> None:
    """`multidigit evaluate --stage S`: evaluate, write outputs, raise `GateFailed` below the gate."""
    metrics, failure = run_stage(load_params(params), stage)
    print(headline(stage, metrics))
    if failure:
        raise GateFailed(failure)
