"""Browser benchmark of the exported detector, and the headless-Chromium harness the parity test shares.

    python benchmarks/browser.py [--detector models/stage3/detector.keras] [--runs 100]

For each quantization (none, float16, uint8) it exports the detector as the export stage does
(`export.export_artifact`: the graph with its post-processing, SavedModel + TF.js, parity and mAP checks
on the stage-3 test split), records the model size and mAP cost, and times `detect()` of
web/js/detector.js in headless Debian Chromium on every TF.js backend that starts there (wasm, webgl,
cpu): p50/p95 per canvas over `--runs` calls on one canvas, after a warm-up, post-processing included
(it is in the graph). The same graph in Python TF (the SavedModel /api/detect serves, batch 1) is timed
beside it. Results: benchmarks/results/browser.json.

The harness serves the real Flask app (services.app) on a free loopback port, so the browser fetches
detector.js, the vendored tfjs bundles and the model files from the same URLs as the deployed page,
under the same Content-Security-Policy.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "browser.json"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
BACKENDS = ("wasm", "webgl", "cpu")
MAX_WASM_THREADS = 8  # tfjs-backend-wasm pre-creates 8 workers: its thread pool never grows past them
QUANTIZATIONS = ("none", "float16", "uint8")
WARMUP = 10

# Runs in the page: import the page's own modules, load one version on one backend.
LOAD_JS = """async ({url, backend, threads}) => {
  const {loadDetector} = await import('/js/detector.js');
  window.preprocess = await import('/js/preprocess.js');
  window.detector = await loadDetector(url, {backend, threads});
  const d = window.detector;
  return {backend: d.backend, version: d.manifest.version, threads: d.threads};
}"""
# Runs in the page: uint8 canvases (base64) -> every kept detection of detector.run() (with `shown`).
RUN_JS = """async ({images, count, scoreThreshold}) => {
  const bytes = Uint8Array.from(atob(images), (c) => c.charCodeAt(0));
  const size = bytes.length / count;
  const detections = [];
  for (let i = 0; i < count; i++) {
    const pixels = window.preprocess.toModelInput(bytes.subarray(i * size, (i + 1) * size));
    detections.push(await window.detector.run(pixels, scoreThreshold == null ? {} : {scoreThreshold}));
  }
  return detections;
}"""
# Runs in the page: detect() latency in ms over `runs` calls on one canvas, after a warm-up.
TIME_JS = """async ({image, runs, warmup}) => {
  const pixels = window.preprocess.toModelInput(Uint8Array.from(atob(image), (c) => c.charCodeAt(0)));
  for (let i = 0; i < warmup; i++) await window.detector.detect(pixels);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await window.detector.detect(pixels);
    times.push(performance.now() - start);
  }
  return times;
}"""


# ---------------------------------------------------------------- harness
@contextlib.contextmanager
def serve_models(models_dir: Path) -> Iterator[str]:
    """Serve the Flask app with `models_dir` as its model folder on a free loopback port; yields its URL."""
    from werkzeug.serving import make_server

    from services.app import create_app

    app = create_app(
        {
            "TESTING": True,
            "MODELS_DIR": str(models_dir),
            "WEB_DIR": ROOT / "web",
            "NODE_MODULES": ROOT / "node_modules",
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="parity-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium_page(base_url: str) -> Iterator[Any]:
    """A headless Debian Chromium page on the app's origin (playwright; no downloaded browsers)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"chromium: {CHROMIUM} not found; `apt-get install -y chromium`")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base_url}/healthz")  # any same-origin document; 503 before a champion is fine
            page.errors = errors
            yield page
        finally:
            browser.close()


def press_and_wait_for_listing(page: Any, selector: str, timeout_s: float = 30.0) -> None:
    """Click `selector` on the drawing page, then wait until a detection scheduled after the click has
    finished and the page lists boxes. Polled from Python: the page's CSP forbids the eval behind
    Playwright's in-page polling."""
    since = page.evaluate("() => multidigit.state.requested")
    page.click(selector)
    state = "multidigit.state"
    finished = f"{state}.requested > {since} && {state}.done === {state}.requested"
    listed = f"() => {finished} && {state}.detections.length > 0"
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(listed):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page listed nothing within {timeout_s:.0f} s of clicking {selector}")
        page.wait_for_timeout(25)


def wasm_threads(logical_cores: int) -> int:
    """The threads tfjs's wasm backend runs on in a cross-origin isolated page: one per two logical cores
    (it assumes two hardware threads a core), at least 1, at most MAX_WASM_THREADS; a larger
    `setThreadsCount` is capped to this too."""
    return min(max(logical_cores // 2, 1), MAX_WASM_THREADS)


def load_in_page(page: Any, version: str, backend: str | None, threads: int | None = None) -> dict[str, Any]:
    """Load models/<version> with detector.js on `backend` (wasm: on `threads`, default `wasm_threads`);
    returns {"backend", "version", "threads"} as used (threads None off wasm)."""
    return page.evaluate(LOAD_JS, {"url": f"/models/{version}/", "backend": backend, "threads": threads})


def run_in_page(
    page: Any, images: np.ndarray, score_threshold: float | None = None
) -> list[dict[str, np.ndarray]]:
    """Run detector.js `run()` on uint8 (B, 100, 100) canvases in the page.

    Returns:
        One Detections dict per canvas: boxes (M, 4), scores, labels, shown (every kept box, best first).
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    out = page.evaluate(
        RUN_JS,
        {
            "images": base64.b64encode(images.tobytes()).decode(),
            "count": len(images),
            "scoreThreshold": score_threshold,
        },
    )
    return [
        {
            "boxes": np.array([[d["x"], d["y"], d["w"], d["h"]] for d in dets], np.float32).reshape(-1, 4),
            "scores": np.array([d["score"] for d in dets], np.float32),
            "labels": np.array([d["label"] for d in dets], np.int32),
            "shown": np.array([d["shown"] for d in dets], bool),
        }
        for dets in out
    ]


def time_in_page(page: Any, image: np.ndarray, runs: int) -> list[float]:
    """detect() latencies in ms for one uint8 (100, 100) canvas."""
    image = base64.b64encode(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).decode()
    return page.evaluate(TIME_JS, {"image": image, "runs": runs, "warmup": WARMUP})


# ---------------------------------------------------------------- benchmark
def percentiles(times_ms: list[float]) -> dict[str, float]:
    """p50 / p95 / mean of a list of milliseconds, rounded to 0.01 ms."""
    q = np.percentile(np.asarray(times_ms), [50, 95])
    return {
        "p50_ms": round(float(q[0]), 2),
        "p95_ms": round(float(q[1]), 2),
        "mean_ms": round(statistics.fmean(times_ms), 2),
    }


def python_latency(fn: Any, image: np.ndarray, runs: int, threshold: float) -> dict[str, float]:
    """The artifact's `detect` at batch 1 (what /api/detect runs), post-processing included, in ms."""
    from multidigit.artifact import detect_canvases

    for _ in range(WARMUP):
        detect_canvases(fn, image[None], threshold)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        detect_canvases(fn, image[None], threshold)
        times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)


def benchmark_version(models_dir: Path, version: str, image: np.ndarray, runs: int) -> dict[str, Any]:
    """Latency of one version per backend in Chromium; a backend that cannot start is recorded as such.
    wasm runs twice: as the page runs it (`wasm_threads`) and on one thread (`wasm_1_thread`)."""
    out: dict[str, Any] = {}
    with serve_models(models_dir) as url:
        for name, backend, threads in (*((b, b, None) for b in BACKENDS), ("wasm_1_thread", "wasm", 1)):
            with chromium_page(url) as page:
                try:
                    used = load_in_page(page, version, backend, threads)
                except Exception as exc:  # the page reports a backend that cannot start here
                    out[name] = {"error": str(exc).splitlines()[0][:200]}
                    continue
                times = time_in_page(page, image, runs)
                # The CPUs are shared: the 1-minute load average says how busy they were meanwhile.
                out[name] = {
                    "backend": used["backend"],
                    **({"threads": used["threads"]} if used["threads"] else {}),
                    **percentiles(times),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default=str(ROOT / "models" / "stage3" / "detector.keras"))
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--canvases", default=str(ROOT / "data" / "canvases"), help="folder of stage3/test")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--quantizations", nargs="+", default=list(QUANTIZATIONS), choices=QUANTIZATIONS)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    from multidigit import artifact, export
    from multidigit.atomic import save_json
    from multidigit.canvas import read_canvases
    from multidigit.manifest import file_sha256
    from multidigit.params import load_params

    cfg = load_params(args.params)
    test = read_canvases("stage3", "test", root=args.canvases)
    detector = export.load_detector(Path(args.detector))
    image = test.images[0]
    results: dict[str, Any] = {
        "detector": os.path.relpath(args.detector, ROOT),
        "detector_sha256": file_sha256(Path(args.detector)),
        "test_canvases": len(test),
        "runs": args.runs,
        "postprocess": export.operating_thresholds({}, cfg.nms),
        "quantizations": {},
    }
    with tempfile.TemporaryDirectory(prefix="tfjs-bench-") as tmp:
        for quant in args.quantizations:
            try:
                folder = export.export_artifact(
                    detector, Path(tmp) / f"bench-{quant}", cfg.nms, quant, version=f"bench-{quant}",
                    cfg=cfg.export, images=test.images, gt=(test.boxes, test.labels),
                    source={"benchmark": True},
                )  # fmt: skip
            except ValueError as exc:  # export refused it (parity): recorded, and the others still run
                results["quantizations"][quant] = {"error": str(exc)}
                print(f"{quant}: {exc}")
                continue
            check = json.loads((folder / "manifest.json").read_text())["quantization"]
            if "python_tf_batch1" not in results:  # the SavedModel is float32 whatever the TF.js weights
                results["python_tf_batch1"] = {
                    **python_latency(
                        artifact.load_artifact(folder), image, args.runs, cfg.nms.score_threshold
                    ),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
                results["map50_95_keras"] = check["map50_95_keras"]
            results["quantizations"][quant] = {
                "size_bytes": sum(
                    p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix == ".bin"
                ),
                "map50_95": check["map50_95_tfjs"],
                "map50_95_cost": check["map50_95_cost"],
                "parity": check["parity"],
                "browser": benchmark_version(Path(tmp), folder.name, image, args.runs),
            }
            print(json.dumps({quant: results["quantizations"][quant]}, indent=1))
    save_json(args.out, results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
