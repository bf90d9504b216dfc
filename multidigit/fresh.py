"""Train-time canvases of a stage: written layouts of MNIST train digits, and fresh canvases every epoch.

- `train.stages.<s>.written`: that share of every epoch's canvases is laid out the way people write
  (multidigit/drawn.py: a row or two, slanted, the page's brush) from MNIST *train* digits. They replace
  shard canvases, so an epoch keeps its step count.
- `train.stages.<s>.fresh`: epoch 0 is the stage's shard set (with its written share); every later epoch
  is new canvases of the same make, generated from seeds (`canvas.shard_seed` at shard indices that no
  shard file uses) by a background thread that runs `AHEAD` chunks ahead of training, at a lower CPU
  priority (`PRODUCER_NICE`).

Deterministic: the canvases of epoch e depend only on (seed, stage, e, the params), never on timing.
Only canvas.py's and drawn.py's public functions are called, so a faster generator speeds this up as is.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Iterator

import numpy as np

from multidigit.canvas import Canvases, make_shard, shard_seed
from multidigit.params import Params

AHEAD = 4  # generated chunks buffered ahead of training
# The producer only has to stay ahead of training; at the trainer's priority it takes a core from
# TensorFlow's step. On 2 cores (benchmarks/fresh_feed.py, 2026-12-03, fine convs) training ran at 102
# canvases/s beside it, 129/s beside it niced by 10 (148-155/s alone); niced, it still made 536/s, four
# times what training reads.
PRODUCER_NICE = 10
EPOCH_STRIDE = 1 << 16  # shard indices per fresh epoch: epoch e >= 1 uses [e * stride, (e + 1) * stride)
WRITTEN_OFFSET = 1 << 40  # shard indices of written-layout chunks (far from any shard-file index)


def slots(cfg: Params, stage: str) -> int:
    """K, the padded digit slots of a stage's training canvases (its max, or the written layout's)."""
    gen = cfg.generate
    return max(gen.stages[stage].digits[1], gen.drawn.digits[1])


def _pad(canvases: Canvases, k: int) -> Canvases:
    """The same canvases with K padded to `k` slots (boxes 0, labels -1)."""
    extra = k - canvases.labels.shape[1]
    if extra <= 0:
        return canvases
    boxes = np.pad(canvases.boxes, ((0, 0), (0, extra), (0, 0)))
    labels = np.pad(canvases.labels, ((0, 0), (0, extra)), constant_values=-1)
    return Canvases(canvases.images, boxes, labels)


def concat(parts: list[Canvases], k: int) -> Canvases:
    """Canvases end to end, padded to `k` slots."""
    parts = [_pad(p, k) for p in parts if len(p)]
    return Canvases(*(np.concatenate([getattr(p, a) for p in parts]) for a in ("images", "boxes", "labels")))


def chunk_sizes(n: int, size: int, share: float) -> list[tuple[int, int]]:
    """(shard canvases, written canvases) per chunk of an `n`-canvas epoch, chunks of `size`."""
    out = []
    for start in range(0, n, size):
        m = min(size, n - start)
        written = round(share * m)
        out.append((m - written, written))
    return out


def written_canvases(cfg: Params, stage: str, digits: tuple, epoch: int, chunk: int, n: int) -> Canvases:
    """`n` written-layout canvases from MNIST train `digits` (images, labels), seeded by (epoch, chunk)."""
    from multidigit import drawn

    gen = cfg.generate
    seed = shard_seed(cfg.seed, stage, "train", WRITTEN_OFFSET + epoch * EPOCH_STRIDE + chunk)
    # training's brush law (generate.augment.brush), not the drawn split's slider law
    rng = np.random.default_rng(seed)
    flags = cfg.train.stages[stage].flag_ones
    arrays = drawn.make_drawn(*digits, n, gen.drawn, gen.augment.brush, slots(cfg, stage), rng, flags)
    return Canvases(arrays["images"], arrays["boxes"], arrays["labels"])


def epoch_chunk(cfg: Params, stage: str, digits: tuple, epoch: int, chunk: int, sizes: tuple) -> Canvases:
    """One chunk of a fresh epoch (>= 1): new shard canvases plus their written share."""
    shard_n, written_n = sizes
    parts = []
    if shard_n:
        seed = shard_seed(cfg.seed, stage, "train", epoch * EPOCH_STRIDE + chunk)
        s = make_shard(*digits, shard_n, cfg.generate, cfg.generate.stages[stage], seed)
        parts.append(Canvases(s.images, s.boxes, s.labels))
    if written_n:
        parts.append(written_canvases(cfg, stage, digits, epoch, chunk, written_n))
    return concat(parts, slots(cfg, stage))


def first_epoch(cfg: Params, stage: str, fixed: Canvases, digits: tuple | None) -> Canvases:
    """Epoch 0 (every epoch when not fresh): the shard set with its written share swapped in."""
    share = cfg.train.stages[stage].written
    if not share:
        return fixed
    if digits is None:
        raise ValueError(f"train.stages.{stage}.written: needs the MNIST train digits")
    sizes = chunk_sizes(len(fixed), cfg.generate.shard_size, share)
    kept = len(fixed) - sum(w for _, w in sizes)
    head = Canvases(fixed.images[:kept], fixed.boxes[:kept], fixed.labels[:kept])
    written = [written_canvases(cfg, stage, digits, 0, i, w) for i, (_, w) in enumerate(sizes) if w]
    return concat([head, *written], slots(cfg, stage))


def lower_priority(increment: int) -> None:
    """Nice the calling thread by `increment` (Linux: niceness is per thread); elsewhere a no-op.

    Canvases depend only on seeds, so the priority changes when they are made, never what they are.
    """
    if sys.platform != "linux" or increment <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except OSError:  # a sandbox that forbids it: run at the trainer's priority
        pass


class FreshFeed:
    """Chunks of epochs 1..E-1, made in a daemon thread while training runs; `chunks(e)` reads epoch e."""

    def __init__(self, cfg: Params, stage: str, digits: tuple, n: int, epochs: int) -> None:
        self.sizes = chunk_sizes(n, cfg.generate.shard_size, cfg.train.stages[stage].written)
        self._args = (cfg, stage, digits)
        self._queue: queue.Queue = queue.Queue(maxsize=AHEAD)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, args=(epochs,), daemon=True)
        self._thread.start()

    def _produce(self, epochs: int) -> None:
        lower_priority(PRODUCER_NICE)
        try:
            for epoch in range(1, epochs):
                for chunk, sizes in enumerate(self.sizes):
                    item = (epoch, epoch_chunk(*self._args, epoch, chunk, sizes))
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.5)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
        except BaseException as exc:  # re-raised in the training thread by `chunks`
            self.error = exc
            self._queue.put((-1, None))

    def chunks(self, epoch: int) -> Iterator[Canvases]:
        """The generated chunks of `epoch` (>= 1), in order; raises the producer's error if it failed.

        Ends early once `close` was called: the input pipeline reads ahead across epochs, and a read
        past an early stop must not wait for chunks that will never come.
        """
        for _ in self.sizes:
            item = None
            while item is None and not self._stop.is_set():
                try:
                    item = self._queue.get(timeout=0.5)
                except queue.Empty:
                    continue
            if item is None:
                return
            got, chunk = item
            if chunk is None:
                raise RuntimeError(f"fresh canvases: generation failed: {self.error}") from self.error
            if got != epoch:
                raise RuntimeError(f"fresh canvases: expected epoch {epoch}, the producer is at {got}")
            yield chunk

    def close(self) -> None:
        """Stop the producer (early stopping leaves later epochs unread)."""
        self._stop.set()
        self._thread.join(timeout=10)
