"""A proxy of the curriculum for tuning, scored on val only: `python scripts/proxy.py NAME [OVERRIDES]`.

Generates small train sets in memory (4,000 / 6,000 / 8,000 canvases by default), trains one epoch per
stage from a pretrained backbone, and scores the detector artifact on 500 stage-3 val canvases and on 500
drawn canvases built from MNIST *val* digits (never test), the docs/tuning.md rows; `page_val/...` reads
the same drawn canvases' strokes as the page does. The threshold is calibrated as the pipeline calibrates
it, on its stage-3 val canvases (0-2,999); `val3_heldout/...` is the count on 10,000 more that it never saw
(HELDOUT), the figure to compare count on: a lever of +0.01 canvas accuracy shows there, where test's
2,000 canvases cannot see it (docs/tuning.md, thirty-third pass). OVERRIDES is JSON:
{"params": {...merged over params.yaml...}, "counts": {"stage1": N, ...}, "epochs": {"stage3": 2},
"backbone": "models/pretrain/backbone.keras", "stage2": ".proxy/base/stage2.keras"}; without a backbone it
pretrains one; with a stage-2 detector (every run saves its own as .proxy/NAME/stage2.keras) only stage 3 is
generated and trained, so stage-3 levers compare from one start. Each stage is seeded as `train_stage`
seeds it, so an arm at the default params and counts retrains the pipeline's own stage. `--score-only
DETECTOR [OVERRIDES]` scores a saved detector (every run saves its own as .proxy/NAME/detector.keras) on
the same val sets, post-processed by the overrides' nms block, at the overrides' "threshold" if given.
Needs data/mnist (`dvc repro mnist`).
Appends one JSON line per run to reports/proxy.jsonl, with each stage's fit seconds and the load average.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # data/mnist and models/ are relative to the repo

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from multidigit.keras_file import save_keras  # noqa: E402
from multidigit.params import Params, validate_params  # noqa: E402
from scripts.smoke import merge  # noqa: E402

COUNTS = {"stage1": 4000, "stage2": 6000, "stage3": 8000}
VAL_CANVASES = 500
# Stage-3 val canvases no threshold sees, after those the pipeline calibrates on: 2,000 (1,000-2,999) until
# the thirty-third pass, whose 10,000 read count to a standard error of ~0.002 instead of ~0.005.
HELDOUT = 10000
SLIDER_ENDS = (4.0, 24.0)  # the page's brush slider: drawn-val is also scored with every canvas at each end
OUT = ROOT / "reports" / "proxy.jsonl"


def make_split(cfg: Params, stage: str, split: str, n: int, digits: tuple, first: int = 0) -> object:
    """Canvases `first` to `n` - 1 of one stage in memory, shard by shard as the generator seeds them
    (`first` a multiple of the shard size, so each shard keeps its seed)."""
    from multidigit.canvas import Canvases, make_shard, shard_seed
    from multidigit.fresh import concat

    size = cfg.generate.shard_size
    if first % size:
        raise ValueError(f"first canvas {first}: not a multiple of generate.shard_size {size}")
    shards = [
        make_shard(*digits, min(size, n - start), cfg.generate, cfg.generate.stages[stage],
                   shard_seed(cfg.seed, stage, split, start // size))
        for start in range(first, n, size)
    ]  # fmt: skip
    parts = [Canvases(s.images, s.boxes, s.labels) for s in shards]
    return concat(parts, cfg.generate.stages[stage].digits[1])


def count_sets(base: Params, val_digits: tuple) -> tuple[object, object]:
    """(calibration, held-out) stage-3 val canvases: the threshold is calibrated on the canvases the
    pipeline's evaluate calibrates on (calibrated on the proxy's first 500, it wandered 0.17-0.58 between
    arms; on these it gives the pipeline's threshold back), count is read on HELDOUT more."""
    n = base.generate.stages["stage3"].canvases.val
    calibration = make_split(base, "stage3", "val", n, val_digits)
    return calibration, make_split(base, "stage3", "val", n + HELDOUT, val_digits, first=n)


def train_curriculum(
    cfg: Params, data: dict, vals: dict, epochs: dict, start: dict, work: Path, digits: tuple
) -> tuple[object, dict]:
    """One detector trained stage by stage over the stages in `data`; returns it and each stage's fit seconds.

    `start` may name a `backbone` (else one is pretrained) or a `stage2` detector to start stage 3 from.
    """
    import keras

    from multidigit import train
    from multidigit.pretrain import digit_data, pretrain_backbone

    init = ("previous", Path(start["stage2"])) if "stage2" in start else None
    if init is None and "backbone" in start:
        init = ("pretrained", Path(start["backbone"]))
    if init is None:
        net, _ = pretrain_backbone(
            cfg.model,
            cfg.pretrain,
            cfg.seed,
            digit_data("mnist", cfg.pretrain.limit, cfg.seed),
            cfg.train.precision,
        )
        save_keras(net, work / "backbone.keras")
        init = ("pretrained", work / "backbone.keras")
    seconds = {}
    for stage in data:
        stage_cfg = cfg.train.stages[stage].model_copy(update={"epochs": epochs.get(stage, 1)})
        run_cfg = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"stages": {stage: stage_cfg}})}
        )
        # as train_stage does: seed, a new detector from the previous stage's file, fit under the policy
        keras.utils.set_random_seed(train.stage_seed(cfg, stage))
        sets = (data[stage], vals[stage], work)
        detector, _, fit_s = train.trained_detector(run_cfg, stage, init, *sets, verbose=0, digits=digits)
        seconds[stage] = round(fit_s, 1)
        save_keras(detector, work / f"{stage}.keras")
        init = ("previous", work / f"{stage}.keras")
    save_keras(detector, work / "detector.keras")  # for `--score-only` under other post-processing params
    return detector, seconds


def score(
    cfg: Params, detector, drawn_vals: dict, heldout, calibration, threshold: float | None = None
) -> dict[str, float]:
    """Val figures: stage-3 mAP and counts on the first VAL_CANVASES of `calibration` (`val3`), at the
    threshold calibrated on all of it (or `threshold` if given), the count on `heldout` stage-3 val
    canvases at that threshold, the drawn-val figures (`drawn_vals`: brush law -> drawn canvases; the
    first is the split's law, the others fixed widths)."""
    from multidigit.artifact import build_detector_fn, detect_canvases
    from multidigit.data_pipeline import subset
    from multidigit.evaluation import coco
    from multidigit.evaluation import matching as mt
    from multidigit.evaluation.drawn import score_drawn
    from multidigit.evaluation.stage import calibrate_threshold

    fn = build_detector_fn(detector, cfg.nms)
    val3 = subset(calibration, VAL_CANVASES)
    # the calibration set's first canvases are val3: one detection pass serves mAP and the threshold
    found = detect_canvases(fn, (calibration if threshold is None else val3).images, coco.SCORE_FLOOR)
    candidates = found[:VAL_CANVASES]
    if threshold is None:
        threshold, _ = calibrate_threshold(
            calibration.boxes, calibration.labels, found, cfg.evaluate.operating_point
        )
    stats = coco.score_detections(val3.boxes, val3.labels, candidates).stats

    def accuracies(canvases) -> dict[str, float]:  # count and canvas accuracy of what is shown at threshold
        shown = [mt.shown_only(d) for d in detect_canvases(fn, canvases.images, threshold)]
        return mt.canvas_accuracies(
            mt.canvas_counts(mt.match_split(canvases.boxes, canvases.labels, shown), 0.0)
        )

    acc, held = accuracies(val3), accuracies(heldout)
    (_, drawn_val), *fixed = drawn_vals.items()
    runs = [detect_canvases(fn, drawn_val["images"], t) for t in (coco.SCORE_FLOOR, threshold)]
    drawn = score_drawn(drawn_val["boxes"], drawn_val["labels"], drawn_val["brush"], *runs)
    ends = {}
    for (width, _, _), arrays in fixed:
        at = detect_canvases(fn, arrays["images"], threshold)  # recall and sequence use the shown ones only
        metrics = score_drawn(arrays["boxes"], arrays["labels"], arrays["brush"], at, at).metrics
        for key in ("recall", "sequence_accuracy"):
            ends[f"drawn_val_brush{width:g}/{key}"] = metrics[f"drawn/{key}"]
    keys = (
        "mAP50",
        "mAP50-95",
        "recall",
        "precision",
        "count_accuracy",
        "sequence_accuracy",
        "size_45-60/sequence_accuracy",
        "brush_18-24/sequence_accuracy",
        "brush_9-11/sequence_accuracy",
    )
    return {
        "threshold": threshold,
        "val3/mAP50": stats["metrics/mAP50"],
        "val3/mAP50-95": stats["metrics/mAP50-95"],
        "val3/count": acc["count/accuracy"],
        "val3_heldout/count": held["count/accuracy"],
        "val3_heldout/canvas": held["canvas/accuracy"],
        **{f"drawn_val/{k}": drawn.metrics.get(f"drawn/{k}", float("nan")) for k in keys},
        **ends,
        **page_read(cfg, fn, threshold, drawn_vals),
    }


def page_read(cfg: Params, fn, threshold: float, drawn_vals: dict) -> dict[str, float]:
    """Drawn-val as the page reads it (`export.read_brush`, the second look, boxes widened to the brush
    drawn; `evaluation.stage.page_figures`): per brush law, sequence accuracy, the split's law also recall
    and precision; `pooled` is the mean sequence accuracy over the laws (docs/tuning.md, eleventh pass).
    Empty when the page reads strokes as drawn."""
    from types import SimpleNamespace

    from multidigit.artifact import detect_canvases
    from multidigit.drawn import strokes_of
    from multidigit.evaluation.stage import page_figures

    detect = functools.partial(detect_canvases, fn)
    out, sequences = {}, []
    for i, arrays in enumerate(drawn_vals.values()):
        split = SimpleNamespace(boxes=arrays["boxes"], labels=arrays["labels"])
        metrics = page_figures(cfg, detect, threshold, split, strokes_of(arrays))
        if not metrics:
            return {}
        name = "page_val" if i == 0 else f"page_val_brush{SLIDER_ENDS[i - 1]:g}"
        keys = ("recall", "precision", "sequence_accuracy") if i == 0 else ("sequence_accuracy",)
        out |= {f"{name}/{k}": metrics[f"drawn_page/{k}"] for k in keys}
        sequences.append(metrics["drawn_page/sequence_accuracy"])
    return out | {"page_val/pooled_sequence": float(np.mean(sequences))}


def drawn_vals(base: Params, val_digits: tuple) -> dict:
    """Drawn-val canvases (MNIST val digits) per brush law: the split's own, then each slider end alone."""
    from multidigit import drawn

    k = max(base.generate.stages["stage3"].digits[1], base.generate.drawn.digits[1])
    laws = (base.generate.drawn.brush, *((w, w, w) for w in SLIDER_ENDS))
    rng = functools.partial(np.random.default_rng, base.seed)  # one layout stream per law
    return {
        law: drawn.make_drawn(*val_digits, VAL_CANVASES, base.generate.drawn, law, k, rng()) for law in laws
    }


def repo_params(overrides: dict | None = None) -> Params:
    """params.yaml, with `overrides` merged over it, validated through the one schema."""
    return validate_params(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides or {}))


def score_only(path: str, overrides: dict) -> int:
    """`--score-only DETECTOR [OVERRIDES]`: the val figures of a saved detector (e.g. a pipeline's
    models/stage3), post-processed by params.yaml's nms block or by the one in OVERRIDES' params."""
    import keras

    from multidigit.mnist import read_split

    base, cfg = repo_params(), repo_params(overrides.get("params", {}))
    val_digits = read_split("val")
    detector = keras.saving.load_model(path, compile=False)
    result = {"name": f"score-only {path}", "overrides": overrides}
    calibration, heldout = count_sets(base, val_digits)
    threshold = overrides.get("threshold")
    figures = score(cfg, detector, drawn_vals(base, val_digits), heldout, calibration, threshold)
    result |= {k: round(v, 4) for k, v in figures.items()}
    print(json.dumps(result))
    with OUT.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    return 0


def main() -> int:
    from multidigit.data_pipeline import subset
    from multidigit.mnist import read_split

    if sys.argv[1] == "--score-only":
        return score_only(sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
    name = sys.argv[1]
    over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    cfg = repo_params(over.get("params", {}))
    counts = {**COUNTS, **over.get("counts", {})}
    work = ROOT / ".proxy" / name
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load = [round(v, 2) for v in os.getloadavg()]
    train_digits, val_digits = read_split("train"), read_split("val")
    stages = ["stage3"] if "stage2" in over else list(counts)
    data = {s: make_split(cfg, s, "train", counts[s], train_digits) for s in stages}
    # val canvases from params.yaml as is: a row changing the generator must not change what it is scored on
    base = repo_params()
    calibration, heldout = count_sets(base, val_digits)
    # stage 3's fit reads the calibration set's first canvases, as score's val3 does: made once
    vals = {s: make_split(base, s, "val", VAL_CANVASES, val_digits) for s in stages if s != "stage3"}
    vals["stage3"] = subset(calibration, VAL_CANVASES)
    drawn_val = drawn_vals(base, val_digits)
    gen_seconds = round(time.perf_counter() - start)
    begin = {k: over[k] for k in ("backbone", "stage2") if k in over}
    detector, fit = train_curriculum(cfg, data, vals, over.get("epochs", {}), begin, work, train_digits)
    figures = score(cfg, detector, drawn_val, heldout, calibration)
    result = {"name": name, **{k: round(v, 4) for k, v in figures.items()}}
    result |= {
        "fit_seconds": fit,
        "generate_seconds": gen_seconds,
        "seconds": round(time.perf_counter() - start),
    }
    result |= {"load_start": load, "load_end": [round(v, 2) for v in os.getloadavg()], "overrides": over}
    print(json.dumps(result))
    with OUT.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
