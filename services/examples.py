"""Example canvases for the page's "example" button: real test canvases, or MNIST test digits.

Preferred source: the stage3 test canvases (`data/canvases/stage3/test`). Before the pipeline has
generated them: MNIST test digits pasted side by side, two or three per canvas, so the button
works on a fresh checkout that has only run the mnist stage.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from multidigit.constants import CANVAS_SIZE, DIGIT_SIZE

COUNT = 8  # canvases served


def _canvas_examples(canvas_dir: Path, count: int) -> list[dict[str, Any]]:
    from multidigit.canvas import read_canvases

    data = read_canvases("stage3", "test", root=canvas_dir)
    out = []
    for i in range(min(count, len(data))):
        keep = data.labels[i] >= 0
        out.append(_example(data.images[i], data.boxes[i][keep], data.labels[i][keep]))
    return out


def _tight_box(digit: np.ndarray, x: int, y: int) -> list[float]:
    ys, xs = np.nonzero(digit)
    return [float(x + xs.min()), float(y + ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]


def _mnist_examples(mnist_dir: Path, count: int) -> list[dict[str, Any]]:
    from multidigit.mnist import read_split

    images, labels = read_split("test", mnist_dir)
    out, cursor = [], 0
    for i in range(count):
        n = 2 + i % 2  # two or three digits, evenly spaced on the middle row
        canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.uint8)
        boxes, labs = [], []
        step = CANVAS_SIZE // n
        for j in range(n):
            digit, label = images[cursor], int(labels[cursor])
            cursor += 1
            x, y = j * step + (step - DIGIT_SIZE) // 2, (CANVAS_SIZE - DIGIT_SIZE) // 2
            canvas[y : y + DIGIT_SIZE, x : x + DIGIT_SIZE] = digit
            boxes.append(_tight_box(digit, x, y))
            labs.append(label)
        out.append(_example(canvas, np.array(boxes), np.array(labs)))
    return out


def _example(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    return {
        "pixels_b64": base64.b64encode(np.ascontiguousarray(image, np.uint8).tobytes()).decode(),
        "boxes": [[round(float(v), 2) for v in box] for box in boxes],
        "labels": [int(v) for v in labels],
    }


def load_examples(canvas_dir: Path, mnist_dir: Path, count: int = COUNT) -> dict[str, Any]:
    """Up to `count` example canvases and where they came from.

    Args:
        canvas_dir: root of the canvas shards (holds stage3/test/shard-*.npz when generated).
        mnist_dir: folder of the MNIST split npz files.
        count: canvases to return.
    Returns:
        {"source": "canvases/stage3/test" | "mnist/test" | None, "size": 100, "examples": [
         {"pixels_b64": base64 of uint8 (100, 100) row-major, "boxes": [[x, y, w, h]], "labels": [int]}]}
    """
    if any((canvas_dir / "stage3" / "test").glob("shard-*.npz")):
        return {
            "source": "canvases/stage3/test",
            "size": CANVAS_SIZE,
            "examples": _canvas_examples(canvas_dir, count),
        }
    if (mnist_dir / "test.npz").is_file():
        return {"source": "mnist/test", "size": CANVAS_SIZE, "examples": _mnist_examples(mnist_dir, count)}
    return {"source": None, "size": CANVAS_SIZE, "examples": []}
