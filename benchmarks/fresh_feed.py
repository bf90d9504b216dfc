"""Does stage 3's fresh-canvas producer slow training? Training canvases/s of the default detector alone,
then beside the producer thread (`fresh.FreshFeed`'s work) at the trainer's priority and niced by
`fresh.PRODUCER_NICE`, with the producer's own canvases/s in each case.

    python benchmarks/fresh_feed.py [--steps 300]

Training steps run on one fixed batch of stage-3 canvases, so the figure is the step's cost alone; the
producer makes stage-3 chunks with the default written share, as epochs >= 1 do. Writes
benchmarks/results/fresh_feed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import multidigit.quiet  # noqa: E402, F401  (TensorFlow's log levels, before it is imported)
from multidigit import fresh  # noqa: E402
from multidigit.constants import MNIST_OUT  # noqa: E402
from multidigit.mnist import read_split  # noqa: E402
from multidigit.params import load_params  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fresh_feed.json"
STAGE = "stage3"


class Producer(threading.Thread):
    """Makes fresh stage-3 chunks until stopped, counting canvases; niced by `nice` first."""

    def __init__(self, cfg, digits, nice: int) -> None:
        super().__init__(daemon=True)
        self.cfg, self.digits, self.nice = cfg, digits, nice
        self.sizes = fresh.chunk_sizes(
            cfg.generate.stages[STAGE].canvases.train,
            cfg.generate.shard_size,
            cfg.train.stages[STAGE].written,
        )
        self.made = 0
        self.stop = threading.Event()

    def run(self) -> None:
        fresh.lower_priority(self.nice)
        chunk = 0
        while not self.stop.is_set():
            sizes = self.sizes[chunk % len(self.sizes)]
            fresh.epoch_chunk(self.cfg, STAGE, self.digits, 1, chunk, sizes)
            self.made += sum(sizes)
            chunk += 1


def train_rate(detector, x, y, steps: int, producer: Producer | None) -> dict:
    """Canvases/s of `steps` training steps, and of the producer over the same interval."""
    if producer is not None:
        producer.start()
        time.sleep(5)  # past its first chunk's start-up (Keras layers built)
    made0, start = (producer.made if producer else 0), time.perf_counter()
    for _ in range(steps):
        detector.train_on_batch(x, y)
    wall = time.perf_counter() - start
    made = (producer.made - made0) if producer else 0
    if producer is not None:
        producer.stop.set()
        producer.join()
    return {
        "train_canvases_per_s": round(steps * len(x) / wall, 1),
        "producer_canvases_per_s": round(made / wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    import tensorflow as tf

    from multidigit.boxes import encode_targets
    from multidigit.canvas import make_shard, shard_seed
    from multidigit.model import build_detector
    from multidigit.preprocess import to_model_input
    from multidigit.train import compile_detector

    cfg = load_params(ROOT / "params.yaml")
    digits = read_split("train", ROOT / MNIST_OUT)
    batch = cfg.train.batch_size
    s = make_shard(
        *digits, batch, cfg.generate, cfg.generate.stages[STAGE], shard_seed(cfg.seed, STAGE, "train", 0)
    )
    targets = encode_targets(
        s.boxes, s.labels, cfg.model.stride, cfg.model.boxes_per_cell, cfg.train.neighbour_cells
    )
    x, y = tf.constant(to_model_input(s.images)), tf.constant(targets)
    detector = build_detector(cfg.model)
    compile_detector(detector, cfg, cfg.train.stages[STAGE], steps=10 * args.steps)
    train_rate(detector, x, y, 100, None)  # traced and warm
    result = {"cpu_count": os.cpu_count(), "machine": platform.machine(), "steps": args.steps, "batch": batch}
    for name, nice in (
        ("alone", None),
        ("producer_same_priority", 0),
        ("producer_niced", fresh.PRODUCER_NICE),
        ("alone_again", None),
    ):
        producer = None if nice is None else Producer(cfg, digits, nice)
        result[name] = train_rate(detector, x, y, args.steps, producer)
        print(name, result[name], flush=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
