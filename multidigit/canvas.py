"""Canvases: MNIST digits augmented or re-stroked, scaled and placed on a 100 x 100 canvas, tight boxes.

Owns the shard contract: `data/canvases/<stage>/<split>/shard-NNNNN.npz` holding `images` uint8
(N, 100, 100), `boxes` float32 (N, K, 4) pixel xywh, `labels` int16 (N, K) padded with -1 (K = the stage's
max digit count), plus `data/canvases/<stage>/manifest.json`. Every shard's randomness comes from
`SeedSequence([seed, stage, split, shard])`, so its bytes do not depend on workers or order.
Splits: train, val, test (from the MNIST split of that name) and, where a stage asks for it, `drawn`
(multidigit/drawn.py: MNIST test digits only), whose shards also hold the strokes (`read_strokes`).
The DVC stage runs flows/generate.py; `multidigit generate` runs the same shards in-process.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic
from tqdm import tqdm

from multidigit import augment
from multidigit.atomic import atomic_path, save_json
from multidigit.constants import (
    CANVAS_OUT,
    CANVAS_SIZE,
    CANVAS_SPLITS,
    DIGIT_SIZE,
    DRAWN_SPLIT,
    MNIST_OUT,
    NUM_CLASSES,
    STAGES,
)
from multidigit.mnist import read_split
from multidigit.npz import npz_bytes
from multidigit.params import GenerateParams, Params, StageDataParams, load_params

CROWD_FILL = 1.6  # see scale_caps
MAX_ROUNDS = 100  # re-sampling rounds before a shard gives up (validation makes this unreachable)
SHARD_NAME = "shard-{:05d}.npz"


# ---------------------------------------------------------------- seeds and placement
def shard_seed(seed: int, stage: str, split: str, index: int) -> np.random.SeedSequence:
    """The seed sequence of one shard, derived only from its identity."""
    return np.random.SeedSequence([seed, STAGES.index(stage), CANVAS_SPLITS.index(split), index])


# Placement is integer counting in compiled loops (numpy calls per candidate and per placed box were a
# third of stage-3 generation); the candidates are drawn inside them from the shard's generator, in the
# order the Python loop drew them. The counts are of bits: a canvas row is a few uint64 words (column c is
# bit c % 64 of word c // 64), so a box's pixels in a row are one mask per word, and counting the covered
# ones is a POPCNT per word instead of a load per pixel. Counting pixel by pixel (with a summed-area table
# once a box had counted a canvas's worth) took 11.0 us a stage-3 canvas, 3.0 like this (2026-12-06, the
# same corners for every canvas of four stage-3 shards and 15,000 fuzzed ones). The signatures compile (or
# load from numba's on-disk cache) at import, so forked workers of a warm parent never compile.
_STATE = "u8[:, ::1], u8[:, :, ::1], u8[::1], i8[::1], f8[::1], i8[:, ::1], i8"  # union .. placed, n


@intrinsic
def _popcount(typingctx, word):
    """Set bits of a uint64: LLVM's ctpop, one POPCNT instruction (numba has no popcount of its own)."""
    if word != types.uint64:
        return None
    return types.uint64(types.uint64), lambda context, builder, signature, args: builder.ctpop(args[0])


@numba.njit("void(i8, i8, u8[::1])", cache=True, nogil=True)
def _row_mask(x, w, mask) -> None:
    """mask[k]: the bits of columns x .. x + w - 1 in word k of a canvas row."""
    for k in range(len(mask)):
        lo, hi = max(x, 64 * k), min(x + w, 64 * k + 64)
        if lo >= hi:
            mask[k] = 0
            continue
        ones = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - (hi - lo))  # hi - lo of them, 1 to 64
        mask[k] = ones << np.uint64(lo - 64 * k)


@numba.njit("i8(u8[:, ::1], i8, i8, u8[::1])", cache=True, nogil=True)
def _count(rows, r0, r1, mask) -> int:
    """Set bits of rows[r0:r1] under `mask`."""
    total = 0
    for r in range(r0, r1):
        for k in range(len(mask)):
            total += _popcount(rows[r, k] & mask[k])
    return total


@numba.njit(cache=True, nogil=True)
def _rows_shared(placed, j, x, y, w, h):
    """(r0, r1): the rows of placed box j, counted from its top, that the box (x, y, w, h) shares with it;
    r0 >= r1 when the two do not intersect."""
    px, py, pw, ph = placed[j, 0], placed[j, 1], placed[j, 2], placed[j, 3]
    if max(x, px) >= min(x + w, px + pw):
        return 0, 0
    return max(y, py) - py, min(y + h, py + ph) - py


@numba.njit(f"(i8[::1], i8[::1], i8, i8, f8, {_STATE})", cache=True, nogil=True)
def _first_fit(xs, ys, w, h, limit, union, free, mask, covered, limits, placed, n):
    """(index of the first candidate corner (xs, ys) whose w x h box stays within `limit` of covered
    pixels and keeps every placed box within its own limit, or -1; that box's covered pixels)."""
    for c in range(len(xs)):
        x, y = xs[c], ys[c]
        _row_mask(x, w, mask)
        own = _count(union, y, y + h, mask)
        if own > limit:
            continue
        fits = True
        for j in range(n):
            r0, r1 = _rows_shared(placed, j, x, y, w, h)
            if r0 < r1 and covered[j] + _count(free[j], r0, r1, mask) > limits[j]:
                fits = False
                break
        if fits:
            return c, own
    return -1, 0


@numba.njit(f"void(i8, i8, i8, i8, i8, f8, {_STATE})", cache=True, nogil=True)
def _add_box(x, y, w, h, own, limit, union, free, mask, covered, limits, placed, n) -> None:
    """Record placed box n at (x, y): the pixels it takes from earlier boxes' uncovered ones, and its own
    pixels that no earlier box covers (box j's rows from its top are free[j], bits of canvas columns)."""
    _row_mask(x, w, mask)
    for j in range(n):
        r0, r1 = _rows_shared(placed, j, x, y, w, h)
        for r in range(r0, r1):
            for k in range(len(mask)):
                taken = free[j, r, k] & mask[k]
                covered[j] += _popcount(taken)
                free[j, r, k] ^= taken
    for r in range(h):
        for k in range(len(mask)):
            free[n, r, k] = mask[k] & ~union[y + r, k]
            union[y + r, k] |= mask[k]
    covered[n], limits[n] = own, limit
    placed[n, 0], placed[n, 1], placed[n, 2], placed[n, 3] = x, y, w, h


@numba.njit(cache=True, nogil=True)
def _place_one(sizes, canvas, max_overlap, attempts, rng, corners, union, free, mask) -> bool:
    """`place_boxes` of one canvas's (k, 2) sizes: writes `corners` (k, 2); False when a box found no
    valid candidate. `union` (canvas rows, words), `free` (>= k, canvas rows, words) and `mask` (words,)
    are scratch: every word is written before it is read."""
    k = len(sizes)
    union[:] = 0  # pixels under any placed box
    covered = np.zeros(k, np.int64)  # per placed box: its pixels that other boxes cover
    limits = np.zeros(k)
    placed = np.zeros((k, 4), np.int64)  # x, y, w, h of placed boxes
    order = np.argsort(-sizes[:, 0] * sizes[:, 1], kind="mergesort")  # stable, as numpy's "stable"
    for n in range(k):
        i = order[n]
        w, h = sizes[i, 0], sizes[i, 1]
        limit = max_overlap * w * h + 1e-9
        xs = rng.integers(0, canvas - w + 1, attempts)
        ys = rng.integers(0, canvas - h + 1, attempts)
        c, own = _first_fit(xs, ys, w, h, limit, union, free, mask, covered, limits, placed, n)
        if c < 0:
            return False
        corners[i, 0], corners[i, 1] = xs[c], ys[c]
        if n < k - 1:  # the last box: no later box needs the masks
            _add_box(xs[c], ys[c], w, h, own, limit, union, free, mask, covered, limits, placed, n)
    return True


# One call per round of canvases: handing numba the generator costs more than placing a canvas.
@numba.njit(
    numba.types.Tuple((numba.int64[:, ::1], numba.bool_[::1]))(
        numba.int64[:, ::1], numba.int64[::1], numba.int64, numba.float64, numba.int64, augment.RNG
    ),
    cache=True,
    nogil=True,
)
def _place_all(sizes, starts, canvas, max_overlap, attempts, rng):
    """`place_boxes` compiled: canvas j's boxes are sizes[starts[j]:starts[j + 1]]."""
    corners = np.zeros((len(sizes), 2), np.int64)
    fits = np.zeros(len(starts) - 1, np.bool_)
    words = (canvas + 63) // 64
    most = 1
    for j in range(len(starts) - 1):
        most = max(most, starts[j + 1] - starts[j])
    union, mask = np.empty((canvas, words), np.uint64), np.empty(words, np.uint64)
    free = np.empty((most, canvas, words), np.uint64)
    for j in range(len(starts) - 1):
        one = sizes[starts[j] : starts[j + 1]]
        if len(one) and (one.min() == 0 or one.max() > canvas):
            continue  # an empty digit, or one larger than the canvas: no draws, re-sampled
        at = corners[starts[j] : starts[j + 1]]
        fits[j] = _place_one(one, canvas, max_overlap, attempts, rng, at, union, free, mask)
    return corners, fits


def place_boxes(
    sizes: np.ndarray,
    counts: np.ndarray,
    canvas: int,
    max_overlap: float,
    attempts: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Find top-left corners for the boxes of each canvas so that no box is covered beyond `max_overlap`.

    Canvas by canvas, boxes go in largest first. Each gets `attempts` random candidate corners, tried in
    order until one keeps its own coverage (counted on bit rows of the placed boxes' union) and the
    coverage it adds to each placed box (counted on that box's still uncovered pixels) within the limit.
    The candidates are drawn inside the compiled loop from `rng`'s state, as rng.integers would draw them.

    Args:
        sizes: (D, 2) int (w, h) of every box, canvas after canvas.
        counts: (n,) boxes per canvas.
        canvas: canvas side in pixels.
        max_overlap: largest fraction of a box's area that the union of the other boxes may cover.
        attempts: candidate corners per box.
        rng: the shard's generator.
    Returns:
        (D, 2) int (x, y) corners in the order of `sizes`, and (n,) bool: whether the canvas's boxes all
        found a corner (False too, without a draw, when a box is empty or larger than the canvas).
    """
    starts = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    sizes = np.ascontiguousarray(sizes, np.int64).reshape(-1, 2)
    return _place_all(sizes, starts, int(canvas), float(max_overlap), int(attempts), rng)


@dataclass
class Crops:
    """D tight digit crops end to end: crop i is flat[at[i]:] read as (h, w), (w, h) = sizes[i] (the form
    the compiled kernels make and the composer takes, without thousands of small arrays a shard)."""

    flat: np.ndarray  # uint8
    at: np.ndarray  # (D,) int64
    sizes: np.ndarray  # (D, 2) int64 (w, h): each crop's box size

    @classmethod
    def packed(cls, flat: np.ndarray, shapes: np.ndarray) -> Crops:
        """Crops a kernel returned back to back: flat uint8 and (D, 2) (h, w)."""
        sizes = np.ascontiguousarray(np.asarray(shapes, np.int64).reshape(-1, 2)[:, ::-1])
        at = np.zeros(len(sizes), np.int64)
        np.cumsum(sizes[:-1, 0] * sizes[:-1, 1], out=at[1:])
        return cls(np.ascontiguousarray(flat, np.uint8), at, sizes)

    @classmethod
    def of(cls, crops: list[np.ndarray]) -> Crops:
        """Crops from D (h, w) arrays."""
        shapes = np.array([c.shape for c in crops], np.int64).reshape(-1, 2)
        flat = np.concatenate([c.reshape(-1) for c in crops]) if crops else np.zeros(0, np.uint8)
        return cls.packed(flat, shapes)

    @classmethod
    def merged(cls, first: Crops, first_ids: np.ndarray, second: Crops, second_ids: np.ndarray) -> Crops:
        """One set of crops: `first`'s at positions first_ids, `second`'s at second_ids (no bytes move
        but one join)."""
        total = len(first_ids) + len(second_ids)
        at, sizes = np.empty(total, np.int64), np.empty((total, 2), np.int64)
        at[first_ids], at[second_ids] = first.at, second.at + len(first.flat)
        sizes[first_ids], sizes[second_ids] = first.sizes, second.sizes
        return cls(np.concatenate([first.flat, second.flat]), at, sizes)


def compose_canvas(crops: list[np.ndarray], corners: np.ndarray, canvas: int) -> np.ndarray:
    """Paste tight digit crops at their corners; overlapping pixels combine by max. Returns (S, S) uint8."""
    image = np.zeros((1, canvas, canvas), np.uint8)
    compose_into(
        image, np.zeros(1, np.int64), Crops.of(crops), np.asarray(corners), np.array([0, len(crops)])
    )
    return image[0]


def compose_into(
    images: np.ndarray, slots: np.ndarray, crops: Crops, corners: np.ndarray, starts: np.ndarray
) -> None:
    """`compose_canvas` of many canvases in one compiled call: canvas j's crops starts[j]:starts[j + 1] are
    maxed into images[slots[j]] (slot -1: skipped) at their (x, y) corners."""
    corners = np.ascontiguousarray(corners, np.int64).reshape(-1, 2)
    slots, starts = np.asarray(slots, np.int64), np.asarray(starts, np.int64)
    _compose(images, slots, crops.flat, crops.at, crops.sizes, corners, starts)


_COMPOSE = "void(u1[:, :, ::1], i8[::1], u1[::1], i8[::1], i8[:, ::1], i8[:, ::1], i8[::1])"


@numba.njit(_COMPOSE, cache=True, nogil=True)
def _compose(images, slots, flat, at, sizes, corners, starts):
    """`compose_into` of crops given end to end: crop i is flat[at[i]:] of (h, w) = sizes[i, ::-1]."""
    for j in range(len(slots)):
        if slots[j] < 0:
            continue
        image = images[slots[j]]
        for i in range(starts[j], starts[j + 1]):
            w, h, x, y = sizes[i, 0], sizes[i, 1], corners[i, 0], corners[i, 1]
            for r in range(h):  # one row slice each: a branch-free max the compiler vectorises
                src, dst = flat[at[i] + r * w : at[i] + (r + 1) * w], image[y + r, x : x + w]
                for c in range(w):
                    dst[c] = max(dst[c], src[c])


# ---------------------------------------------------------------- one shard
@dataclass
class Shard:
    """One shard's arrays and its re-sample count."""

    images: np.ndarray  # (N, S, S) uint8
    boxes: np.ndarray  # (N, K, 4) float32 pixel xywh, 0-padded
    labels: np.ndarray  # (N, K) int16, -1-padded
    resampled: int = 0  # canvases drawn again because placement failed
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # drawn split: strokes, brush, source


@dataclass
class _Draw:
    counts: np.ndarray  # (n,) digits per canvas
    digit_ids: np.ndarray  # (D,) rows of the MNIST split
    crops: Crops  # D tight uint8 crops


def scale_caps(counts: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Largest digit scale per canvas: a crowded canvas keeps its digits small enough to fit.

    A canvas of n digits caps the scale at CROWD_FILL * S / (28 sqrt n), within `scale`: ten digits stay
    at or below 1.8, up to five reach 2.55. Without it big digits mostly fail placement on crowded
    canvases, and re-sampling skews the digit counts towards few digits.
    """
    cap = CROWD_FILL * CANVAS_SIZE / (DIGIT_SIZE * np.sqrt(counts))
    return np.clip(cap, scale[0], scale[1])


def _draw_canvases(n, digits, gen: GenerateParams, stage: StageDataParams, augmenter, rng) -> _Draw:
    """Draw digit counts, digits (uniform over the split), scales; augment and scale them in one
    resampling and crop them, re-stroking a `stage.restroke` share of the digits with the page's brush."""
    lo, hi = stage.digits
    counts = rng.integers(lo, hi + 1, n)
    total = int(counts.sum())
    digit_ids = rng.integers(0, len(digits), total)
    scales = rng.uniform(stage.scale[0], np.repeat(scale_caps(counts, stage.scale), counts), total)
    transforms = augment.random_transforms(augmenter, total)  # (D, 3, 3)
    if not stage.restroke:  # no draw from rng: stages without re-stroking keep their bytes
        return _Draw(
            counts, digit_ids, Crops.packed(*augment.scaled_packed(digits[digit_ids], scales, transforms))
        )
    redraw = rng.random(total) < stage.restroke
    kept = augment.scaled_packed(digits[digit_ids[~redraw]], scales[~redraw], transforms[~redraw])
    redrawn = augment.restroked_packed(
        digits, digit_ids[redraw], transforms[redraw], scales[redraw], gen.augment, rng
    )
    crops = Crops.merged(
        Crops.packed(*kept), np.flatnonzero(~redraw), Crops.packed(*redrawn), np.flatnonzero(redraw)
    )
    return _Draw(counts, digit_ids, crops)


def make_shard(
    digits: np.ndarray,
    labels: np.ndarray,
    n: int,
    gen: GenerateParams,
    stage: StageDataParams,
    seed: np.random.SeedSequence,
) -> Shard:
    """Generate `n` canvases from one MNIST split.

    Args:
        digits: (M, 28, 28) uint8 digits of the split; labels: (M,) their classes.
        n: canvases to make.
        gen: the generate block (canvas size, attempts, augmentation).
        stage: the curriculum stage's data params.
        seed: this shard's seed sequence (`shard_seed`).
    Returns:
        The shard; canvases whose placement failed are drawn again (counted in `resampled`).
    """
    rng_seed, keras_seed = seed.spawn(2)
    rng = np.random.default_rng(rng_seed)
    augmenter = augment.shard_augmenter(gen.augment, tuple(int(s) for s in keras_seed.generate_state(3)))
    k = stage.digits[1]
    out = Shard(
        images=np.zeros((n, gen.canvas_size, gen.canvas_size), np.uint8),
        boxes=np.zeros((n, k, 4), np.float32),
        labels=np.full((n, k), -1, np.int16),
    )
    todo = np.arange(n)
    for _ in range(MAX_ROUNDS):
        draw = _draw_canvases(len(todo), digits, gen, stage, augmenter, rng)
        sizes = draw.crops.sizes  # (D, 2)
        corners, fits = place_boxes(
            sizes, draw.counts, gen.canvas_size, stage.max_overlap, gen.max_attempts, rng
        )
        starts = np.concatenate([[0], np.cumsum(draw.counts)])
        compose_into(out.images, np.where(fits, todo, -1), draw.crops, corners, starts)
        # every digit of a canvas that fits goes to (its canvas's slot, its place on that canvas)
        keep = np.repeat(fits, draw.counts)
        slot = np.repeat(todo, draw.counts)[keep]
        place = (np.arange(len(keep)) - np.repeat(starts[:-1], draw.counts))[keep]
        out.boxes[slot, place] = np.concatenate([corners, sizes], axis=1)[keep]
        out.labels[slot, place] = labels[draw.digit_ids[keep]]
        out.resampled += int((~fits).sum())
        todo = todo[~fits]
        if len(todo) == 0:
            return out
    raise RuntimeError(f"{len(todo)} canvases failed placement {MAX_ROUNDS} times; loosen the stage params")


def make_drawn_shard(
    digits: np.ndarray,
    labels: np.ndarray,
    n: int,
    gen: GenerateParams,
    stage: str,
    seed: np.random.SeedSequence,
) -> Shard:
    """`n` canvases of the drawn split (multidigit/drawn.py) from the MNIST TEST digits passed in.

    K (the padded digit slots) is the stage's, or the drawn layout's, largest digit count.
    """
    from multidigit import drawn

    k = max(gen.stages[stage].digits[1], gen.drawn.digits[1])
    arrays = drawn.make_drawn(digits, labels, n, gen.drawn, gen.drawn.brush, k, np.random.default_rng(seed))
    core = {key: arrays.pop(key) for key in ("images", "boxes", "labels")}
    return Shard(**core, extra=arrays)


# ---------------------------------------------------------------- shards on disk
@dataclass(frozen=True)
class ShardSpec:
    """Which canvases one shard file holds."""

    stage: str
    split: str
    index: int
    canvases: int

    @property
    def relpath(self) -> str:
        return f"{self.split}/{SHARD_NAME.format(self.index)}"


def plan_shards(gen: GenerateParams, stage: str) -> list[ShardSpec]:
    """Every shard of a stage, split by split, each holding `shard_size` canvases (the last fewer)."""
    specs = []
    for split in CANVAS_SPLITS:
        total = getattr(gen.stages[stage].canvases, split)  # drawn: 0 unless the stage asks for it
        for index, start in enumerate(range(0, total, gen.shard_size)):
            specs.append(ShardSpec(stage, split, index, min(gen.shard_size, total - start)))
    return specs


def save_shard(path: str | Path, shard: Shard) -> str:
    """Write a shard as a reproducible npz (`npz.npz_bytes`: deflated, fixed timestamps); returns the
    file's sha256."""
    arrays = {"images": shard.images, "boxes": shard.boxes, "labels": shard.labels, **shard.extra}
    data = npz_bytes(arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=6)
def _split_digits(split: str, mnist_dir: str) -> tuple[np.ndarray, np.ndarray]:
    return read_split(split, mnist_dir)


def shard_stats(shard: Shard) -> dict:
    """Canvas count, digit total, class and digit-count histograms, re-sample count of a shard."""
    valid = shard.labels >= 0
    per_canvas = valid.sum(axis=1)
    return {
        "canvases": len(shard.images),
        "digits": int(valid.sum()),
        "classes": np.bincount(shard.labels[valid], minlength=NUM_CLASSES).tolist(),
        "digit_counts": np.bincount(per_canvas, minlength=shard.labels.shape[1] + 1).tolist(),
        "resampled": shard.resampled,
    }


def generate_shard(
    cfg: Params, spec: ShardSpec, out_dir: str | Path, mnist_dir: str | Path = MNIST_OUT
) -> dict:
    """Make and write one shard (`out_dir/<split>/shard-NNNNN.npz`).

    Args:
        cfg: validated params.
        spec: the shard to make (from `plan_shards`).
        out_dir: the stage's folder, e.g. data/canvases/stage1.
        mnist_dir: folder of the MNIST split npz files.
    Returns:
        The shard's stats plus `file` (relative to out_dir), `index`, `split` and `sha256`.
    """
    seed = shard_seed(cfg.seed, spec.stage, spec.split, spec.index)
    if spec.split == DRAWN_SPLIT:
        shard = make_drawn_shard(
            *_split_digits("test", str(mnist_dir)), spec.canvases, cfg.generate, spec.stage, seed
        )
    else:
        digits, labels = _split_digits(spec.split, str(mnist_dir))
        shard = make_shard(digits, labels, spec.canvases, cfg.generate, cfg.generate.stages[spec.stage], seed)
    sha = save_shard(Path(out_dir) / spec.relpath, shard)
    return {
        "split": spec.split,
        "index": spec.index,
        "file": spec.relpath,
        "sha256": sha,
        **shard_stats(shard),
    }


def _sum_lists(rows: list[list[int]]) -> list[int]:
    width = max(len(r) for r in rows)
    return np.sum([r + [0] * (width - len(r)) for r in rows], axis=0).tolist()


def merge_manifest(cfg: Params, stage: str, results: list[dict]) -> dict:
    """One manifest for a stage from its shard results: per split totals, histograms and shard list."""
    splits = {}
    for split in CANVAS_SPLITS:
        rows = sorted((r for r in results if r["split"] == split), key=lambda r: r["index"])
        if not rows:
            continue
        splits[split] = {
            "canvases": sum(r["canvases"] for r in rows),
            "digits": sum(r["digits"] for r in rows),
            "resampled": sum(r["resampled"] for r in rows),
            "classes": _sum_lists([r["classes"] for r in rows]),
            "digit_counts": _sum_lists([r["digit_counts"] for r in rows]),
            "shards": [{k: r[k] for k in ("file", "canvases", "resampled", "sha256")} for r in rows],
        }
    return {
        "stage": stage,
        "seed": cfg.seed,
        "canvas_size": cfg.generate.canvas_size,
        "max_digits": cfg.generate.stages[stage].digits[1],
        "box_format": "xywh",
        "splits": splits,
    }


def write_manifest(cfg: Params, stage: str, results: list[dict], out_dir: str | Path) -> dict:
    """Write `out_dir/manifest.json` and delete shard files no longer planned; returns the manifest."""
    out_dir = Path(out_dir)
    manifest = merge_manifest(cfg, stage, results)
    keep = {r["file"] for r in results}
    for stale in out_dir.glob("*/shard-*.npz"):
        if stale.relative_to(out_dir).as_posix() not in keep:
            stale.unlink()
    save_json(out_dir / "manifest.json", manifest)
    return manifest


# ---------------------------------------------------------------- reading
@dataclass
class Canvases:
    """A split's canvases, concatenated in shard order."""

    images: np.ndarray  # (N, S, S) uint8
    boxes: np.ndarray  # (N, K, 4) float32 pixel xywh, 0-padded
    labels: np.ndarray  # (N, K) int16, -1-padded

    def __len__(self) -> int:
        return len(self.images)


def read_canvases(stage: str, split: str, root: str | Path = CANVAS_OUT) -> Canvases:
    """Load every shard of one stage and split.

    Args:
        stage: stage1..stage3.
        split: train, val, test or drawn.
        root: the canvases folder (data/canvases).
    Returns:
        The concatenated `Canvases`.
    Raises:
        ValueError: unknown stage or split. FileNotFoundError: no shards there.
    """
    if stage not in STAGES:
        raise ValueError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
    parts = {"images": [], "boxes": [], "labels": []}
    for path in _shard_files(stage, split, root):
        with np.load(path) as f:
            for key, items in parts.items():
                items.append(f[key])
    return Canvases(**{key: np.concatenate(items) for key, items in parts.items()})


def _shard_files(stage: str, split: str, root: str | Path) -> list[Path]:
    if stage not in STAGES:
        raise ValueError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
    if split not in CANVAS_SPLITS:
        raise ValueError(f"split: {split!r} is not one of {', '.join(CANVAS_SPLITS)}")
    files = sorted((Path(root) / stage / split).glob("shard-*.npz"))
    if not files:
        raise FileNotFoundError(f"{Path(root) / stage / split}: no shards; run `dvc repro generate@{stage}`")
    return files


def read_strokes(stage: str, split: str = DRAWN_SPLIT, root: str | Path = CANVAS_OUT) -> list[tuple]:
    """The pen strokes of a drawn split, in the canvas order of `read_canvases`.

    Returns:
        Per canvas `(brush_width, strokes)`: the brush in 400-px buffer pixels and a list of (K, 2) float64
        polylines (x, y) in buffer pixels; `render_strokes(strokes, brush)` then `reduce_drawing` gives the
        canvas's image exactly.
    Raises:
        ValueError: unknown stage or split. FileNotFoundError: no shards, or shards without strokes.
    """
    from multidigit import drawn

    out = []
    for path in _shard_files(stage, split, root):
        with np.load(path) as f:
            if "stroke_points" not in f.files:
                raise FileNotFoundError(f"{path}: no strokes (only the drawn split stores them)")
            out += drawn.strokes_of({key: f[key] for key in f.files})
    return out


# ---------------------------------------------------------------- stage entry
def main(
    params: str | Path, stage: str, out_root: str | Path = CANVAS_OUT, mnist_dir: str | Path = MNIST_OUT
) -> dict:
    """`multidigit generate --stage S`: every shard in this process (same bytes as the Prefect flow).

    Returns:
        The stage manifest.
    """
    cfg = load_params(params)
    out_dir = Path(out_root) / stage
    specs = plan_shards(cfg.generate, stage)
    results = [generate_shard(cfg, spec, out_dir, mnist_dir) for spec in tqdm(specs, desc=stage)]
    manifest = write_manifest(cfg, stage, results, out_dir)
    counts = ", ".join(f"{k}={v['canvases']}" for k, v in manifest["splits"].items())
    print(f"generate: wrote {out_dir} ({counts})")
    return manifest
