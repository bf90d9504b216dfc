"""Drawings whose strokes neither MNIST nor our tracer made: digits of single-stroke fonts, written on the
page the way a person writes a number, read as the page reads them.

    python benchmarks/font_digits.py [--canvases 1000] [--seed 0]      # Python, as the page reads
    python benchmarks/drawn_page.py --fonts --canvases 100              # the same drawings in the page
    python benchmarks/font_digits.py --extract node_modules/hersheytext  # rebuild the glyph file

Every other drawn check starts from MNIST digits traced by `multidigit.strokes`: the drawn split, the
page replay, the audit. A detector trained on those traces can learn the tracer's habits (its loop
openings, its corner rounding) and the checks would not see it. Here the digits are the pen paths of
nine single-stroke fonts (`data/stroke_font_digits.json`: the eight EMS handwriting fonts and Hershey
Sans 1-stroke, from the npm package hersheytext 2.0.0; SIL Open Font License and the Hershey fonts'
notice), among them three handwriting faces (EMS Allure, Tech, Felix) and serif or flagged 1s that MNIST
rarely holds.

A drawing: one font (a person writes in one hand), 1-6 digits, 15-60 px tall, in one row or two, left to
right with gaps of 0.15-0.5 of the height, a shear of up to +-0.25 (slant), each digit turned up to +-6
degrees and stretched 0.85-1.15 in width, its pen path wobbled by a smooth displacement of up to 2% of
its height (a hand's tremor); the brush is the page slider's default 10 on two drawings in five, else
any of its widths 4-24. This placement is its own code, not `multidigit.drawn`'s. Truth boxes are each
digit rendered alone and boxed tight (`drawn_page.truth_at`), so they follow the brush as the page's do.

Figures (as the page reads: its read brush and second look, `drawn_page.python_as_page`): recall,
precision and sequence accuracy overall, per font, per brush bucket and per height bucket, the same read
as drawn, per digit the share read right and every misreading, and an MNIST-only reader's verdicts (the
audit's reader and tables, `drawn_audit`). Writes benchmarks/results/font_digits.json and a preview of the
worst drawings.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import drawn_audit  # noqa: E402
import drawn_page  # noqa: E402
import independent  # noqa: E402
import restroke_fidelity  # noqa: E402

from multidigit.atomic import atomic_path, save_json  # noqa: E402

GLYPHS = ROOT / "benchmarks" / "data" / "stroke_font_digits.json"
RESULTS = ROOT / "benchmarks" / "results" / "font_digits.json"
BUFFER = drawn_page.BUFFER
TO_BUFFER = BUFFER / 100  # canvas px -> buffer px
# The fonts whose digits are one pen line each (the Hershey Script and serif faces trace a thick line
# with two or three, which no pen does).
FONTS = (
    "EMSAllure",
    "EMSElfin",
    "EMSFelix",
    "EMSNixish",
    "EMSNixishItalic",
    "EMSReadability",
    "EMSReadabilityItalic",
    "EMSTech",
    "HersheySans1",
)
HEIGHT = (15.0, 60.0)  # digit height on the canvas, px
MARGIN = 3.0  # canvas px kept clear at every edge
POINT_STEP = 4.0  # buffer px between pointer events: a mouse's ~60 Hz at ~250 px/s on the 400 px pad
SLIDER = (4, 24)  # the page's brush slider, buffer px
DEFAULT_BRUSH, DEFAULT_SHARE = 10.0, 0.4
# buffer px: strokes 2.6 px wide on a 20 px digit once reduced, as MNIST's (ink / skeleton length, medians
# over 3,000 MNIST train digits: 2.63 px; these digits: 2.67 px)
MNIST_BRUSH = 10.0
BRUSH_BUCKETS = (("4-8", 4, 8), ("9-11", 9, 11), ("12-17", 12, 17), ("18-24", 18, 24))
# Six digits in a row fit only below 17 px, and a drawing that overflows is shrunk, so some fall under 15.
HEIGHT_BUCKETS = (("<15", 0, 15), ("15-25", 15, 25), ("25-40", 25, 40), ("40+", 40, np.inf))


# ---------------------------------------------------------------- the glyphs
def _svg_path(d: str) -> list[list[list[float]]]:
    """An SVG font glyph's path (M and L commands only, y up) -> polylines of [x, y] with y down."""
    lines: list[list[list[float]]] = []
    command, numbers = "M", []
    for token in re.findall(r"[A-Za-z]|-?\d*\.?\d+(?:e-?\d+)?", d):
        if token.isalpha():
            if token not in "ML":
                raise ValueError(f"glyph path command {token!r}: only M and L (single-stroke fonts)")
            command = token
            continue
        numbers.append(float(token))
        if len(numbers) == 2:
            point, numbers = [numbers[0], -numbers[1]], []
            if command == "M":
                lines.append([point])
                command = "L"  # SVG: pairs after an M's first are line-tos
            else:
                lines[-1].append(point)
    return lines


def extract_glyphs(package: Path) -> dict[str, Any]:
    """The digits of FONTS from the npm package hersheytext (its svg_fonts/), with each font's notice."""
    fonts = {}
    for name in FONTS:
        text = (package / "svg_fonts" / f"{name}.svg").read_text()
        meta = re.search(r"<metadata>(.*?)</metadata>", text, re.S)
        digits = {
            int(m[1]): _svg_path(m[2]) for m in re.finditer(r'<glyph unicode="(\d)"[^>]*?d="([^"]*)"', text)
        }
        if sorted(digits) != list(range(10)):
            raise ValueError(f"{name}: digits {sorted(digits)}, need 0-9")
        notice = "; ".join(
            " ".join(line.split()) for line in (meta[1] if meta else "").splitlines() if line.strip()
        )
        fonts[name] = {"notice": notice, "digits": [digits[i] for i in range(10)]}
    version = json.loads((package / "package.json").read_text())["version"]
    return {
        "source": f"npm hersheytext {version}, svg_fonts/",
        "license": "see each font's notice",
        "fonts": fonts,
    }


def write_glyphs(data: dict[str, Any], path: Path) -> None:
    """The glyph file, one digit's polylines per line (whole font units: the fonts' own precision)."""
    lines = [
        f'{{"source": {json.dumps(data["source"])}, "license": {json.dumps(data["license"])}, "fonts": {{'
    ]
    for f, (name, font) in enumerate(data["fonts"].items()):
        lines.append(f'{json.dumps(name)}: {{"notice": {json.dumps(font["notice"])}, "digits": [')
        digits = [
            json.dumps([[[round(v, 1) for v in p] for p in line] for line in d]) for d in font["digits"]
        ]
        lines.append(",\n".join(digits))
        lines.append("]}" + ("," if f < len(data["fonts"]) - 1 else ""))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join([*lines, "}}"]) + "\n")


def load_glyphs(path: Path = GLYPHS) -> dict[str, list[list[np.ndarray]]]:
    """font -> 10 digits -> polylines (K, 2) float64 in font units, y down."""
    fonts = json.loads(path.read_text())["fonts"]
    return {
        name: [[np.asarray(line, np.float64).reshape(-1, 2) for line in digit] for digit in font["digits"]]
        for name, font in fonts.items()
    }


# ---------------------------------------------------------------- one drawing
def _wobble(line: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A polyline resampled every ~POINT_STEP buffer px and moved by a smooth random displacement (two sines
    per axis along its arc length) of at most `amplitude` px: a hand's tremor, not pixel noise."""
    if len(line) < 2:
        return line.copy()
    steps = np.hypot(*np.diff(line, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    t = np.linspace(0.0, arc[-1], max(2, int(arc[-1] / POINT_STEP) + 1))
    dense = np.stack([np.interp(t, arc, line[:, 0]), np.interp(t, arc, line[:, 1])], axis=1)
    freq = rng.uniform(0.5, 3.0, (2, 2)) * 2 * np.pi / max(arc[-1], 1.0)
    phase = rng.uniform(0, 2 * np.pi, (2, 2))
    shift = np.stack([np.sin(t[:, None] * freq[a] + phase[a]).sum(axis=1) / 2 for a in range(2)], axis=1)
    return dense + amplitude * shift


def _shaped(lines: list[np.ndarray], height: float, shear: float, rng: np.random.Generator) -> list:
    """A glyph scaled to `height` buffer px, stretched, turned, sheared and wobbled; ink's top-left at 0."""
    pts = np.concatenate(lines)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    k = height / max(hi[1] - lo[1], 1e-6)
    angle = np.deg2rad(rng.uniform(-6, 6))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rotate @ np.array([[k * rng.uniform(0.85, 1.15), -shear * k], [0.0, k]])
    amplitude = rng.uniform(0.0, 0.02) * height
    out = [_wobble((line - (lo + hi) / 2) @ matrix.T, amplitude, rng) for line in lines]
    corner = np.concatenate(out).min(axis=0)
    return [line - corner for line in out]


def slider_brush(rng: np.random.Generator) -> float:
    """The slider's default on DEFAULT_SHARE of drawings, else any of its integer widths."""
    return DEFAULT_BRUSH if rng.random() < DEFAULT_SHARE else float(rng.integers(SLIDER[0], SLIDER[1] + 1))


def _rows(n: int, rng: np.random.Generator) -> list[int]:
    """Digits per row: one row, or from four digits up two rows of near-equal length half the time."""
    if n >= 4 and rng.random() < 0.5:
        return [n - n // 2, n // 2]
    return [n]


def font_drawing(glyphs: dict, font: str, rng: np.random.Generator) -> drawn_page.DrawnCanvas:
    """One drawing in one font: a number of 1-6 digits laid out left to right in one or two rows."""
    n = int(rng.integers(1, 7))
    rows, brush = _rows(n, rng), slider_brush(rng)
    room = 100 - 2 * MARGIN
    # a digit plus its gap is ~0.9 h wide, a row with its spacing ~1.35 h tall: the largest h that fits
    top = min(HEIGHT[1], room / (0.9 * max(rows)), room / (1.35 * len(rows)))
    height = rng.uniform(HEIGHT[0], max(HEIGHT[0], top)) * TO_BUFFER
    shear = rng.uniform(-0.25, 0.25)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    groups, y = [], 0.0
    for count in rows:
        x, row = 0.0, []
        for label in labels[len(groups) : len(groups) + count]:
            lines = _shaped(glyphs[font][label], height * rng.uniform(0.92, 1.08), shear, rng)
            width = max(float(np.concatenate(lines)[:, 0].max()), 0.0)
            top = y + rng.uniform(-0.05, 0.05) * height  # the row's tops level to within 5% of h
            row.append([line + np.array([x, top]) for line in lines])
            x += width + brush + rng.uniform(0.15, 0.5) * height  # ink apart by the gap
        groups += row
        y += height * rng.uniform(1.3, 1.5)
    return drawn_page.DrawnCanvas(brush, labels, _fitted(groups, brush, rng))


def fit_map(groups: list[list[np.ndarray]], brush: float, rng: np.random.Generator):
    """The map of a polyline that shrinks the drawing where it overflows the canvas and moves it to a
    random spot that keeps MARGIN clear of every edge (the brush's half width included)."""
    pts = np.concatenate([line for group in groups for line in group])
    lo, hi = pts.min(axis=0) - brush / 2, pts.max(axis=0) + brush / 2
    room = (100 - 2 * MARGIN) * TO_BUFFER
    k = min(1.0, room / max(hi[0] - lo[0], 1e-6), room / max(hi[1] - lo[1], 1e-6))
    span = (hi - lo) * k
    corner = MARGIN * TO_BUFFER + rng.uniform(0, 1, 2) * np.maximum(room - span, 0)
    return lambda line: (line - lo) * k + corner


def _fitted(groups: list[list[np.ndarray]], brush: float, rng: np.random.Generator) -> list:
    """The drawing moved by `fit_map`."""
    fit = fit_map(groups, brush, rng)
    return [[fit(line) for line in group] for group in groups]


def font_drawings(
    count: int, seed: int, glyphs: dict | None = None
) -> list[tuple[str, drawn_page.DrawnCanvas]]:
    """`count` drawings, (font, drawing) each; fonts in turn, so every font gets its share."""
    glyphs = glyphs or load_glyphs()
    fonts = sorted(glyphs)
    out = []
    for i in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF0, i]))
        font = fonts[i % len(fonts)]
        out.append((font, font_drawing(glyphs, font, rng)))
    return out


# ---------------------------------------------------------------- scoring
def _subsets(fonts: list[str], widths: np.ndarray, heights: np.ndarray) -> dict[str, np.ndarray]:
    """Canvas indices per font, per brush bucket and per bucket of the median digit height (canvas px)."""
    names = np.array(fonts)
    out = {f"font/{name}": np.flatnonzero(names == name) for name in sorted(set(fonts))}
    for name, lo, hi in BRUSH_BUCKETS:
        out[f"brush/{name}"] = np.flatnonzero((widths >= lo) & (widths <= hi))
    for name, lo, hi in HEIGHT_BUCKETS:
        out[f"height/{name}"] = np.flatnonzero((heights >= lo) & (heights < hi))
    return out


def _scores(boxes: list, labels: list, dets: list, idx: np.ndarray | None = None) -> dict[str, float]:
    """drawn_page's recall / precision / sequence accuracy on all canvases or the subset `idx`."""
    idx = np.arange(len(labels)) if idx is None else idx
    return drawn_page.score_listed([boxes[i] for i in idx], [labels[i] for i in idx], [dets[i] for i in idx])


def confusions(boxes: list, labels: list, dets: list) -> dict[str, Any]:
    """Per true digit the share read right, and the digits read as another one ("6->5": count), from
    class-agnostic matches (the evaluation's confusion matrix); "6->none" is a digit not listed."""
    mt = independent.evaluation_modules()[1]
    gt_boxes, gt_labels = drawn_page.padded_truth(boxes, labels)
    cm = mt.confusion_matrix(mt.match_split(gt_boxes, gt_labels, dets, class_aware=False))
    names = [*map(str, range(10)), "none"]
    errors = {
        f"{names[t]}->{names[p]}": int(cm[t, p]) for t in range(10) for p in range(11) if t != p and cm[t, p]
    }
    return {
        "recall_by_digit": {str(c): round(float(cm[c, c] / max(cm[c].sum(), 1)), 4) for c in range(10)},
        "misreads": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        "extra_boxes": int(cm[mt.BACKGROUND].sum()),
    }


def score_drawings(source: Any, pairs: list[tuple[str, drawn_page.DrawnCanvas]]) -> tuple[dict, dict]:
    """Figures as the page reads the drawings and as drawn, overall and per subset; with what the worst
    preview needs (truths, the page-like detections, per canvas whether it was read right)."""
    fonts, drawings = [f for f, _ in pairs], [d for _, d in pairs]
    widths = np.array([d.brush for d in drawings])
    truths = [drawn_page.truth_at(d, d.brush) for d in drawings]
    boxes, labels = [t[1] for t in truths], [t[2] for t in truths]
    read = drawn_page.read_input(source)
    _, page_dets, path = drawn_page.python_as_page(source, drawings, list(widths), read)
    _, drawn_dets, _ = independent.detections_of(source, np.stack([t[0] for t in truths]))
    heights = np.array([float(np.median(b[:, 3])) for b in boxes])
    figures = {
        **read,
        "path": path,
        "canvases": len(drawings),
        "digits": int(sum(len(lab) for lab in labels)),
        "as_page_reads": _scores(boxes, labels, page_dets),
        "as_drawn": _scores(boxes, labels, drawn_dets),
        "digits_as_page_reads": confusions(boxes, labels, page_dets),
        "subsets": {
            name: {"canvases": len(idx), **_scores(boxes, labels, page_dets, idx)}
            for name, idx in _subsets(fonts, widths, heights).items()
            if len(idx)  # a few drawings leave some bucket empty
        },
    }
    right = [drawn_page.read_digits(d["boxes"], d["labels"]) == drawn_page.read_digits(b, lab)
             for d, b, lab in zip(page_dets, boxes, labels, strict=True)]  # fmt: skip
    return figures, {"truths": truths, "dets": page_dets, "right": np.array(right), "fonts": fonts}


def write_worst(
    seen: dict, path: Path, title: str = "font digits the page misreads", count: int = 16
) -> None:
    """A grid of drawings the page misreads (as it would list them), captioned with the font (or the
    name each drawing was scored under)."""
    from multidigit.evaluation import figures

    wrong = np.flatnonzero(~seen["right"])[:count]
    truths = seen["truths"]
    images = np.stack([t[0] for t in truths])
    boxes, labels = drawn_page.padded_truth([t[1] for t in truths], [t[2] for t in truths])
    captions = [f"#{i} {seen['fonts'][i]}" for i in wrong]
    with atomic_path(path) as tmp:
        figures.plot_canvases(images, boxes, labels, seen["dets"], wrong, tmp, title, captions)


# ---------------------------------------------------------------- an MNIST reader's verdict
def mnist_style(lines: list[np.ndarray], brush: float = MNIST_BRUSH) -> np.ndarray:
    """One digit's strokes as MNIST shows a digit: drawn with the page's brush at MNIST's stroke width, its
    ink scaled into a 20 px box, reduced to 28 x 28 and moved so its centre of mass is the centre, as
    MNIST's own were. uint8 (28, 28)."""
    f = restroke_fidelity.FACTOR
    pts = np.concatenate(lines)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    k = (20 * f - brush) / max(float((hi - lo).max()), 1e-6)  # the brush's half width on either side
    centre = (lo + hi) / 2
    image = restroke_fidelity.redraw([(line - centre) * (k / f) + 14 for line in lines], brush)
    ys, xs = np.nonzero(image)
    weight = image[ys, xs].astype(np.float64)
    dy, dx = (14 - 0.5 - np.array([ys @ weight, xs @ weight]) / weight.sum()).round().astype(int)
    return np.roll(image, (dy, dx), axis=(0, 1))


def reader_audit(reader: Any, pairs: list, seen: dict) -> dict[str, Any]:
    """drawn_audit's split of the page's outcomes by an MNIST reader's verdict on each digit, alone and
    MNIST-style: "legible" when it reads the label, "odd" when not; with the recall and sequence accuracy
    of a detector right on every legible digit and as now on the odd ones."""
    crops = [mnist_style(lines) for _, drawing in pairs for lines in drawing.strokes]
    guess = reader.predict(np.stack(crops)[..., None] / 255.0, batch_size=512, verbose=0).argmax(1)
    rows, canvases, k = [], [], 0
    for (_, boxes, labels), found, right in zip(seen["truths"], seen["dets"], seen["right"], strict=True):
        digits = []
        for label, (outcome, got) in zip(labels, drawn_audit.outcomes(boxes, labels, found), strict=True):
            verdict = "legible" if guess[k] == label else "odd either way"
            rows.append((verdict, outcome, int(label), got))
            digits.append((verdict, outcome))
            k += 1
        canvases.append((bool(right), digits))
    table = drawn_audit.tabulate(rows)
    by_verdict = table.pop("by_reader_verdict")
    return {
        "reader_right": round(float(np.mean([v == "legible" for v, *_ in rows])), 4),
        **table,
        "by_reader_verdict": {"legible": by_verdict["legible"], "odd": by_verdict["odd either way"]},
        **drawn_audit.sequences(canvases),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "models", help="folder holding tfjs/ and stage3/")
    p.add_argument("--detector", type=Path, help=".keras detector (default: <models>/stage3/detector.keras)")
    p.add_argument(
        "--threshold", type=float, help="operating score threshold (default: the champion manifest's)"
    )
    p.add_argument("--canvases", type=int, default=1000, help="drawings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--reader-epochs",
        type=int,
        default=3,
        help="epochs of the MNIST reader that audits the digits (0: none)",
    )
    p.add_argument(
        "--mnist", type=Path, default=ROOT / "data" / "mnist", help="MNIST npz splits, for the reader"
    )
    p.add_argument("--extract", type=Path, help="write the glyph file from this hersheytext package folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.extract:
        write_glyphs(extract_glyphs(args.extract), GLYPHS)
        print(f"-> {independent.workspace_path(GLYPHS)}")
        return {}
    start = time.perf_counter()
    source = independent.resolve_model(args.models, None, args.detector, args.threshold)
    pairs = font_drawings(args.canvases, args.seed)
    figures, seen = score_drawings(source, pairs)
    result = {
        "drawings": f"{len(pairs)} drawings of stroke-font digits, seed {args.seed} ({GLYPHS.name})",
        "model": independent.model_record(source),
        **figures,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if args.reader_epochs:
        reader = restroke_fidelity.train_reader(args.reader_epochs, args.seed, args.mnist)
        result["mnist_reader"] = reader_audit(reader, pairs, seen)
        result["seconds"] = round(time.perf_counter() - start, 1)
    save_json(args.out, result)
    preview = args.out.with_name(f"{args.out.stem}_worst.png")  # beside --out: keeps the champion's
    write_worst(seen, preview)
    page, drawn = figures["as_page_reads"], figures["as_drawn"]
    print(
        f"as the page reads: recall {page['recall']:.4f} precision {page['precision']:.4f} sequence "
        f"{page['sequence_accuracy']:.4f} | as drawn {drawn['recall']:.4f} {drawn['precision']:.4f} "
        f"{drawn['sequence_accuracy']:.4f}"
    )
    for name, row in figures["subsets"].items():
        print(f"  {name:<28} {row['canvases']:>5}  {row['recall']:.4f} {row['precision']:.4f} "
              f"{row['sequence_accuracy']:.4f}")  # fmt: skip
    digits = figures["digits_as_page_reads"]
    print("recall by digit:", " ".join(f"{c}:{r:.3f}" for c, r in digits["recall_by_digit"].items()))
    print("misreads:", ", ".join(f"{k} {v}" for k, v in list(digits["misreads"].items())[:12]))
    if "mnist_reader" in result:
        audit = result["mnist_reader"]
        print(
            f"an MNIST reader reads {audit['reader_right']:.4f} of the digits alone; the page on those: "
            f"{audit['by_reader_verdict']['legible']}; on the rest: {audit['by_reader_verdict']['odd']}"
        )
        print(
            f"ceilings: recall {audit['ceiling_recall']}, sequence {audit['ceiling_sequence']}; "
            f"misreads of legible digits: {audit['legible_misreads']}"
        )
    print(f"-> {independent.workspace_path(args.out)}, {independent.workspace_path(preview)}")
    return result


if __name__ == "__main__":
    main()
