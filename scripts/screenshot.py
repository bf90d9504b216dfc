"""Regenerate docs/page.png: the drawing page reading one stage-3 test canvas with the exported champion.

    python scripts/screenshot.py [--models models/tfjs] [--out docs/page.png]

Serves the real Flask app on loopback, opens the page in headless Debian Chromium, presses "Example"
(a test canvas from /api/examples) and waits for the page's own detection to finish before the shot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, press_and_wait_for_listing, serve_models
from multidigit.atomic import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(ROOT / "models" / "tfjs"), help="exported versions folder")
    parser.add_argument("--out", default=str(ROOT / "docs" / "page.png"))
    args = parser.parse_args()
    if not (Path(args.models) / "champion.json").is_file():
        print(f"screenshot: no champion in {args.models}; run `dvc repro export` first", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    with serve_models(Path(args.models)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)
        press_and_wait_for_listing(page, "#example")
        with atomic_path(Path(args.out)) as tmp:
            tmp.write_bytes(page.screenshot(full_page=True))
        browser.close()
    print(f"screenshot: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
