"""The shard codec, chosen by measurement: deflate time, inflate time and size of real shards' images.

    uv run --no-sync --with isal --with deflate python benchmarks/shard_codec.py [--shards 4]

Every codec writes plain deflate (a zip entry's data, `multidigit/npz.py`), so np.load reads the result
with the standard zlib, which is also what inflates it here. The codecs this project does not install
(ISA-L through the `isal` package, libdeflate through `deflate`) are measured where `uv run --with` adds
them and skipped, by name in the output, where it does not. One process, `--shards` train shards per
stage from data/canvases (run the generate stages first), best of `--repeats`, the codecs interleaved
inside each repeat so a shared machine's load falls on all alike. Writes benchmarks/results/shard_codec.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import zlib
from importlib.util import find_spec
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidigit import npz  # noqa: E402
from multidigit.constants import CANVAS_OUT, CANVAS_SIZE, STAGES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "shard_codec.json"
RAW = -zlib.MAX_WBITS  # raw deflate, as a zip entry holds it


def _zlib(level: int, strategy: int):
    def pack(data) -> bytes:
        packer = zlib.compressobj(level, zlib.DEFLATED, RAW, 8, strategy)
        return packer.compress(data) + packer.flush()

    return pack


def _libdeflate(level: int):
    def pack(data) -> bytes:
        import deflate

        return deflate.deflate_compress(bytes(data), level)

    return pack


def _igzip(level: int):
    def pack(data) -> bytes:
        from isal import isal_zlib

        packer = isal_zlib.compressobj(level, isal_zlib.DEFLATED, RAW, 8)  # mem level 8: zlib's default
        return packer.compress(data) + packer.flush()

    return pack


# name -> (module it needs, deflate of one buffer); the project's own (`npz.deflate`) is the last
CODECS = {
    "zlib level 1": (None, _zlib(1, zlib.Z_DEFAULT_STRATEGY)),
    "zlib level 1, Z_RLE": (None, _zlib(1, zlib.Z_RLE)),
    "libdeflate level 1": ("deflate", _libdeflate(1)),
    "ISA-L igzip level 0": ("isal", _igzip(0)),
    "ISA-L igzip level 1": ("isal", _igzip(1)),
    "ISA-L igzip level 2": ("isal", _igzip(2)),
    "ISA-L igzip level 3": ("isal", _igzip(3)),
    "npz.deflate (the project's: zlib-ng level 1, Z_RLE)": (None, npz.deflate),
}


def shard_images(stage: str, count: int) -> list[np.ndarray]:
    """The images of the first `count` train shards of a stage, as flat uint8."""
    files = sorted((ROOT / CANVAS_OUT / stage / "train").glob("shard-*.npz"))[:count]
    if not files:
        raise SystemExit(f"no shards under {CANVAS_OUT}/{stage}/train: run `dvc repro generate@{stage}`")
    images = []
    for path in files:
        with np.load(path) as shard:
            images.append(np.ascontiguousarray(shard["images"]).reshape(-1).view(np.uint8))
    return images


def measure(stage: str, images: list[np.ndarray], codecs: dict, repeats: int) -> dict:
    """Per codec: deflate and inflate µs a canvas (best of `repeats`), and the size as a share of raw."""
    canvases = sum(len(img) for img in images) // CANVAS_SIZE**2
    best = {name: [float("inf"), float("inf")] for name in codecs}
    sizes = {}
    for _ in range(repeats):
        for name, pack in codecs.items():
            start = time.perf_counter()
            packed = [pack(img) for img in images]
            middle = time.perf_counter()
            for data in packed:
                zlib.decompress(data, RAW)
            end = time.perf_counter()
            best[name] = [min(best[name][0], middle - start), min(best[name][1], end - middle)]
            sizes[name] = sum(map(len, packed))
            for data, img in zip(packed, images, strict=True):
                assert zlib.decompress(data, RAW) == img.tobytes(), f"{name} did not round-trip"
    raw = sum(img.nbytes for img in images)
    return {
        name: {
            "deflate_us_per_canvas": round(best[name][0] / canvases * 1e6, 2),
            "inflate_us_per_canvas": round(best[name][1] / canvases * 1e6, 2),
            "size_share_of_raw": round(sizes[name] / raw, 4),
        }
        for name in codecs
    } | {"canvases": canvases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=4, help="train shards per stage")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    installed = {name: pack for name, (module, pack) in CODECS.items() if not module or find_spec(module)}
    images = {stage: shard_images(stage, args.shards) for stage in STAGES}
    stages = {stage: measure(stage, images[stage], installed, args.repeats) for stage in STAGES}
    skipped = [name for name in CODECS if name not in installed]
    machine, date = platform.processor() or platform.machine(), time.strftime("%Y-%m-%d", time.gmtime())
    where = {"machine": machine, "date": date}
    text = json.dumps({"stages": stages, "skipped": skipped, **where}, indent=2)
    print(text)
    RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
