"""The drawing page end to end: live gunicorn, Debian Chromium driven by Playwright, loopback only.

Without a model (always runs when chromium is installed): the page loads, says no model is exported,
stays on the local host; the strokes drawn with the mouse, replayed in Python through
multidigit.strokes (`render_strokes` + `reduce_drawing`), give exactly the bytes the page sends, at the
slider's ends and its default; and web/js/preprocess.js reduces the page's PNG to the bytes of
services/drawing.py. With an exported champion ($MULTIDIGIT_E2E_MODELS_DIR, else this checkout's
models/tfjs, else the session's smoke pipeline run): no console errors, and for drawings of MNIST test
digits of every class (drawn at random, not picked for legibility, one drawing per brush) the page sends
the strokes rendered at the manifest's read_brush, byte for byte, and lists exactly the shown detections
that the version's graph, run in Python, returns for that canvas, moved to the width drawn
(`strokes.widen_boxes`), whatever the model reads them as; a model that is present but fails to load
fails the test. A screenshot is kept in
test-artifacts/.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, wasm_threads
from benchmarks.drawn_page import draw_strokes, wait_idle
from multidigit import rescale
from multidigit.constants import DIGIT_SIZE
from multidigit.evaluation.drawn import reading_order
from multidigit.mnist import read_split
from multidigit.rescale import read_drawings
from multidigit.strokes import digit_strokes, reduce_drawing, render_strokes
from services.drawing import png_to_canvas
from services.liveserver import ROOT, live_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = ROOT / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
BRUSHES = (4, 10, 24)  # buffer pixels: the slider's ends and its default
DRAWINGS = ((0, 1, 2, 3), (4, 5, 6), (7, 8, 9))  # classes per drawing, left to right: every class once
DIGIT_SCALE = 0.9  # canvas pixels per MNIST pixel: a drawn digit's ink is ~18 px tall
ROW_Y = 30  # canvas y of each digit's 28 px frame
PAGE_TOLERANCE = 0.01  # px and score: the page's detections equal Python's run of the same graph


# ---------------------------------------------------------------- MNIST digits -> pointer strokes
def drawing_strokes(images, labels, classes, rng) -> list[np.ndarray]:
    """Strokes in canvas pixels (0..100) of one random MNIST test digit per class, side by side."""
    step = 100 / len(classes)
    out = []
    for k, cls in enumerate(classes):
        index = rng.choice(np.flatnonzero(labels == cls))
        x = k * step + (step - DIGIT_SIZE * DIGIT_SCALE) / 2
        out += [np.array([x, ROW_Y]) + s * DIGIT_SCALE for s in digit_strokes(images[index])]
    return out


# ---------------------------------------------------------------- browser helpers
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (make install-browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageWatch:
    """A page with every request checked for the local host and every console error kept."""

    def __init__(self, browser, base_url: str):
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page = browser.new_page(viewport={"width": 1000, "height": 760})
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)
        self.page.goto(base_url + "/")
        self.page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)

    def _route(self, route):
        if urlparse(route.request.url).hostname in LOCAL_HOSTS | {None, ""}:
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def idle(self) -> None:
        wait_idle(self.page)

    def draw(self, strokes: list[np.ndarray]) -> None:
        """Draw canvas-pixel strokes with the mouse (pointer events) on the drawing canvas."""
        draw_strokes(self.page, strokes, 100)
        self.idle()

    def canvas_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """(the page's reduced canvas, services/drawing.py on the page's PNG) as uint8 (100, 100)."""
        js = np.array(self.page.evaluate("multidigit.canvasBytes()"), np.uint8).reshape(100, 100)
        data_url = self.page.evaluate("document.getElementById('draw').toDataURL('image/png')")
        py = png_to_canvas(base64.b64decode(data_url.split(",", 1)[1]))
        return js, py

    def recorded(self) -> tuple[list[np.ndarray], list[float]]:
        """The page's recorded strokes: polylines in buffer pixels and the width each was drawn with."""
        recorded = self.page.evaluate("multidigit.pad.strokes")
        points = [np.array(s["points"], np.float64).reshape(-1, 2) for s in recorded]
        return points, [s["width"] for s in recorded]

    def replayed(self, read_brush: float | None = None) -> np.ndarray:
        """The page's recorded strokes rendered (at `read_brush`, else as drawn) and reduced in Python."""
        points, widths = self.recorded()
        return reduce_drawing(render_strokes(points, widths if read_brush is None else read_brush, side=400))

    def _slide(self, selector: str, value: float) -> float:
        """Move a slider as a person would (its `input` event); returns the value it then holds."""
        self.page.eval_on_selector(
            selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", value
        )
        return float(self.page.input_value(selector))

    def set_brush(self, width: int) -> None:
        self._slide("#brush", width)

    def set_threshold(self, value: float) -> float:
        """The confidence slider; returns the value the page then reads at (its 0.01 steps)."""
        shown = self._slide("#threshold", value)
        assert self.page.evaluate("multidigit.state.threshold") == shown
        return shown


@pytest.fixture(scope="module")
def models_dir(request) -> Path:
    """The exported models: $MULTIDIGIT_E2E_MODELS_DIR, else this checkout's (after `make run`), else the
    session's smoke pipeline run (a fresh clone, as in CI)."""
    if os.environ.get("MULTIDIGIT_E2E_MODELS_DIR"):
        return Path(os.environ["MULTIDIGIT_E2E_MODELS_DIR"])
    if (ROOT / "models" / "tfjs" / "champion.json").is_file():
        return ROOT / "models" / "tfjs"
    return request.getfixturevalue("smoke_workspace") / "models" / "tfjs"


@pytest.fixture(scope="module")
def mnist_data(request) -> Path:
    """data/mnist of this checkout when present, else the session's split files (no pipeline run)."""
    if (ROOT / "data" / "mnist").is_dir():
        return ROOT / "data" / "mnist"
    return request.getfixturevalue("mnist_splits")


def drawings(mnist_dir: Path) -> list[list[np.ndarray]]:
    """The DRAWINGS as canvas-pixel strokes, from MNIST test digits drawn at random (seeded)."""
    images, labels = read_split("test", mnist_dir)
    rng = np.random.default_rng(16)
    return [drawing_strokes(images, labels, classes, rng) for classes in DRAWINGS]


# ---------------------------------------------------------------- without a model
@pytest.fixture(scope="module")
def bare_server(tmp_path_factory, mnist_data):
    tmp = tmp_path_factory.mktemp("bare")
    with live_server(
        tmp / "logs",
        MODELS_DIR=tmp / "no-models",
        DETECTOR_PATH=tmp / "none.keras",
        MNIST_DIR=mnist_data,
        CANVAS_DIR=mnist_data.parent / "canvases",
    ) as url:
        yield url, tmp / "logs"


def test_page_without_a_model_says_so_and_stays_local(browser, bare_server):
    url, logs = bare_server
    watch = PageWatch(browser, url)
    banner = watch.page.locator("#banner")
    assert banner.is_visible() and "No model has been exported yet" in banner.text_content()
    assert watch.page.text_content("#model-version") == "none"
    assert watch.foreign == []
    # The only console error is the browser's note on /api/model's 404.
    assert all("404" in e for e in watch.errors), watch.errors
    assert '"GET / HTTP/1.1" 200' in (logs / "access.log").read_text()
    watch.page.close()


@pytest.mark.parametrize("brush", BRUSHES)
def test_python_renders_the_pages_strokes_to_the_bytes_it_sends(browser, bare_server, mnist_data, brush):
    watch = PageWatch(browser, bare_server[0])
    watch.set_brush(brush)
    for strokes in drawings(mnist_data)[:2]:
        watch.page.keyboard.press("Escape")
        watch.draw(strokes)
        js, png = watch.canvas_pair()
        replayed = watch.replayed()
        assert js.max() > 200 and (js > 0).mean() > 0.01  # three or four digits' worth of ink
        assert np.array_equal(js, replayed), f"{(js != replayed).sum()} pixels differ at brush {brush}"
        assert np.array_equal(js, png)
    widths = {s["width"] for s in watch.page.evaluate("multidigit.pad.strokes")}
    assert widths == {brush}
    watch.page.click("#undo")  # one stroke fewer: still the same bytes every way, less ink
    watch.idle()
    js_undo, png_undo = watch.canvas_pair()
    assert np.array_equal(js_undo, watch.replayed()) and np.array_equal(js_undo, png_undo)
    assert js_undo.sum() < js.sum()
    watch.page.close()


def test_page_reads_boxes_in_the_evaluations_reading_order(browser, bare_server):
    """web/js/reading.js orders random rows of boxes (slanted, one to three rows) as the drawn split's
    sequence accuracy does (multidigit/evaluation/drawn.py), so the page lists what is scored."""
    watch = PageWatch(browser, bare_server[0])
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows, per_row = rng.integers(1, 4), rng.integers(1, 6)
        h = rng.uniform(10, 40, rows * per_row)
        x = np.tile(np.arange(per_row) * 30.0, rows) + rng.normal(0, 5, rows * per_row)
        y = np.repeat(np.arange(rows) * 45.0, per_row) + x * rng.uniform(-0.1, 0.1) + rng.normal(0, 3, len(h))
        boxes = np.round(np.stack([x, y, h * 0.7, h], 1), 1)[rng.permutation(len(h))]
        dets = [dict(zip("xywh", b, strict=True), label=i) for i, b in enumerate(boxes.tolist())]
        page = watch.page.evaluate("dets => multidigit.readingOrder(dets).map((d) => d.label)", dets)
        assert page == reading_order(boxes).tolist(), boxes
    watch.page.close()


MIRROR_JS = """async ([lines, heights, readHeight, brush]) => {
  const m = await import('/js/rescale.js');
  const { reduceGrey } = await import('/js/preprocess.js');
  const plan = m.planRescale(lines, heights, readHeight, brush, 400);
  if (!plan) return null;
  const moved = m.scaledLines(lines, plan);
  const bytes = Array.from(reduceGrey(multidigit.pad.paintLines(moved, brush), 400));
  const boxes = [{x: 10.25, y: 20.5, w: 30, h: 40.125}, {x: 0, y: 0, w: 100, h: 100}];
  return { plan, moved, bytes, back: m.boxesBack(boxes, plan, brush, 400).map((d) => [d.x, d.y, d.w, d.h]) };
}"""


def test_the_pages_second_look_plans_scales_and_maps_back_as_python_does(browser, bare_server, mnist_data):
    """web/js/rescale.js and the pad's `paintLines` against multidigit/rescale.py on drawings of MNIST test
    digits at several sizes and listed heights: the same plan, the same points to the bit, the same
    second canvas byte for byte, the same boxes mapped back."""
    watch = PageWatch(browser, bare_server[0])
    rng = np.random.default_rng(3)
    read_height, brush, planned = {"height": 30.0, "band": [24.0, 38.0]}, 12.0, 0
    for strokes in drawings(mnist_data):
        for size in (0.4, 1.0, 2.5):
            lines = [(s - 50) * size * 4 + 200 for s in strokes]  # buffer px, about the buffer's centre
            lines = [np.clip(line, 0, 399) for line in lines]
            heights = rng.uniform(8, 70, rng.integers(1, 5)).astype(np.float32).tolist()
            got = watch.page.evaluate(MIRROR_JS, [[a.tolist() for a in lines], heights, read_height, brush])
            plan = rescale.plan_rescale(lines, heights, 30.0, (24.0, 38.0), brush)
            assert (got is None) == (plan is None), (got, plan)
            if plan is None:
                continue
            planned += 1
            assert (got["plan"]["scale"], tuple(got["plan"]["centre"]), tuple(got["plan"]["to"])) == (
                plan.scale, plan.centre, plan.to,
            )  # fmt: skip
            moved = rescale.scaled_lines(lines, plan)
            assert all(np.array_equal(np.array(a), b) for a, b in zip(got["moved"], moved, strict=True))
            assert np.array_equal(got["bytes"], reduce_drawing(render_strokes(moved, brush, 400)).ravel())
            boxes = np.array([[10.25, 20.5, 30, 40.125], [0, 0, 100, 100]])
            assert np.array_equal(np.array(got["back"]), rescale.boxes_back(boxes, plan, brush))
    assert planned >= 3  # the drawings were planned at several scales, not all left to the first reading
    watch.page.close()


def test_example_button_shows_a_real_test_canvas_exactly(browser, bare_server):
    examples = json.load(urllib.request.urlopen(bare_server[0] + "/api/examples"))
    watch = PageWatch(browser, bare_server[0])
    watch.page.click("#example")
    watch.idle()
    js, py = watch.canvas_pair()
    expected = np.frombuffer(base64.b64decode(examples["examples"][0]["pixels_b64"]), np.uint8)
    assert np.array_equal(js.ravel(), expected) and np.array_equal(py.ravel(), expected)
    watch.page.keyboard.press("Escape")  # clear from the keyboard
    watch.idle()
    assert watch.canvas_pair()[0].max() == 0
    watch.page.close()


# ---------------------------------------------------------------- with the exported champion
@pytest.fixture(scope="module")
def model_server(tmp_path_factory, models_dir):
    if not (models_dir / "champion.json").is_file():
        raise FileNotFoundError(f"{models_dir}: no champion.json (the export stage did not run)")
    tmp = tmp_path_factory.mktemp("served")
    with live_server(tmp / "logs", MODELS_DIR=models_dir) as url:
        yield url


def test_page_with_a_model_loads_cleanly(browser, model_server):
    watch = PageWatch(browser, model_server)
    manifest = json.load(urllib.request.urlopen(model_server + "/api/model"))
    assert watch.page.text_content("#model-version") == manifest["version"]
    backend = watch.page.text_content("#backend")
    assert backend.split(",")[0] in {"wasm", "webgl", "cpu"}
    if backend.startswith("wasm"):  # cross-origin isolated: threaded wasm, a thread per 2 logical cores
        assert watch.page.evaluate("crossOriginIsolated") is True
        threads = wasm_threads(watch.page.evaluate("navigator.hardwareConcurrency"))
        assert watch.page.evaluate("multidigit.state.threads") == threads
        assert backend == ("wasm" if threads == 1 else f"wasm, {threads} threads")
    assert watch.page.locator("#banner").is_hidden()
    # the slider shows the calibrated threshold to its 0.01 step, and detection runs at it exactly
    threshold = float(watch.page.input_value("#threshold"))
    assert threshold == pytest.approx(manifest["thresholds"]["score"], abs=0.01)
    assert watch.page.evaluate("multidigit.state.threshold") == manifest["thresholds"]["score"]
    # the graph ran on its warm-up strokes before the page said ready, and they left nothing on the page
    warmup_ms = watch.page.evaluate("multidigit.state.warmupMs")
    assert isinstance(warmup_ms, int | float) and 0 < warmup_ms < 60_000
    watch.idle()
    assert watch.page.evaluate("multidigit.state.detections.length") == 0
    assert watch.page.locator("#results li").count() == 0
    assert watch.errors == [] and watch.foreign == []
    watch.page.close()


def python_detections(
    version_dir: Path, canvases: np.ndarray, threshold: float, recorded: list, read: dict
) -> tuple[list[list[dict]], list]:
    """Shown detections of the version's TF.js graph run in Python (the graph the page runs, weights
    dequantized), as the page's dicts in reading order, with the second look's plan per drawing.

    `recorded`: (polylines, widths) per drawing; `canvases`: the page's read canvases. With the manifest's
    `read` (its input block) naming a read_brush, the strokes are read as the page reads them
    (`rescale.read_drawings`: at that brush, again rescaled where input.read_height asks, boxes moved to
    the widths drawn); else the page's canvases are read as drawn."""
    from multidigit.artifact import detect_canvases, shown_only
    from multidigit.export import load_tfjs_graph

    graph = load_tfjs_graph(version_dir)

    def detect(images: np.ndarray) -> list[dict]:
        return detect_canvases(graph, images, threshold)

    if read.get("read_brush") is None:
        dets, plans = detect(canvases), [None] * len(canvases)
    else:
        second = rescale.second_look(read.get("read_height"))
        _, dets, plans = read_drawings(detect, recorded, read["read_brush"], second)
    out = []
    for det in dets:
        shown = shown_only(det)
        rows = zip(shown["boxes"].tolist(), shown["labels"].tolist(), shown["scores"].tolist(), strict=True)
        found = [{"x": b[0], "y": b[1], "w": b[2], "h": b[3], "label": c, "score": p} for b, c, p in rows]
        out.append([found[i] for i in reading_order(shown["boxes"])])
    return out, plans


def assert_lists_agree(pages: list[list[dict]], expected: list[list[dict]]) -> None:
    """The page's listed detections equal Python's, label for label, boxes and scores within tolerance."""
    for page, python in zip(pages, expected, strict=True):
        assert [d["label"] for d in page] == [d["label"] for d in python], (page, python)
        for p, q in zip(page, python, strict=True):  # wasm vs TensorFlow arithmetic on the same graph
            assert max(abs(p[k] - q[k]) for k in ("x", "y", "w", "h", "score")) < PAGE_TOLERANCE, (p, q)


def page_listing(watch: PageWatch) -> list[dict]:
    """What the page lists, in reading order, after checking the list and the read-out show it so."""
    found = watch.page.evaluate("multidigit.state.detections")
    boxes = np.array([[d[k] for k in "xywh"] for d in found], np.float64).reshape(-1, 4)
    listing = [found[i] for i in reading_order(boxes)]
    listed = watch.page.eval_on_selector_all("#results li", "els => els.map((e) => +e.dataset.label)")
    assert listed == [d["label"] for d in listing]  # the list shows the detections in reading order
    assert watch.page.text_content("#reading") == "".join(str(d["label"]) for d in listing)
    return listing


def test_page_lists_what_the_python_artifact_finds_on_drawings_of_every_class(
    browser, model_server, models_dir, mnist_data
):
    """One drawing per brush (4, 10, 24): the page reads the strokes at the manifest's read_brush and lists
    the Python graph's boxes for that canvas, moved to the width drawn (`strokes.widen_boxes`)."""
    watch = PageWatch(browser, model_server)
    manifest = json.load(urllib.request.urlopen(model_server + "/api/model"))
    read_brush = manifest["input"].get("read_brush")
    # What the page runs at: the manifest's calibrated threshold itself, not the slider's 0.01 steps.
    threshold = manifest["thresholds"]["score"]
    pages, canvases, recorded = [], [], []
    for strokes, brush in zip(drawings(mnist_data), BRUSHES, strict=True):
        watch.page.keyboard.press("Escape")
        watch.set_brush(brush)
        watch.draw(strokes)
        canvases.append(watch.canvas_pair()[0])
        read = watch.replayed(read_brush)
        assert np.array_equal(canvases[-1], read), f"the read canvas differs at brush {brush}"
        recorded.append(watch.recorded())
        pages.append(page_listing(watch))
    ARTIFACTS.mkdir(exist_ok=True)
    watch.page.screenshot(path=str(ARTIFACTS / "page_drawing.png"), full_page=True)
    version = models_dir / manifest["version"]
    expected, _ = python_detections(version, np.stack(canvases), threshold, recorded, manifest["input"])
    assert sum(map(len, pages)) > 0  # ten drawn digits and nothing listed would check no wiring
    assert_lists_agree(pages, expected)
    assert "ms" in watch.page.text_content("#timing")
    assert watch.errors == [] and watch.foreign == []
    watch.page.close()


def test_page_reads_small_digits_again_rescaled_as_python_does(browser, model_server, models_dir, mnist_data):
    """Digits drawn small and close together: the first reading lists boxes below the manifest's
    read_height band, so the page redraws the strokes larger (web/js/rescale.js), reads them again and
    lists what Python's `rescale.read_drawings` lists, with the same plan and the same second canvas."""
    watch = PageWatch(browser, model_server)
    manifest = json.load(urllib.request.urlopen(model_server + "/api/model"))
    assert manifest["input"].get("read_height"), "the exported version has no second look"
    # The slider's lowest confidence, so that whatever model is exported (in CI a smoke model, whose
    # calibrated threshold lists few boxes) lists the small digits: this checks the second look's wiring,
    # page against Python; how well a model reads drawings is the drawn split's measure.
    threshold = watch.set_threshold(0.05)
    images, labels = read_split("test", mnist_data)
    small = [DIGIT_SCALE * 0.6 * s + np.array([25.0 + 14 * k, 40.0])
             for k, cls in enumerate((2, 5, 8))
             for s in digit_strokes(images[np.flatnonzero(labels == cls)[3]])]  # fmt: skip
    watch.set_brush(10)
    watch.draw(small)
    recorded = watch.recorded()
    version = models_dir / manifest["version"]
    read = watch.canvas_pair()[0][None]
    expected, plans = python_detections(version, read, threshold, [recorded], manifest["input"])
    assert plans[0] is not None, "Python's first reading listed nothing on the small digits, or nothing small"
    page_plan = watch.page.evaluate("multidigit.state.rescale && {...multidigit.state.rescale, canvas: null}")
    assert page_plan is not None, "the page read the small digits once"
    assert (page_plan["scale"], tuple(page_plan["centre"]), tuple(page_plan["to"])) == (
        plans[0].scale, plans[0].centre, plans[0].to,
    )  # fmt: skip
    second = np.array(watch.page.evaluate("multidigit.rescaledBytes()"), np.uint8).reshape(100, 100)
    moved = rescale.scaled_lines(recorded[0], plans[0])
    assert np.array_equal(second, reduce_drawing(render_strokes(moved, manifest["input"]["read_brush"], 400)))
    assert_lists_agree([page_listing(watch)], expected)
    assert "read twice" in watch.page.text_content("#timing")
    assert watch.errors == [] and watch.foreign == []
    watch.page.close()
