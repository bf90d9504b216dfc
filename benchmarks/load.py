"""Load test: 10,000 requests for the page and the champion's model files on loopback; or, with --detect,
POST /api/detect of real test canvases (PNG drawings) from the moment the server answers, no warm-up.

Starts `gunicorn 'services.app:create_app()'` on a free 127.0.0.1 port (or uses --url), then
--concurrency threads, each with its own keep-alive connection, fetch what a browser fetches when it
opens the page (HTML, CSS, JS modules, tfjs bundles, /api/model, model.json, weight shards), round
robin, with `Accept-Encoding: gzip`. A request counts as an error unless it is a 200 with the whole
body. Prints p50/p99 latency and writes benchmarks/results/load.json.

    python -m benchmarks.load [--requests 10000] [--concurrency 16] [--models-dir models/tfjs]
    python -m benchmarks.load --detect [--requests 2000] [--canvases data/canvases]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from multidigit.atomic import save_json
from services.liveserver import ROOT, live_server

OUT = ROOT / "benchmarks" / "results" / "load.json"
DETECT_OUT = ROOT / "benchmarks" / "results" / "load_detect.json"
DETECT_CANVASES = 64  # distinct test canvases the POSTs cycle through
PAGE_PATHS = [
    "/",
    "/css/style.css",
    "/js/app.js",
    "/js/drawing.js",
    "/js/preprocess.js",
    "/js/detector.js",
    "/favicon.svg",
    "/vendor/tfjs/tf.es2017.min.js",
    "/vendor/tfjs-backend-wasm/tf-backend-wasm.es2017.min.js",
    "/vendor/tfjs-backend-wasm/tfjs-backend-wasm-simd.wasm",
    "/api/model",
]


def model_paths(models_dir: Path) -> list[str]:
    """URLs of every file of the champion version (model.json, shards, manifest)."""
    champion = models_dir / "champion.json"
    if not champion.is_file():
        raise FileNotFoundError(f"no champion at {champion}; run the export stage or pass --models-dir")
    version = json.loads(champion.read_text())["version"]
    return [f"/models/{version}/{p.name}" for p in sorted((models_dir / version).iterdir()) if p.is_file()]


class Worker(threading.Thread):
    """One client thread: its own keep-alive connection, its share of the request list."""

    def __init__(self, base: str, paths: list[str]):
        super().__init__(daemon=True)
        self.host, self.port = urlparse(base).hostname, urlparse(base).port
        self.paths = paths
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self.bytes = 0

    def _fetch(self, conn: http.client.HTTPConnection, path: str | tuple[str, bytes]) -> None:
        if isinstance(path, tuple):  # (path, PNG body): a POST /api/detect
            path, body = path
            conn.request("POST", path, body=body, headers={"Content-Type": "image/png"})
        else:
            conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        body = response.read()
        length = response.getheader("Content-Length")
        if response.status != 200 or (length is not None and int(length) != len(body)):
            self.errors.append(f"{path}: HTTP {response.status}, {len(body)} bytes")
        self.bytes += len(body)

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        for path in self.paths:
            start = time.perf_counter()
            try:
                self._fetch(conn, path)
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{path}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.latencies_ms.append((time.perf_counter() - start) * 1000)
        conn.close()


def detect_requests(canvas_dir: Path) -> list[tuple[str, bytes]]:
    """(path, PNG body) POSTs of stage-3 test canvases drawn at the page's 400 px (each pixel 4 x 4)."""
    import io

    from PIL import Image

    from multidigit.canvas import read_canvases

    images = read_canvases("stage3", "test", root=canvas_dir).images[:DETECT_CANVASES]
    out = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(np.kron(image, np.ones((4, 4), np.uint8))).save(buf, format="PNG")
        out.append(("/api/detect", buf.getvalue()))
    return out


def run_load(base: str, paths: list, total: int, concurrency: int) -> dict[str, Any]:
    """Send `total` requests round robin over `paths` from `concurrency` threads; latency percentiles.

    Args:
        base: server URL, e.g. "http://127.0.0.1:8000".
        paths: URL paths to cycle through.
        total: requests in all.
        concurrency: client threads.
    Returns:
        Flat dict of figures: requests, errors, seconds, requests_per_s, p50_ms, p90_ms, p99_ms, max_ms, ...
    """
    plan = [paths[i % len(paths)] for i in range(total)]
    workers = [Worker(base, plan[i::concurrency]) for i in range(concurrency)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - start
    latencies = np.array([ms for w in workers for ms in w.latencies_ms])
    errors = [e for w in workers for e in w.errors]
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return {
        "requests": int(latencies.size),
        "errors": len(errors),
        "first_errors": errors[:5],
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "requests_per_s": round(latencies.size / seconds, 1),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "p50_ms": round(float(p50), 2),
        "p90_ms": round(float(p90), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(latencies.max()), 2),
        "megabytes": round(sum(w.bytes for w in workers) / 1e6, 1),
        "paths": sorted({p if isinstance(p, str) else f"POST {p[0]}" for p in paths}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models" / "tfjs")
    parser.add_argument("--url", help="use a running server instead of starting gunicorn")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers when starting one")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--detect", action="store_true", help="POST /api/detect instead of the page's GETs")
    parser.add_argument("--canvases", type=Path, default=ROOT / "data" / "canvases", help="with --detect")
    args = parser.parse_args(argv)
    try:
        paths = detect_requests(args.canvases) if args.detect else PAGE_PATHS + model_paths(args.models_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        base = args.url or stack.enter_context(
            live_server(
                ROOT / "test-artifacts" / "load-logs",
                workers=args.workers,
                threads=args.threads,
                MODELS_DIR=args.models_dir.resolve(),
            )
        )
        if not args.detect:  # the detect run is measured from start: workers load the model before serving
            run_load(base, paths, min(200, args.requests), args.concurrency)  # warm-up: caches, gzip
        result = run_load(base, paths, args.requests, args.concurrency)
    result["server"] = args.url or f"gunicorn gthread, {args.workers} workers x {args.threads} threads"
    out = DETECT_OUT if args.detect and args.out == OUT else args.out
    save_json(out, result)
    print(
        f"{result['requests']} requests, {result['errors']} errors, {result['requests_per_s']} req/s, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms -> {out}"
    )
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
