"""Canvas generator throughput: canvases/s for one process, for two worker processes, and the ratio
against a naive per-canvas Python loop, all measured in the same run.

    python benchmarks/generator.py [--stage stage3] [--canvases 1000] [--naive-canvases 100] [--restroke R]

`--restroke R` overrides the stage's re-stroked share of digits (0 = Keras-augmented MNIST only), so the
cost of re-stroking is measured on the same canvases. Prints the figures and writes
benchmarks/results/generator.json (generator_restroke-R.json with --restroke). The naive baseline draws
the same kind of canvas one at a time: one Keras call and one resize per digit, rejection placement with
a Python loop over the placed boxes. Worker processes are started and warmed (TensorFlow imported, layers
built) before the clock starts, so the 2-worker figure is steady-state throughput.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidigit import augment, canvas  # noqa: E402
from multidigit.constants import DIGIT_SIZE, MNIST_OUT  # noqa: E402
from multidigit.mnist import read_split  # noqa: E402
from multidigit.params import load_params  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "generator.json"
SHARD = 250  # canvases per timed shard


def _shard(args: tuple) -> int:
    """Make one shard in memory (a worker's unit of work); returns its canvas count."""
    params, stage, index, n, restroke = args
    cfg = load_params(params)
    digits = read_split("train", ROOT / MNIST_OUT)
    seed = canvas.shard_seed(cfg.seed, stage, "train", index)
    stage_params = cfg.generate.stages[stage]
    if restroke is not None:
        stage_params = stage_params.model_copy(update={"restroke": restroke})
    return len(canvas.make_shard(*digits, n, cfg.generate, stage_params, seed).images)


def _one_thread() -> None:
    """Worker initializer: one TensorFlow thread per worker, so two workers do not fight over 2 cores."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def vectorised_rate(
    params: str, stage: str, total: int, workers: int, restroke: float | None = None
) -> float:
    """Canvases/s making `total` canvases in shards of SHARD, in-process (workers=1) or in a pool."""
    starts = enumerate(range(0, total, SHARD))
    jobs = [(params, stage, 1000 + i, min(SHARD, total - s), restroke) for i, s in starts]
    if workers == 1:
        _shard((params, stage, 999, 20, restroke))  # warm up TensorFlow and the layers
        start = time.perf_counter()
        done = sum(map(_shard, jobs))
        return done / (time.perf_counter() - start)
    # spawn, not fork: a child forked from a process that already runs TensorFlow threads can hang
    with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _one_thread) as pool:
        warm = [(params, stage, 998 - i, 20, restroke) for i in range(workers)]
        list(pool.map(_shard, warm))  # warm every worker
        start = time.perf_counter()
        done = sum(pool.map(_shard, jobs))
        return done / (time.perf_counter() - start)


def _overlap_ok(box, placed, limit) -> bool:
    """Python-loop check that neither the new box nor any placed one is covered beyond `limit`."""
    boxes = [*placed, box]
    for i, (x, y, w, h) in enumerate(boxes):
        mask = np.zeros((100, 100), bool)
        for j, (ox, oy, ow, oh) in enumerate(boxes):
            if j != i:
                mask[oy : oy + oh, ox : ox + ow] = True
        if mask[y : y + h, x : x + w].sum() > limit * w * h:
            return False
    return True


def naive_canvas(digits, labels, stage_params, gen, augmenter, rng):
    """One canvas, digit by digit: Keras on a batch of one, a resize, a tight crop, rejection placement."""
    import tensorflow as tf

    while True:
        image, boxes, classes = np.zeros((100, 100), np.uint8), [], []
        for _ in range(rng.integers(stage_params.digits[0], stage_params.digits[1] + 1)):
            k = rng.integers(len(digits))
            img = np.asarray(augmenter(digits[k : k + 1, :, :, None].astype(np.float32), training=True))[0]
            side = round(DIGIT_SIZE * rng.uniform(*stage_params.scale))
            img = tf.image.resize(img, (side, side)).numpy()[..., 0]
            img = np.where(img >= augment.DUST_LEVEL, np.clip(np.rint(img), 0, 255), 0).astype(np.uint8)
            ys, xs = np.nonzero(img)
            crop = img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            h, w = crop.shape
            for _ in range(gen.max_attempts):
                box = (int(rng.integers(0, 101 - w)), int(rng.integers(0, 101 - h)), w, h)
                if _overlap_ok(box, boxes, stage_params.max_overlap):
                    break
            else:
                break  # re-sample the whole canvas
            x, y = box[:2]
            image[y : y + h, x : x + w] = np.maximum(image[y : y + h, x : x + w], crop)
            boxes.append(box)
            classes.append(int(labels[k]))
        else:
            return image, boxes, classes


def naive_rate(params: str, stage: str, total: int) -> float:
    """Canvases/s of the naive per-canvas loop."""
    cfg = load_params(params)
    digits, labels = read_split("train", ROOT / MNIST_OUT)
    augmenter = augment.build_augmenter(cfg.generate.augment, (1, 2, 3))
    rng = np.random.default_rng(0)
    naive_canvas(digits, labels, cfg.generate.stages[stage], cfg.generate, augmenter, rng)  # warm up
    start = time.perf_counter()
    for _ in range(total):
        naive_canvas(digits, labels, cfg.generate.stages[stage], cfg.generate, augmenter, rng)
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--stage", default="stage3")
    parser.add_argument("--canvases", type=int, default=1000, help="canvases per vectorised measurement")
    parser.add_argument("--naive-canvases", type=int, default=100)
    parser.add_argument("--restroke", type=float, default=None, help="override the stage's restroke share")
    args = parser.parse_args()

    one = vectorised_rate(args.params, args.stage, args.canvases, workers=1, restroke=args.restroke)
    two = vectorised_rate(args.params, args.stage, 2 * args.canvases, workers=2, restroke=args.restroke)
    naive = naive_rate(args.params, args.stage, args.naive_canvases)
    stage_params = load_params(args.params).generate.stages[args.stage]
    result = {
        "stage": args.stage,
        "restroke": stage_params.restroke if args.restroke is None else args.restroke,
        "scale": list(stage_params.scale),
        "canvases_per_s_1_process": round(one, 1),
        "canvases_per_s_2_workers": round(two, 1),
        "canvases_per_s_naive_loop": round(naive, 1),
        "speedup_vs_naive_1_process": round(one / naive, 1),
        "speedup_2_workers_vs_1": round(two / one, 2),
        "canvases_timed": {
            "1_process": args.canvases,
            "2_workers": 2 * args.canvases,
            "naive": args.naive_canvases,
        },
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    out = (
        RESULTS if args.restroke is None else RESULTS.with_name(f"generator_restroke-{args.restroke:g}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
