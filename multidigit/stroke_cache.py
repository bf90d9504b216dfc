"""A split's pen strokes, traced once and read many times.

Re-stroking draws each training digit from its MNIST original's strokes (`strokes.trace_digits`), moved by
the digit's Keras transform; a stage-3 epoch re-strokes ~86,000 digits of the 55,000 in the train split,
and tracing at 4x costs ~0.4 ms a digit. So the DVC stage `mnist` traces every split once, beside its
images (`data/mnist/<split>-strokes.npz`, `write_strokes`), and `mnist.read_split` attaches that file to
the images it returns (`attach`). A table without a file (a test's split) traces each digit on first use
and keeps it for the process. Either way the strokes of a digit are the same bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

TRACE_BATCH = 1024  # digits per tracing task when a whole split is traced
Traced = tuple[np.ndarray, np.ndarray]  # one digit: points (P, 2) float64, stroke offsets (S + 1,) int64


def digits_sha256(digits: np.ndarray) -> str:
    """The sha256 of a digit array's bytes: a strokes file names the images it was traced from."""
    return hashlib.sha256(np.ascontiguousarray(digits).tobytes()).hexdigest()


def _trace(digits: np.ndarray) -> list[Traced]:
    from multidigit import strokes  # numba compiles or loads on import: only where something is traced

    return strokes.trace_digits(digits)


def pack(traced: list[Traced]) -> dict[str, np.ndarray]:
    """Digits' strokes end to end: points (P, 2), stroke offsets (S + 1,) into points, and digit offsets
    (D + 1,) into the strokes (digit d = strokes digit_offsets[d]:digit_offsets[d + 1])."""
    counts = np.array([len(p) for p, _ in traced], np.int64)
    starts = np.cumsum(counts) - counts  # each digit's first point
    shifted = [o[1:] + s for (_, o), s in zip(traced, starts.tolist(), strict=True)]
    per_digit = np.array([len(o) - 1 for _, o in traced], np.int64)
    points = np.concatenate([p for p, _ in traced]) if traced else np.zeros((0, 2))
    return {
        "points": np.ascontiguousarray(points, np.float64),
        "stroke_offsets": np.concatenate([np.zeros(1, np.int64), *shifted]),
        "digit_offsets": np.concatenate([[0], np.cumsum(per_digit)]).astype(np.int64),
    }


def unpack(arrays: dict[str, np.ndarray]) -> list[Traced]:
    """`pack`'s inverse: per digit, (points, stroke offsets from 0)."""
    points, strokes, digits = arrays["points"], arrays["stroke_offsets"], arrays["digit_offsets"]
    out = []
    for a, b in itertools.pairwise(digits.tolist()):
        offsets = strokes[a : b + 1]
        out.append((points[offsets[0] : offsets[-1]], offsets - offsets[0]))
    return out


def write_strokes(digits: np.ndarray, path: str | Path, workers: int = 2) -> None:
    """Trace every digit (`workers` threads: the compiled loops release the GIL) and save the packed
    strokes with the digits' sha256, atomically."""
    from multidigit import console
    from multidigit.atomic import save_npz

    batches = [digits[i : i + TRACE_BATCH] for i in range(0, len(digits), TRACE_BATCH)]
    with ThreadPoolExecutor(workers) as pool:
        done = console.progress(pool.map(_trace, batches), f"trace {Path(path).name}", len(batches), "batch")
        traced = [one for batch in done for one in batch]
    save_npz(path, **pack(traced), digits_sha256=np.array(digits_sha256(digits)))


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]), without the Python loop."""
    lengths = ends - starts
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(int(lengths.sum()), dtype=np.int64)


def gather(arrays: dict[str, np.ndarray], ids: np.ndarray) -> dict[str, np.ndarray]:
    """`pack` of the digits `ids` of packed `arrays`, by index arithmetic (a shard asks for ~2,000)."""
    digits, strokes, points = arrays["digit_offsets"], arrays["stroke_offsets"], arrays["points"]
    stroke_ids = _ranges(digits[ids], digits[ids + 1])
    starts, ends = strokes[stroke_ids], strokes[stroke_ids + 1]
    return {
        "points": np.ascontiguousarray(points[_ranges(starts, ends)], np.float64),
        "stroke_offsets": np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64),
        "digit_offsets": np.concatenate([[0], np.cumsum(digits[ids + 1] - digits[ids])]).astype(np.int64),
    }


class SplitStrokes:
    """The strokes of one (M, 28, 28) digit array: its strokes file, packed (no 55,000 small arrays for
    the garbage collector to walk), else traced digit by digit on first use."""

    def __init__(self, digits: np.ndarray) -> None:
        self._digits = digits
        self.source: Path | None = None  # a `write_strokes` file of these digits, read on first use
        self._packed: dict[str, np.ndarray] | None = None
        self._traced: list[Traced | None] = [None] * len(digits)
        self._lock = threading.Lock()  # two threads may trace one digit twice (same bytes); never half-store

    def _from_file(self) -> dict[str, np.ndarray] | None:
        with self._lock:
            if self.source is not None:
                with np.load(self.source) as f:
                    arrays = {k: f[k] for k in f.files}
                if str(arrays.pop("digits_sha256")) != digits_sha256(self._digits):
                    raise ValueError(
                        f"{self.source}: traced from other digits than its split; run `dvc repro mnist`"
                    )
                self._packed, self.source = arrays, None
            return self._packed

    def attach(self, path: str | Path) -> None:
        """Read the strokes from `path` when first asked, unless this table is already in use."""
        with self._lock:
            if self._packed is None and not any(t is not None for t in self._traced):
                self.source = Path(path)

    def arrays(self, ids: np.ndarray) -> list[Traced]:
        """Per row in `ids`: (points (P, 2) float64 digit pixels, stroke offsets (S + 1,) int64)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        packed = self._from_file()
        if packed is not None:
            return unpack(gather(packed, ids))
        missing = np.unique([i for i in ids.tolist() if self._traced[i] is None]).astype(np.int64)
        if len(missing):
            traced = _trace(self._digits[missing])
            with self._lock:
                for i, t in zip(missing.tolist(), traced, strict=True):
                    self._traced[i] = t
        return [self._traced[i] for i in ids.tolist()]

    def lines(self, ids: np.ndarray) -> list[list[np.ndarray]]:
        """Per row in `ids`: its polylines, each (K, 2) float64 (x, y) in digit pixels."""
        return [[p[a:b] for a, b in itertools.pairwise(o.tolist())] for p, o in self.arrays(ids)]

    def packed(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`pack` of the rows in `ids`: (points, stroke offsets, digit offsets)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        packed = self._from_file()
        arrays = gather(packed, ids) if packed is not None else pack(self.arrays(ids))
        return arrays["points"], arrays["stroke_offsets"], arrays["digit_offsets"]


_TABLES: dict[int, tuple[weakref.ref, SplitStrokes]] = {}
_TABLES_LOCK = threading.Lock()


def for_split(digits: np.ndarray) -> SplitStrokes:
    """The process's stroke table of this digit array (the same object: a split read once and passed to
    every shard); it goes when the array does."""
    key = id(digits)
    with _TABLES_LOCK:
        found = _TABLES.get(key)
        if found is not None and found[0]() is digits:
            return found[1]
        table = SplitStrokes(digits)
        _TABLES[key] = (weakref.ref(digits, lambda _, key=key, tables=_TABLES: tables.pop(key, None)), table)
        return table


def attach(digits: np.ndarray, path: str | Path) -> None:
    """Let `digits`' table read its strokes from `path` (a `write_strokes` file) when first asked."""
    for_split(digits).attach(path)
