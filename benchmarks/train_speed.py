"""Training and inference speed of the default detector on this machine's CPU (random canvases).

Reports wall canvases/s and CPU milliseconds per canvas (process time over all threads: steadier than
wall time on a shared machine), for a Keras training step in float32 and in mixed bfloat16
(`train.precision`, multidigit/precision.py; a CPU without bfloat16 instructions emulates it), and for a
tf.function inference call; writes benchmarks/results/train_speed.json.

    python -m benchmarks.train_speed [--batch 32] [--steps 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from multidigit.atomic import save_json
from multidigit.params import load_params

OUT = Path(__file__).resolve().parent / "results" / "train_speed.json"


def _timed(fn, steps: int, canvases: int) -> dict[str, float]:
    fn()  # trace / warm up
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "canvases_per_s": round(steps * canvases / wall, 1),
        "cpu_ms_per_canvas": round(1e3 * cpu / (steps * canvases), 2),
    }


def random_batch(cfg, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, targets): `batch` random canvases with the same two boxes each, a fixed training batch."""
    from multidigit.boxes import encode_targets

    rng = np.random.default_rng(0)
    x = rng.random((batch, 100, 100, 1), np.float32)
    boxes = np.tile(np.array([[10, 10, 20, 20], [60, 50, 30, 40]], np.float32), (batch, 1, 1))
    return x, encode_targets(boxes, np.ones((batch, 2), int), cfg.model.stride, cfg.model.boxes_per_cell)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from multidigit import precision
    from multidigit.model import build_detector, count_macs, inference_model
    from multidigit.train import compile_detector

    cfg = load_params()
    x, y = random_batch(cfg, args.batch)
    steps = {}
    for name in ("float32", precision.MIXED):
        with precision.policy(name):
            detector = build_detector(cfg.model)
            compile_detector(detector, cfg, cfg.train.stages["stage3"], steps=1000)
            steps[name] = _timed(lambda d=detector: d.train_on_batch(x, y), args.steps, args.batch)
    detector = build_detector(cfg.model)  # inference runs float32, as evaluation and export do
    infer = inference_model(detector)
    fn = tf.function(lambda a: infer(a, training=False))
    result = {
        "model": cfg.model.model_dump(),
        "params": detector.count_params(),
        "macs": count_macs(detector),
        "batch": args.batch,
        "train_step": steps["float32"],
        f"train_step_{precision.MIXED}": steps[precision.MIXED],
        "cpu_has_bf16": precision.cpu_has_bf16(),
        "precision": precision.resolve(cfg.train.precision),  # what the pipeline trains in here
        "inference": _timed(lambda: fn(x), args.steps, args.batch),
        "inference_batch1": _timed(lambda: fn(x[:1]), args.steps * 10, 1),
        "keras": keras.__version__,
        "note": "shared 2-core CPU: wall figures vary with other users' load; cpu_ms_per_canvas is steadier",
    }
    save_json(OUT, result)
    print(result)


if __name__ == "__main__":
    main()
