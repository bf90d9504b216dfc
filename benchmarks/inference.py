"""Inference speed of a trained stage detector, detections included (moved out of metrics/<stage>.json:
timings vary with the machine's load, so `dvc metrics diff` was never clean while they sat there).

On the stage's test canvases, at the params' score threshold, each after a warm-up call that traces:
- ms_batch1: median of SPEED_REPEATS calls of the detector artifact (`artifact.build_detector_fn`, one
  canvas per call, post-processing in the graph), what evaluation, /api/detect and export run;
- canvases_per_s_b256: the Keras forward pass at batch 256 plus the numpy reference post-processing
  (`predict.predict_canvases`), median of 3, the batch throughput figure.
Writes benchmarks/results/inference.json, which `make report` puts in the README.

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


def _median_seconds(call, repeats: int) -> float:
    call()  # traces the graph
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def inference_speed(detector: Any, images: np.ndarray, nms: NmsParams) -> dict[str, float]:
    """Milliseconds per canvas through the artifact and canvases per second at batch 256.

    Args:
        detector: the Keras training detector (models/<stage>/detector.keras).
        images: (N, 100, 100) uint8 canvases to time on (repeated to fill a batch of 256).
        nms: the nms block (post-processing and the score threshold).
    Returns:
        {"ms_batch1", "canvases_per_s_b256"}.
    """
    from multidigit.artifact import build_detector_fn, detect_canvases
    from multidigit.model import inference_model
    from multidigit.predict import predict_canvases

    fn = build_detector_fn(detector, nms)
    single = iter(np.resize(images, (SPEED_REPEATS + 1, *images.shape[1:])))
    batch1 = _median_seconds(
        lambda: detect_canvases(fn, next(single)[None], nms.score_threshold), SPEED_REPEATS
    )
    model, batch = inference_model(detector), np.resize(images, (SPEED_BATCH, *images.shape[1:]))
    full = _median_seconds(lambda: predict_canvases(model, batch, nms, batch_size=SPEED_BATCH), 3)
    return {"ms_batch1": round(1000.0 * batch1, 3), "canvases_per_s_b256": round(SPEED_BATCH / full, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="stage3")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    import keras

    import multidigit.model  # noqa: F401  registers the custom layers for deserialisation
    from multidigit.canvas import read_canvases

    cfg = load_params(args.params)
    model = keras.saving.load_model(MODELS_DIR / args.stage / "detector.keras", compile=False)
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
