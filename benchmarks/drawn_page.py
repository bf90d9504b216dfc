"""The drawn split replayed through the real page: pointer strokes into the page served by gunicorn, in
headless Debian Chromium, at the default brush and at the slider's ends; the digits the page lists are
scored beside the Python figure for the same canvases.

    python benchmarks/drawn_page.py [--models models] [--canvases 100] [--brushes 10,4,24]
    python benchmarks/drawn_page.py --synthetic   # strokes traced from MNIST test digits, no drawn split
    python benchmarks/drawn_page.py --fonts       # single-stroke font digits (benchmarks/font_digits.py)
    python benchmarks/drawn_page.py --python-only --canvases 1000 --brushes recorded   # no browser

For each brush b (an integer on the slider, or `recorded` = each canvas's own brush width):
- the page: clear, set the brush slider to b, draw the canvas's strokes (400-px buffer coordinates) as
  mouse pointer events, wait for the debounced detection, read `multidigit.state.detections` (what the
  page lists, at the manifest's threshold) and the reduced canvas it sent to the model;
- Python, as the page does it: the same strokes through `multidigit.strokes.render_strokes` at the
  manifest's `input.read_brush` (the width the page reads strokes at, whatever its slider shows; at b
  when it has none) and `reduce_drawing`, read again rescaled where the manifest's `input.read_height`
  asks (`rescale.read_drawings`, the page's second look), the same detector
  (`independent.detections_of`: the artifact, else Keras + numpy NMS) shown at the same threshold, and
  its boxes moved to width b (`strokes.widen_boxes`);
- Python, read as drawn: the canvas rendered at b itself (at b = recorded, the split's own image) and
  the same detector: what the detector makes of width b, beside what the page shows.
- truth: each digit's strokes rendered alone at b, reduced, boxed tight; labels from the split.

Figures per brush, page and Python: digit recall and precision (class-aware, IoU >= 0.5, the project's
matching), sequence accuracy (the digits the page reads out, in reading order by web/js/reading.js,
equal the drawn ones in the evaluation's reading order), and the share of canvases whose page bytes
equal Python's. Writes benchmarks/results/drawn_page.json. `--python-only` skips the browser and scores
the Python figures alone (as the page reads, and as drawn), e.g. on the whole split at each canvas's own
brush, into benchmarks/results/drawn_page_python.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import independent  # noqa: E402

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from multidigit.atomic import save_json  # noqa: E402
from multidigit.evaluation.drawn import read_digits  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "drawn_page.json"
PYTHON_RESULTS = ROOT / "benchmarks" / "results" / "drawn_page_python.json"
FONTS_RESULTS = ROOT / "benchmarks" / "results" / "drawn_page_fonts.json"
BUFFER = 400  # the page's drawing buffer side in pixels
BRUSHES = ("10", "4", "24")  # the slider's default and its two ends
DECIMALS = 4


# ---------------------------------------------------------------- what was drawn
@dataclass
class DrawnCanvas:
    """One drawing: its recorded brush width and, per digit, the label and its strokes (buffer px)."""

    brush: float
    labels: list[int]
    strokes: list[list[np.ndarray]]  # strokes[d] = digit d's polylines, each (K, 2) float64 (x, y)
    image: np.ndarray | None = None  # the split's canvas (uint8 (100, 100)), when from the split
    boxes: np.ndarray | None = None  # the split's boxes (D, 4) xywh, when from the split

    def all_strokes(self) -> list[np.ndarray]:
        return [s for digit in self.strokes for s in digit]


def _owner(stroke: np.ndarray, boxes_px: np.ndarray) -> int:
    """The digit box (buffer px xywh) holding most of a stroke's points; the nearest when none holds any."""
    x, y = stroke[:, 0:1], stroke[:, 1:2]
    x0, y0 = boxes_px[:, 0], boxes_px[:, 1]
    dx = np.maximum(np.maximum(x0 - x, 0), x - (x0 + boxes_px[:, 2]))  # (K, D) distance outside, 0 inside
    dy = np.maximum(np.maximum(y0 - y, 0), y - (y0 + boxes_px[:, 3]))
    outside = np.hypot(dx, dy)
    inside = (outside == 0).sum(axis=0)
    return int(np.argmax(inside)) if inside.max() > 0 else int(np.argmin(outside.mean(axis=0)))


def _drawn_shards(root: Path) -> list[Path]:
    """The drawn split's shard files under `root` (data/canvases), in the order `read_canvases` reads them."""
    return sorted((root / "stage3" / "drawn").glob("shard-*.npz"))


def _stroke_digits(root: Path) -> list[np.ndarray] | None:
    """Per canvas the digit slot of each stroke, from the drawn shards' `stroke_digit`; None without it."""
    out = []
    for path in _drawn_shards(root):
        with np.load(path) as f:
            if "stroke_digit" not in f.files:
                return None
            slots, ranges = f["stroke_digit"], f["canvas_strokes"]
            out += [slots[a:b] for a, b in itertools.pairwise(ranges)]
    return out


def drawn_sources(root: Path, n: int) -> np.ndarray:
    """(n, K) MNIST test index of each digit slot of the first `n` drawn canvases (-1 padding)."""
    files = _drawn_shards(root)
    if not files:
        raise FileNotFoundError(
            f"{root / 'stage3' / 'drawn'}: no drawn shards; run `dvc repro generate@stage3`"
        )
    parts = []
    for path in files:
        with np.load(path) as f:
            parts.append(f["source"])
    return np.concatenate(parts)[:n]


def drawn_split(limit: int, root: Path) -> list[DrawnCanvas]:
    """The first `limit` canvases of the stage-3 drawn split under `root` (data/canvases), strokes grouped
    by digit: by the shards' `stroke_digit` slots, else by the split's box holding most of a stroke."""
    from multidigit.canvas import read_canvases, read_strokes

    canvases, strokes = read_canvases("stage3", "drawn", root), read_strokes("stage3", "drawn", root)
    slots = _stroke_digits(root)
    out = []
    for i in range(min(limit, len(canvases))):
        keep = canvases.labels[i] >= 0
        boxes_px = canvases.boxes[i][keep].astype(np.float64) * (BUFFER / canvases.images.shape[1])
        brush, lines = strokes[i]
        groups: list[list[np.ndarray]] = [[] for _ in range(int(keep.sum()))]
        for k, line in enumerate(lines):
            line = np.asarray(line, np.float64).reshape(-1, 2)
            groups[int(slots[i][k]) if slots is not None else _owner(line, boxes_px)].append(line)
        labels = [int(v) for v in canvases.labels[i][keep]]
        out.append(DrawnCanvas(float(brush), labels, groups, canvases.images[i], canvases.boxes[i][keep]))
    return out


def make_drawn_split(root: Path, mnist_dir: Path, params: Path, max_shards: int | None = None) -> None:
    """Write the stage-3 drawn shards of `params` (the first `max_shards`, or all) under `root` with the
    project's generator, for a workspace whose pipeline predates the split (the baseline)."""
    from multidigit.canvas import generate_shard, plan_shards
    from multidigit.params import load_params

    cfg = load_params(params)
    specs = [spec for spec in plan_shards(cfg.generate, "stage3") if spec.split == "drawn"]
    for spec in specs[:max_shards]:
        generate_shard(cfg, spec, root / "stage3", mnist_dir)


def synthetic_drawn(limit: int, seed: int, brush: float = 10.0) -> list[DrawnCanvas]:
    """Drawn-like canvases without the split: 1-6 MNIST test digits traced into strokes
    (`strokes.digit_strokes`), 15-60 px tall on the canvas, in one row left to right."""
    from multidigit.strokes import digit_strokes

    digits, labels = independent.mnist_test_digits()
    scale = BUFFER / 100  # canvas px -> buffer px
    out = []
    for i in range(limit):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD4A3, i]))
        n = int(rng.integers(1, 7))
        height = float(rng.uniform(15, min(60, 95 / (0.75 * n))))  # n digits of ~0.75 h width fit
        x, groups, names = float(rng.uniform(2, 6)) * scale, [], []
        for index in rng.integers(0, len(labels), size=n):
            lines = digit_strokes(digits[index])
            pts = np.concatenate(lines)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            k = height * scale / max(hi[1] - lo[1], 1.0)
            y = float(rng.uniform(4, 96 - height)) * scale
            groups.append([(p - lo) * k + [x, y] for p in lines])
            names.append(int(labels[index]))
            x += (hi[0] - lo[0]) * k + (float(rng.uniform(2, 5)) + brush / scale) * scale  # ink apart
        right = max(float(line[:, 0].max()) for g in groups for line in g)
        fit = min(1.0, 97 * scale / max(right, 1.0))
        out.append(DrawnCanvas(brush, names, [[p * fit for p in g] for g in groups]))  # shrink to fit
    return out


def truth_at(canvas: DrawnCanvas, brush: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the reduced canvas uint8 (100, 100), boxes (D, 4) xywh, labels (D,)) of a drawing at a brush;
    each box is tight around its digit's own pixels, rendered alone."""
    from multidigit.augment import tight_bounds
    from multidigit.strokes import reduce_drawing, render_strokes

    image = reduce_drawing(render_strokes(canvas.all_strokes(), brush, BUFFER))
    alone = np.stack([reduce_drawing(render_strokes(lines, brush, BUFFER)) for lines in canvas.strokes])
    x0, y0, x1, y1 = tight_bounds(alone).T
    boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float32)
    return image, boxes, np.array(canvas.labels, np.int64)


def padded(rows: list[np.ndarray], width: int, fill: float, shape: tuple[int, ...] = ()) -> np.ndarray:
    """Stack ragged per-canvas rows into (N, width, *shape), padded with `fill`."""
    out = np.full((len(rows), width, *shape), fill, np.float32 if shape else np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def padded_truth(boxes: list[np.ndarray], labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-canvas truths as evaluation takes them: boxes (N, K, 4) padded with 0, labels (N, K) with -1."""
    width = max(len(lab) for lab in labels)
    return padded(boxes, width, 0.0, (4,)), padded(labels, width, -1)


# ---------------------------------------------------------------- the page
def wait_idle(page: Any, timeout_s: float = 60.0) -> None:
    """Wait until the page's debounced detection after the last change has finished.

    Polled from Python: `wait_for_function` polls by evaluating its string in the page, which the
    page's CSP (no 'unsafe-eval') refuses as soon as the first check is false (a slow detection).
    """
    page.wait_for_timeout(200)
    deadline = time.monotonic() + timeout_s
    while not page.evaluate("multidigit.state.done === multidigit.state.requested"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page's detection did not finish within {timeout_s} s")
        page.wait_for_timeout(25)


def draw_strokes(page: Any, strokes: list[np.ndarray], side: float) -> None:
    """Draw polylines with the mouse (pointer events) on the page's pad; coordinates span 0..`side`."""
    box = page.locator("#draw").bounding_box()
    to_page = box["width"] / side
    for stroke in strokes:
        points = [(box["x"] + x * to_page, box["y"] + y * to_page) for x, y in np.asarray(stroke).tolist()]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point)
        page.mouse.up()


class Page:
    """The served page in headless Chromium, drawn on with the mouse (pointer events)."""

    def __init__(self, browser: Any, url: str, need_model: bool = True):
        self.errors: list[str] = []
        self.read_twice: list[bool] = []  # per replay: the page's second look read the drawing again
        self.inference_ms: list[float] = []  # per replay: the page's own "Inference" figure
        self.page = browser.new_page(viewport={"width": 1000, "height": 760})
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url + "/")
        self.page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)
        if need_model and self.page.evaluate("document.body.dataset.ready") != "model":
            raise RuntimeError(f"{url}: the page has no model (is a champion exported?)")

    def idle(self, timeout_s: float = 60.0) -> None:
        wait_idle(self.page, timeout_s)

    def set_brush(self, width: float) -> None:
        self.page.eval_on_selector(
            "#brush", "(el, w) => { el.value = w; el.dispatchEvent(new Event('input')); }", width
        )
        actual = float(self.page.input_value("#brush"))
        if actual != width:
            raise ValueError(f"brush: the slider took {actual}, not {width} (its range is 4-24, step 1)")

    def replay(self, strokes: list[np.ndarray], brush: float) -> tuple[list[dict], np.ndarray, tuple]:
        """Clear, draw buffer-pixel strokes at `brush`; returns (the listed detections, the sent canvas,
        the digits the page reads out, in its order)."""
        self.page.click("#clear")
        self.idle()
        self.set_brush(brush)
        draw_strokes(self.page, strokes, BUFFER)
        self.idle()
        found = self.page.evaluate("multidigit.state.detections")
        sent = np.array(self.page.evaluate("multidigit.canvasBytes()"), np.uint8).reshape(100, 100)
        self.read_twice.append(bool(self.page.evaluate("Boolean(multidigit.state.rescale)")))
        self.inference_ms.append(float(self.page.text_content("#timing").split()[0]))
        return found, sent, tuple(int(c) for c in self.page.text_content("#reading"))

    def threshold(self) -> float:
        """The score threshold the page detects at (the manifest's, unless the slider moved)."""
        return float(self.page.evaluate("multidigit.state.threshold"))


def page_detections(found: list[dict]) -> dict[str, np.ndarray]:
    """The page's listed detections as a `Detections` dict (boxes xywh in canvas pixels)."""
    boxes = np.array([[d["x"], d["y"], d["w"], d["h"]] for d in found], np.float32).reshape(-1, 4)
    return {
        "boxes": boxes,
        "scores": np.array([d["score"] for d in found], np.float32),
        "labels": np.array([d["label"] for d in found], np.int64),
    }


# ---------------------------------------------------------------- scoring
def score_listed(
    boxes: list[np.ndarray], labels: list[np.ndarray], dets: list[dict], reads: list[tuple] | None = None
) -> dict[str, float]:
    """Digit recall and precision (class-aware, IoU >= 0.5) and sequence accuracy of listed detections:
    the digits read out (`reads`, what the page shows; else the detections in reading order) equal the
    drawn digits in reading order."""
    mt = independent.evaluation_modules()[1]
    gt_boxes, gt_labels = padded_truth(boxes, labels)
    prf = mt.class_prf(mt.match_split(gt_boxes, gt_labels, dets), 0.0)
    reads = reads if reads is not None else [read_digits(d["boxes"], d["labels"]) for d in dets]
    sequence = [read_digits(b, lab) == read for b, lab, read in zip(boxes, labels, reads, strict=True)]
    return {
        "recall": round(prf["recall/all"], DECIMALS),
        "precision": round(prf["precision/all"], DECIMALS),
        "sequence_accuracy": round(float(np.mean(sequence)), DECIMALS),
    }


def _share(flags) -> float:
    return round(float(np.mean(list(flags))), DECIMALS)


def read_input(source: Any) -> dict[str, Any]:
    """How the version's page reads strokes (manifest input): `read_brush`, the width it renders them at
    whatever its slider shows (None: as drawn), and `read_height`, its second look (None: none)."""
    from multidigit.manifest import read_manifest

    spec = read_manifest(source.version_dir)["input"] if source.version_dir else {}
    return {"read_brush": spec.get("read_brush"), "read_height": spec.get("read_height")}


def python_as_page(
    source: Any, drawings: list[DrawnCanvas], widths: list[float], read: dict[str, Any]
) -> tuple[np.ndarray, list[dict], str]:
    """What the page does, in Python: each drawing's strokes rendered at the read brush (else at its width)
    and reduced, the detector's shown boxes, read again rescaled where the second look asks
    (`rescale.read_drawings`) and moved to the width drawn."""
    from multidigit import rescale
    from multidigit.strokes import reduce_drawing, render_strokes

    if read["read_brush"] is None:
        pairs = zip(drawings, widths, strict=True)
        images = np.stack([reduce_drawing(render_strokes(c.all_strokes(), w, BUFFER)) for c, w in pairs])
        _, dets, path = independent.detections_of(source, images)
        return images, dets, path
    paths = []

    def detect(images: np.ndarray) -> list[dict]:
        _, shown, path = independent.detections_of(source, images)
        paths.append(path)
        return shown

    second = rescale.second_look(read["read_height"])
    lines = [(c.all_strokes(), [w] * len(c.all_strokes())) for c, w in zip(drawings, widths, strict=True)]
    images, dets, _ = rescale.read_drawings(detect, lines, read["read_brush"], second, BUFFER)
    return images, dets, paths[0]


def width_of(canvas: DrawnCanvas, brush: str) -> float:
    """The width a canvas is drawn at for one brush of the run: its own ("recorded") or the slider's."""
    return canvas.brush if brush == "recorded" else float(brush)


def python_figures(
    source: Any, drawings: list[DrawnCanvas], brush: str
) -> tuple[dict, np.ndarray, list, list]:
    """One brush's Python figures: as the page reads the strokes (`python`), and as drawn
    (`python_as_drawn`); with the read canvases, the page-like detections and the truths scored on."""
    widths = [width_of(c, brush) for c in drawings]
    truths = [truth_at(c, w) for c, w in zip(drawings, widths, strict=True)]
    boxes, labels = [t[1] for t in truths], [t[2] for t in truths]
    read = read_input(source)
    read_images, python_dets, path = python_as_page(source, drawings, widths, read)
    _, drawn_dets, _ = independent.detections_of(source, np.stack([t[0] for t in truths]))
    figures = {
        "brush": brush,
        **read,
        "canvases": len(drawings),
        "digits": int(sum(len(lab) for lab in labels)),
        "python": {**score_listed(boxes, labels, python_dets), "path": path},
        "python_as_drawn": score_listed(boxes, labels, drawn_dets),
    }
    if read["read_height"] is not None:  # what the second look buys: the same, read once
        once = python_as_page(source, drawings, widths, {**read, "read_height": None})[1]
        figures["python_read_once"] = score_listed(boxes, labels, once)
    return figures, read_images, python_dets, truths


def inference_medians(ms: list[float], twice: list[bool]) -> dict[str, float | None]:
    """The page's median "Inference" figure over the drawings it read once, and over those read twice."""
    parts = {"read_once": [t for t, two in zip(ms, twice, strict=True) if not two]}
    parts["read_twice"] = [t for t, two in zip(ms, twice, strict=True) if two]
    return {kind: round(float(np.median(v)), 1) if v else None for kind, v in parts.items()}


def run_brush(page: Page, source: Any, drawings: list[DrawnCanvas], brush: str) -> dict[str, Any]:
    """Replay every drawing at one brush ("recorded" = each its own) in the page and in Python; score both.

    `python` is what the page does (read at the manifest's read_brush, boxes widened); `python_as_drawn`
    reads each canvas as drawn, at the brush itself: the detector's own robustness to the width."""
    page_dets, sent, page_seq = [], [], []
    page.read_twice.clear()
    page.inference_ms.clear()
    start = time.perf_counter()
    for canvas in drawings:
        found, image, read = page.replay(canvas.all_strokes(), width_of(canvas, brush))
        page_dets.append(page_detections(found))
        sent.append(image)
        page_seq.append(read)
    page_s = time.perf_counter() - start
    figures, read_images, python_dets, truths = python_figures(source, drawings, brush)
    checks = {}
    if brush == "recorded" and all(c.image is not None for c in drawings):  # our replay is the split's
        checks["replay_equals_split_image"] = _share(
            np.array_equal(c.image, t[0]) for c, t in zip(drawings, truths, strict=True)
        )
        checks["truth_equals_split_boxes"] = _share(
            np.array_equal(c.boxes, t[1]) for c, t in zip(drawings, truths, strict=True)
        )
    boxes, labels = [t[1] for t in truths], [t[2] for t in truths]
    python_seq = [read_digits(d["boxes"], d["labels"]) for d in python_dets]
    return {
        **figures,
        "page": score_listed(boxes, labels, page_dets, page_seq),
        "page_bytes_equal_python": _share(
            np.array_equal(a, b) for a, b in zip(sent, read_images, strict=True)
        ),
        # Pointer coordinates reach the page through float CSS pixels (~3e-5 px off), so a pixel on a
        # brush edge can round one grey level the other way: the largest difference says how far off.
        "page_max_pixel_diff": int(
            max(np.abs(a.astype(int) - b).max() for a, b in zip(sent, read_images, strict=True))
        ),
        "page_lists_python": _share(a == b for a, b in zip(page_seq, python_seq, strict=True)),
        "page_read_twice": _share(page.read_twice),
        "page_inference_ms_median": inference_medians(page.inference_ms, page.read_twice),
        "page_seconds_per_canvas": round(page_s / max(len(drawings), 1), 3),
        **checks,
    }


# ---------------------------------------------------------------- main
def site_server(site: Path) -> Any:
    """`live_server` of the checkout whose page is served (its gunicorn runs in that folder): this repo,
    or another, e.g. the baseline's, whose page speaks its own model format."""
    import importlib.util

    if site.resolve() == ROOT:
        from services.liveserver import live_server

        return live_server
    spec = importlib.util.spec_from_file_location("site_liveserver", site / "services" / "liveserver.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"--site: {site / 'services' / 'liveserver.py'} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.live_server


def drawings_name(args: argparse.Namespace) -> str:
    if args.fonts:
        return "single-stroke font digits (benchmarks/font_digits.py)"
    return "synthetic (traced MNIST test digits)" if args.synthetic else "stage3 drawn split"


def chosen_drawings(args: argparse.Namespace) -> list[DrawnCanvas]:
    """The drawings the flags ask for: the drawn split, traced MNIST test digits, or font digits."""
    if args.fonts:
        import font_digits

        return [drawing for _, drawing in font_digits.font_drawings(args.canvases, args.seed)]
    return (
        synthetic_drawn(args.canvases, args.seed) if args.synthetic else drawn_split(args.canvases, args.data)
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "models", help="folder holding tfjs/ and stage3/")
    p.add_argument("--detector", type=Path, help=".keras detector (default: <models>/stage3/detector.keras)")
    p.add_argument("--canvases", type=int, default=100, help="drawings replayed per brush")
    p.add_argument("--brushes", default=",".join(BRUSHES), help="comma list of slider widths or 'recorded'")
    p.add_argument("--synthetic", action="store_true", help="traced MNIST test digits instead of the split")
    p.add_argument(
        "--fonts", action="store_true", help="single-stroke font digits (font_digits.py) instead of the split"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --synthetic and --fonts drawings")
    p.add_argument(
        "--data", type=Path, default=ROOT / "data" / "canvases", help="canvases folder of the split"
    )
    p.add_argument(
        "--make-split", action="store_true", help="first write the drawn split of params.yaml into --data"
    )
    p.add_argument(
        "--mnist", type=Path, default=ROOT / "data" / "mnist", help="MNIST npz splits, for --make-split"
    )
    p.add_argument("--site", type=Path, default=ROOT, help="checkout whose page is served (default: this)")
    p.add_argument("--python-only", action="store_true", help="no browser: the Python figures alone")
    p.add_argument(
        "--out",
        type=Path,
        help=f"default {RESULTS.name} ({PYTHON_RESULTS.name} with --python-only, {FONTS_RESULTS.name} "
        "with --fonts)",
    )
    args = p.parse_args(argv)
    if args.out is None:
        args.out = FONTS_RESULTS if args.fonts else PYTHON_RESULTS if args.python_only else RESULTS
    if args.fonts and args.synthetic:
        p.error("--fonts and --synthetic: choose one source of drawings")
    if args.fonts and args.python_only:
        p.error("--fonts --python-only: benchmarks/font_digits.py scores font digits in Python")
    if args.detector and not args.python_only:
        # the page reads the export under --models; a Python figure of another detector is no parity
        p.error("--detector: the page reads the champion export under --models; use it with --python-only")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    from playwright.sync_api import sync_playwright

    args = parse_args(argv)
    live_server = site_server(args.site)
    brushes = [b.strip() for b in args.brushes.split(",") if b.strip()]
    if args.make_split:
        make_drawn_split(args.data, args.mnist, ROOT / "params.yaml")
    drawings = chosen_drawings(args)
    source = independent.resolve_model(args.models, None, args.detector, None)
    if args.python_only:
        return python_only(args, source, drawings, brushes)
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"chromium: {CHROMIUM} not found; `make install-browser`")
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        live_server(Path(tmp), MODELS_DIR=args.models / "tfjs") as url,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = Page(browser, url)
        runs = [run_brush(page, source, drawings, b) for b in brushes]
        page_threshold, errors = page.threshold(), page.errors
        browser.close()
    result = {
        "drawings": drawings_name(args),
        "split": None if args.synthetic or args.fonts else independent.workspace_path(args.data),
        "page": "this checkout" if args.site.resolve() == ROOT else "another checkout",
        "model": {
            "version_dir": independent.workspace_path(source.version_dir),
            "detector": independent.workspace_path(source.detector),
            "manifest_threshold": source.threshold,
            "page_threshold": page_threshold,
        },
        "brushes": {r["brush"]: r for r in runs},
        "page_errors": errors,
        "seconds": round(time.perf_counter() - start, 1),
    }
    save_json(args.out, result)
    for r in runs:
        pg, py, dr = r["page"], r["python"], r["python_as_drawn"]
        print(
            f"brush {r['brush']:>8}: page recall {pg['recall']:.4f} precision {pg['precision']:.4f} "
            f"sequence {pg['sequence_accuracy']:.4f} | python {py['recall']:.4f} {py['precision']:.4f} "
            f"{py['sequence_accuracy']:.4f} | read as drawn {dr['sequence_accuracy']:.4f} "
            f"| bytes equal {r['page_bytes_equal_python']:.2f}"
        )
    print(f"-> {independent.workspace_path(args.out)}")
    return result


def python_only(args: argparse.Namespace, source: Any, drawings: list, brushes: list[str]) -> dict[str, Any]:
    """`--python-only`: each brush's Python figures, no browser."""
    runs = [python_figures(source, drawings, b)[0] for b in brushes]
    result = {
        "drawings": drawings_name(args),
        "model": independent.model_record(source),
        "brushes": {r["brush"]: r for r in runs},
    }
    save_json(args.out, result)
    for r in runs:
        py, dr = r["python"], r["python_as_drawn"]
        once = r.get("python_read_once")
        print(
            f"brush {r['brush']:>8}: as the page reads (brush {r['read_brush']}) recall {py['recall']:.4f} "
            f"precision {py['precision']:.4f} sequence {py['sequence_accuracy']:.4f} | as drawn "
            f"{dr['recall']:.4f} {dr['precision']:.4f} {dr['sequence_accuracy']:.4f}"
            + (f" | read once {once['recall']:.4f} {once['precision']:.4f} {once['sequence_accuracy']:.4f}"
               if once else "")
        )  # fmt: skip
    print(f"-> {independent.workspace_path(args.out)}")
    return result


if __name__ == "__main__":
    main()
