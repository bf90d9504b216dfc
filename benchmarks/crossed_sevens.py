"""Crossed 7s: MNIST test 7s written the continental way, with a bar across the stem, read as the page
reads them beside the same drawings without the bar, with digits spaced as people space them and close.

    python benchmarks/crossed_sevens.py [--canvases 600] [--seed 0]

Much of Europe crosses its 7s, and MNIST, written in the United States, holds few. A reader that has never
seen the bar may read a crossed 7 as a 7 with a 1 or a 4 beside it, or as nothing. This check measures it
on drawings no training rule shaped: its bar geometry and placement are its own code, not
`multidigit.drawn`'s.

A drawing: 1-4 MNIST test digits traced into strokes (`multidigit.stroke_cache`), each a 7 half
the time, else any test digit, 20-50 px tall in one row, the brush the slider's default on two drawings in
five, else any of its widths (as `font_digits`). It is drawn twice: plain, and with a bar on every 7,
written after the digit as one pen line across the stem at 0.42-0.65 of its height from the top, 0.3-0.6
of the height long, its centre up to 0.06 of the height off the stem, turned up to +-10 degrees and bowed
by up to 4% of the height. Both share every placement, so their difference is the bar alone. And each is
drawn at two spacings from the same seeds: neighbours' ink 0.25-0.55 of the height apart (the brush aside;
the drawn split's gaps are 0.1-0.5), and 0-0.1 apart, where a bar may reach the next digit. Truth boxes
are each digit rendered alone, bar included.

Figures per spacing, plain and crossed, as the page reads (`drawn_page.python_as_page`): recall, precision
and sequence accuracy, the 7s' recall, what the 7s were read as, and extra boxes. Writes
benchmarks/results/crossed_sevens.json and a preview of the spaced crossed drawings the page misreads.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import drawn_page  # noqa: E402
import font_digits  # noqa: E402
import independent  # noqa: E402

from multidigit import stroke_cache  # noqa: E402
from multidigit.atomic import save_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "crossed_sevens.json"
TO_BUFFER = drawn_page.BUFFER / 100  # canvas px -> buffer px
MARGIN = font_digits.MARGIN  # canvas px kept clear at every edge (font_digits.fit_map keeps it)
HEIGHT = (20.0, 50.0)  # digit height on the canvas, px
SEVEN_SHARE = 0.5
BAR_AT = (0.42, 0.65)  # the bar's height from the 7's top, in heights
BAR_LENGTH = (0.3, 0.6)  # in heights
BAR_OFFSET = 0.06  # most the bar's centre lies off the stem, in heights
BAR_TURN_DEG = 10.0
BAR_BOW = 0.04  # most the bar bends from straight, in heights
# ink to ink between neighbours, in heights: as people space digits, and close enough that bars touch
SPACINGS = {"spaced": (0.25, 0.55), "close": (0.0, 0.1)}


def stem_x(lines: list[np.ndarray], y: float) -> float:
    """Where a 7's strokes cross the line at height `y`: the crossing nearest the ink's middle, or where
    its point nearest that height lies when no segment crosses it (a stroke ending there)."""
    pts = np.concatenate(lines)
    crossings = []
    for line in lines:
        a, b = line[:-1], line[1:]
        hit = ((a[:, 1] - y) * (b[:, 1] - y) <= 0) & (a[:, 1] != b[:, 1])  # segments reaching the height
        a, b = a[hit], b[hit]
        crossings += list(a[:, 0] + (b[:, 0] - a[:, 0]) * (y - a[:, 1]) / (b[:, 1] - a[:, 1]))
    if not crossings:
        return float(pts[np.argmin(np.abs(pts[:, 1] - y)), 0])
    middle = (pts[:, 0].min() + pts[:, 0].max()) / 2
    return float(min(crossings, key=lambda x: abs(x - middle)))


def crossbar(lines: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The bar a continental writer puts across a 7 (digit pixels, y down): a bowed pen line of 9 points."""
    pts = np.concatenate(lines)
    top, h = pts[:, 1].min(), max(float(np.ptp(pts[:, 1])), 1.0)
    y = top + rng.uniform(*BAR_AT) * h
    centre = np.array([stem_x(lines, y) + rng.uniform(-BAR_OFFSET, BAR_OFFSET) * h, y])
    half = rng.uniform(*BAR_LENGTH) * h / 2
    turn = math.radians(rng.uniform(-BAR_TURN_DEG, BAR_TURN_DEG))
    along = np.array([math.cos(turn), math.sin(turn)])
    t = np.linspace(-1.0, 1.0, 9)
    bow = rng.uniform(-BAR_BOW, BAR_BOW) * h * (1 - t**2)  # zero at the ends, most at the middle
    return centre + np.outer(t * half, along) + np.outer(bow, [-along[1], along[0]])


def drawing_pair(
    digits: np.ndarray, labels: np.ndarray, gap: tuple[float, float], rng: np.random.Generator
) -> tuple[drawn_page.DrawnCanvas, drawn_page.DrawnCanvas]:
    """(plain, crossed): one row of 1-4 test digits `gap` heights apart (ink to ink, the brush's width
    aside), the second with a bar on each 7, same placement."""
    sevens = np.flatnonzero(labels == 7)
    n = int(rng.integers(1, 5))
    brush = font_digits.slider_brush(rng)
    height = rng.uniform(HEIGHT[0], min(HEIGHT[1], (100 - 2 * MARGIN) / (0.9 * n))) * TO_BUFFER
    plain, crossed, names, x = [], [], [], 0.0
    for _ in range(n):
        index = int(rng.choice(sevens)) if rng.random() < SEVEN_SHARE else int(rng.integers(len(labels)))
        lines = stroke_cache.for_split(digits).lines(np.array([index]))[0]  # traced once per process
        pts = np.concatenate(lines)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        k = height * rng.uniform(0.92, 1.08) / max(hi[1] - lo[1], 1.0)
        corner = np.array([x, rng.uniform(-0.05, 0.05) * height])
        plain.append([(line - lo) * k + corner for line in lines])
        bar = [(crossbar(lines, rng) - lo) * k + corner] if labels[index] == 7 else []
        crossed.append(plain[-1] + bar)
        names.append(int(labels[index]))
        x += (hi[0] - lo[0]) * k + brush + rng.uniform(*gap) * height
    fit = font_digits.fit_map(crossed, brush, rng)  # the bars included; the plain drawing takes it too
    return (
        drawn_page.DrawnCanvas(brush, names, [[fit(line) for line in d] for d in plain]),
        drawn_page.DrawnCanvas(brush, list(names), [[fit(line) for line in d] for d in crossed]),
    )


def drawing_pairs(
    count: int, seed: int, gap: tuple[float, float], test_split: tuple[np.ndarray, np.ndarray]
) -> list[tuple]:
    """`count` (plain, crossed) pairs of MNIST test digits (`test_split`: images, labels); the same seed
    gives the same digits, bars and brushes at every gap."""
    return [
        drawing_pair(*test_split, gap, np.random.default_rng(np.random.SeedSequence([seed, 0x77, i])))
        for i in range(count)
    ]


def _sevens(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures one variant reports: overall, the 7s' recall and misreadings, extra boxes."""
    digits = figures["digits_as_page_reads"]
    return {
        **figures["as_page_reads"],
        "as_drawn": figures["as_drawn"],
        "sevens_recall": digits["recall_by_digit"]["7"],
        "sevens_read_as": {k: v for k, v in digits["misreads"].items() if k.startswith("7->")},
        "extra_boxes": digits["extra_boxes"],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "models", help="folder holding tfjs/ and stage3/")
    p.add_argument("--detector", type=Path, help=".keras detector (default: <models>/stage3/detector.keras)")
    p.add_argument("--threshold", type=float, help="operating score threshold (default: the champion's)")
    p.add_argument("--canvases", type=int, default=600, help="drawing pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mnist", type=Path, help="MNIST IDX folder (default: $MNIST_DIR, else ../shared)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    source = independent.resolve_model(args.models, None, args.detector, args.threshold)
    test_split = independent.mnist_test_digits(args.mnist)
    result: dict[str, Any] = {
        "drawings": f"{args.canvases} drawings of MNIST test digits at each spacing, plain and with crossed "
        f"7s, seed {args.seed}",
        "model": independent.model_record(source),
        "spacings": {name: list(gap) for name, gap in SPACINGS.items()},
    }
    preview = args.out.with_name(f"{args.out.stem}_worst.png")  # beside --out: keeps the champion's
    for spacing, gap in SPACINGS.items():
        pairs = drawing_pairs(args.canvases, args.seed, gap, test_split)
        result.setdefault("sevens", int(sum(pair[0].labels.count(7) for pair in pairs)))  # same at each gap
        for k, name in enumerate(("plain", "crossed")):
            figures, seen = font_digits.score_drawings(source, [(spacing, pair[k]) for pair in pairs])
            result[f"{spacing}/{name}"] = _sevens(figures)
            if (spacing, name) == ("spaced", "crossed"):
                font_digits.write_worst(seen, preview, "crossed 7s the page misreads (spaced)")
    result["seconds"] = round(time.perf_counter() - start, 1)
    save_json(args.out, result)
    for name in (f"{s}/{v}" for s in SPACINGS for v in ("plain", "crossed")):
        row = result[name]
        print(
            f"{name:<15} recall {row['recall']:.4f} precision {row['precision']:.4f} sequence "
            f"{row['sequence_accuracy']:.4f} | 7s read {row['sevens_recall']:.4f}, as "
            f"{row['sevens_read_as'] or '-'} | extra boxes {row['extra_boxes']}"
        )
    print(f"-> {independent.workspace_path(args.out)}, {independent.workspace_path(preview)}")
    return result


if __name__ == "__main__":
    main()
