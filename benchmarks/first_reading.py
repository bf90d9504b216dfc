"""What the page shows for its first readings, with and without its warm-up on load.

    python benchmarks/first_reading.py [--pages 6] [--presses 5]

Serves the champion (models/tfjs) with the real Flask app on loopback and opens fresh pages in headless
Debian Chromium, each in its own browser context (no shared cache), alternating the default page and
`/?warmup=0`. On each page: seconds from navigation to `data-ready`, then `--presses` presses of "Example"
(test canvases from /api/examples), each read back as the page's own "Inference" figure (ms, what a person
sees). Results: benchmarks/results/first_reading.json with the median first and later readings per arm.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, press_and_wait_for_listing, serve_models  # noqa: E402
from multidigit.atomic import save_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "first_reading.json"
ARMS = {"warm-up (default)": "/", "no warm-up": "/?warmup=0"}


def one_page(browser, url: str, presses: int) -> dict:
    """Ready seconds, warm-up ms and the 'Inference' figure of each Example press on a fresh page."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    page = context.new_page()
    start = time.monotonic()
    page.goto(url)
    page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)
    ready_s = time.monotonic() - start
    readings = []
    for _ in range(presses):
        press_and_wait_for_listing(page, "#example")
        readings.append(float(page.inner_text("#timing").split()[0]))
    warmup_ms = page.evaluate("() => multidigit.state.warmupMs")
    context.close()
    return {"ready_s": round(ready_s, 3), "warmup_ms": round(warmup_ms, 1), "readings_ms": readings}


def summarise(pages: list[dict]) -> dict:
    firsts = [p["readings_ms"][0] for p in pages]
    later = [r for p in pages for r in p["readings_ms"][1:]]
    return {
        "pages": len(pages),
        "ready_s_median": round(statistics.median(p["ready_s"] for p in pages), 3),
        "first_reading_ms_median": round(statistics.median(firsts), 1),
        "first_reading_ms_range": [min(firsts), max(firsts)],
        "later_readings_ms_median": round(statistics.median(later), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=6, help="fresh pages per arm")
    parser.add_argument("--presses", type=int, default=5, help="Example presses per page")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    models = ROOT / "models" / "tfjs"
    if not (models / "champion.json").is_file():
        print(f"first_reading: no champion in {models}; run `dvc repro export` first", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with serve_models(models) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for i in range(args.pages):  # alternate the arms so the machine's drift hits both alike
            for arm, path in ARMS.items():
                runs[arm].append(one_page(browser, base + path, args.presses))
                print(f"page {i + 1}/{args.pages} {arm}: {runs[arm][-1]}", flush=True)
        browser.close()
    result = {arm: {**summarise(pages), "runs": pages} for arm, pages in runs.items()}
    result |= {"backend": "wasm (the page's default)", "date": time.strftime("%Y-%m-%d")}
    save_json(Path(args.out), result)
    for arm in ARMS:
        print(f"{arm}: " + ", ".join(f"{k} {v}" for k, v in result[arm].items() if k != "runs"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
