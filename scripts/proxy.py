"""A proxy of the curriculum for tuning, scored on val only: `python scripts/proxy.py NAME [OVERRIDES]`.

Generates small train sets in memory (4,000 / 6,000 / 8,000 canvases by default), trains one epoch per
stage from a pretrained backbone, and scores the detector artifact on 500 stage-3 val canvases and on 500
drawn canvases built from MNIST *val* digits (never test), the README "Tuning" rows. OVERRIDES is JSON:
{"params": {...merged over params.yaml...}, "counts": {"stage1": N, ...}, "epochs": {"stage3": 2},
"backbone": "models/pretrain/backbone.keras"}; without a backbone it pretrains one. Needs data/mnist
(`dvc repro mnist`). Appends one JSON line per run to reports/proxy.jsonl.
"""

from __future__ import annotations

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

from multidigit.params import Params, validate_params  # noqa: E402
from scripts.smoke import merge  # noqa: E402

COUNTS = {"stage1": 4000, "stage2": 6000, "stage3": 8000}
VAL_CANVASES = 500
OUT = ROOT / "reports" / "proxy.jsonl"


def make_split(cfg: Params, stage: str, split: str, n: int, digits: tuple) -> object:
    """`n` canvases of one stage in memory, shard by shard as the generator seeds them."""
    from multidigit.canvas import Canvases, make_shard, shard_seed

    parts = [
        make_shard(*digits, min(cfg.generate.shard_size, n - start), cfg.generate,
                   cfg.generate.stages[stage], shard_seed(cfg.seed, stage, split, i))
        for i, start in enumerate(range(0, n, cfg.generate.shard_size))
    ]  # fmt: skip
    return Canvases(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("images", "boxes", "labels")))


def train_curriculum(cfg: Params, data: dict, vals: dict, epochs: dict, backbone: Path | None, work: Path):
    """One detector trained stage by stage (pretraining a backbone first when none is given)."""
    import keras

    from multidigit import train
    from multidigit.pretrain import digit_data, pretrain_backbone

    if backbone is None:
        net, _ = pretrain_backbone(
            cfg.model, cfg.pretrain, cfg.seed, digit_data("mnist", cfg.pretrain.limit, cfg.seed)
        )
        backbone = work / "backbone.keras"
        net.save(backbone)
    detector = None
    for stage in COUNTS:
        stage_cfg = cfg.train.stages[stage].model_copy(update={"epochs": epochs.get(stage, 1)})
        run_cfg = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"stages": {stage: stage_cfg}})}
        )
        keras.utils.set_random_seed(cfg.seed)
        detector = detector or train.initial_detector(run_cfg, "pretrained", backbone)
        train.fit_stage(run_cfg, stage, detector, data[stage], vals[stage], work, verbose=0)
    return detector


def score(cfg: Params, detector, val3, drawn_val: dict) -> dict[str, float]:
    """Val figures: stage-3 mAP and counts at the val-calibrated threshold, the drawn-val page figures."""
    from multidigit.artifact import build_detector_fn, detect_canvases
    from multidigit.evaluation import coco
    from multidigit.evaluation import matching as mt
    from multidigit.evaluation.drawn import score_drawn
    from multidigit.evaluation.stage import calibrate_threshold

    fn = build_detector_fn(detector, cfg.nms)
    candidates = detect_canvases(fn, val3.images, coco.SCORE_FLOOR)
    threshold, _ = calibrate_threshold(val3.boxes, val3.labels, candidates)
    stats = coco.score_detections(val3.boxes, val3.labels, candidates).stats
    shown = [mt.shown_only(d) for d in detect_canvases(fn, val3.images, threshold)]
    acc = mt.canvas_accuracies(mt.canvas_counts(mt.match_split(val3.boxes, val3.labels, shown), 0.0))
    images = drawn_val["images"]
    runs = [detect_canvases(fn, images, t) for t in (coco.SCORE_FLOOR, threshold)]
    drawn = score_drawn(drawn_val["boxes"], drawn_val["labels"], drawn_val["brush"], *runs)
    keys = ("mAP50", "mAP50-95", "recall", "precision", "count_accuracy", "sequence_accuracy")
    return {
        "threshold": threshold,
        "val3/mAP50": stats["metrics/mAP50"],
        "val3/mAP50-95": stats["metrics/mAP50-95"],
        "val3/count": acc["count/accuracy"],
        **{f"drawn_val/{k}": drawn.metrics[f"drawn/{k}"] for k in keys},
    }


def main() -> int:
    from multidigit import drawn
    from multidigit.mnist import read_split

    name = sys.argv[1]
    over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    cfg = validate_params(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), over.get("params", {})))
    counts = {**COUNTS, **over.get("counts", {})}
    work = ROOT / ".proxy" / name
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_digits, val_digits = read_split("train"), read_split("val")
    data = {s: make_split(cfg, s, "train", n, train_digits) for s, n in counts.items()}
    vals = {s: make_split(cfg, s, "val", VAL_CANVASES, val_digits) for s in counts}
    k = max(cfg.generate.stages["stage3"].digits[1], cfg.generate.drawn.digits[1])
    drawn_val = drawn.make_drawn(*val_digits, VAL_CANVASES, cfg.generate.drawn, cfg.generate.augment, k,
                                 np.random.default_rng(cfg.seed))  # fmt: skip
    backbone = Path(over["backbone"]) if "backbone" in over else None
    detector = train_curriculum(cfg, data, vals, over.get("epochs", {}), backbone, work)
    result = {
        "name": name,
        **{k: round(v, 4) for k, v in score(cfg, detector, vals["stage3"], drawn_val).items()},
    }
    result |= {"seconds": round(time.perf_counter() - start), "overrides": over}
    print(json.dumps(result))
    with OUT.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
