"""A split's pen strokes, traced once per process and read many times.

Re-stroking draws each training digit from its MNIST original's strokes (`strokes.trace_digits`), moved by
the digit's Keras transform, so a digit drawn again in a later shard or fresh epoch is not traced again:
a stage-3 epoch re-strokes ~86,000 digits of the 55,000 in the train split. Tracing at 4x costs ~0.3 ms a
digit; the points' affine costs nothing by comparison. Strokes are traced on first use, so a test on 40
digits traces 40.
"""

from __future__ import annotations

import itertools
import threading
import weakref

import numpy as np

from multidigit import strokes


class SplitStrokes:
    """The strokes of one (M, 28, 28) digit array, traced lazily, digit by digit."""

    def __init__(self, digits: np.ndarray) -> None:
        self._digits = digits
        self._traced: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(digits)
        self._lock = threading.Lock()  # two threads may trace one digit twice (same bytes); never half-store

    def arrays(self, ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row in `ids`: (points (P, 2) float64 digit pixels, stroke offsets (S + 1,) int64)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        missing = np.unique([i for i in ids.tolist() if self._traced[i] is None]).astype(np.int64)
        if len(missing):
            traced = strokes.trace_digits(self._digits[missing])
            with self._lock:
                for i, t in zip(missing.tolist(), traced, strict=True):
                    self._traced[i] = t
        return [self._traced[i] for i in ids.tolist()]

    def lines(self, ids: np.ndarray) -> list[list[np.ndarray]]:
        """Per row in `ids`: its polylines, each (K, 2) float64 (x, y) in digit pixels."""
        return [[p[a:b] for a, b in itertools.pairwise(o.tolist())] for p, o in self.arrays(ids)]

    def packed(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The strokes of `ids` end to end: points (P, 2), stroke offsets (S + 1,) into points, and digit
        offsets (D + 1,) into the strokes (digit d = strokes digit_offsets[d]:digit_offsets[d + 1])."""
        arrays = self.arrays(ids)
        counts = np.array([len(p) for p, _ in arrays], np.int64)
        points = np.concatenate([p for p, _ in arrays]) if arrays else np.zeros((0, 2))
        base = np.concatenate([[0], np.cumsum(counts)[:-1]]) if arrays else np.zeros(0, np.int64)
        shifted = [o[1:] + b for (_, o), b in zip(arrays, base.tolist(), strict=True)]
        offsets = [np.zeros(1, np.int64), *shifted]
        per_digit = np.array([len(o) - 1 for _, o in arrays], np.int64)
        return (
            np.ascontiguousarray(points, np.float64),
            np.concatenate(offsets),
            np.concatenate([[0], np.cumsum(per_digit)]).astype(np.int64),
        )


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
