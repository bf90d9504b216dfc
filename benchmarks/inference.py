"""Inference speed of a trained stage detector, detections included (moved out of metrics/<stage>.json:
timings vary with the machine's load, so `dvc metrics diff` was never clean while they sat there).

Times the same detections evaluation scores (`multidigit.predict.predict_canvases`: tf.function forward
pass + post-processing at the params' score threshold) on the stage's test canvases: milliseconds per
canvas at batch 1 (median of SPEED_REPEATS calls) and canvases per second at batch 256 (median of 3),
each after a warm-up call that traces the graph. Writes benchmarks/results/inference.json, which
`make report` puts in the README.

    python -m benchmarks.inference [--stage stage3] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from multidigit.atomic import save_json
from multidigit.constants import MODELS_DIR
from multidigit.params import NmsParams, load_params

OUT = Path(__file__).resolve().parent / "results" / "inference.json"
SPEED_REPEATS = 30  # single-canvas calls timed for ms at batch 1
SPEED_BATCH = 256  # the batch of the throughput figure (fixed: it names the key)


def inference_speed(model: Any, images: np.ndarray, nms: NmsParams) -> dict[str, float]:
    """Milliseconds per canvas at batch 1 and canvases per second at batch 256.

    Args:
        model: the inference model from `predict.load_detector`.
        images: (N, 100, 100) uint8 canvases to time on (repeated to fill a batch of 256).
        nms: the NMS params.
    Returns:
        {"ms_batch1", "canvases_per_s_b256"}.
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
        "ms_batch1": round(1000.0 * float(np.median(single)), 3),
        "canvases_per_s_b256": round(SPEED_BATCH / float(np.median(full)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="stage3")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    from multidigit.canvas import read_canvases
    from multidigit.predict import load_detector

    cfg = load_params(args.params)
    model = load_detector(MODELS_DIR / args.stage / "detector.keras")
    result = {
        "stage": args.stage,
        "model": f"models/{args.stage}/detector.keras",  # repo-relative, as every results file records
        **inference_speed(model, read_canvases(args.stage, "test").images, cfg.nms),
        "note": "shared CPU: wall figures vary with other users' load",
    }
    save_json(args.out, result)
    print(f"inference: {result['ms_batch1']:.2f} ms/canvas at batch 1, "
          f"{result['canvases_per_s_b256']:.0f} canvases/s at batch 256 -> {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
