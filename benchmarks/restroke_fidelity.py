"""How much of a digit survives re-stroking, judged by a reader the generator did not shape.

    python benchmarks/restroke_fidelity.py [--digits 3000] [--brushes 6 10 16] [--epochs 3]

A plain MNIST classifier (two conv layers, trained here on the original MNIST train split only, never on
canvases or strokes) reads MNIST val digits as they are, and again redrawn from their pen strokes
(`strokes.digit_strokes`) with the page's round brush at widths of the slider, 4x up and reduced like the
page. The drop from the originals' accuracy is what the tracer loses: a loop filled in, an arm eroded.
The same digits are also traced the old way, at 28 px without upsampling, for comparison.
Writes benchmarks/results/restroke_fidelity.json and a gallery of the digits that only the redraw misreads.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidigit import strokes  # noqa: E402  (importing multidigit quiets TensorFlow's start-up)
from multidigit.atomic import save_json  # noqa: E402
from multidigit.constants import MNIST_OUT  # noqa: E402
from multidigit.mnist import read_split  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "restroke_fidelity.json"
GALLERY = ROOT / "benchmarks" / "results" / "restroke_fidelity.png"
FACTOR = 4  # buffer pixels per digit pixel, as on the page (400 -> 100)


def train_reader(epochs: int, seed: int, mnist: Path = ROOT / MNIST_OUT):
    """A small CNN fitted to the original MNIST train split in `mnist` (~99% on val)."""
    import keras

    keras.utils.set_random_seed(seed)
    images, labels = read_split("train", mnist)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    model.fit(images[..., None] / 255.0, labels, epochs=epochs, batch_size=128, verbose=2)
    return model


def strokes_at_28_px(digit: np.ndarray) -> list[np.ndarray]:
    """The tracer as it was before upsampling: the 28 px digit thinned directly."""
    skeleton = strokes.thin(digit > strokes.INK_LEVEL)
    codes = strokes.neighbour_codes(skeleton)
    points, offsets = strokes._skeleton_lines(skeleton, codes, strokes.SIMPLIFY_PX)
    return [points[a:b] for a, b in itertools.pairwise(offsets.tolist())]


def redraw(lines: list[np.ndarray], brush: float) -> np.ndarray:
    """Strokes in digit pixels drawn with the page's brush on a 4x buffer and reduced to 28 x 28."""
    buffer = strokes.render_strokes([line * FACTOR for line in lines], brush, side=28 * FACTOR)
    return strokes.reduce_blocks(buffer, FACTOR)


def save_gallery(originals: np.ndarray, redrawn: np.ndarray, picks: np.ndarray) -> None:
    from PIL import Image

    tiles = [np.pad(np.concatenate([originals[i], redrawn[i]], 1), 2, constant_values=80) for i in picks[:48]]
    if not tiles:
        return
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 8)
    rows = [np.concatenate(tiles[k : k + 8], 1) for k in range(0, len(tiles), 8)]
    image = np.concatenate(rows, 0)
    Image.fromarray(image).resize((image.shape[1] * 3, image.shape[0] * 3), Image.NEAREST).save(GALLERY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=3000, help="MNIST val digits read (default 3000)")
    parser.add_argument("--brushes", type=float, nargs="+", default=[6.0, 10.0, 16.0], help="buffer px")
    parser.add_argument("--epochs", type=int, default=3, help="reader training epochs (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    reader = train_reader(args.epochs, args.seed)
    digits, labels = read_split("val", ROOT / MNIST_OUT)
    digits, labels = digits[: args.digits], labels[: args.digits]

    def accuracy(images) -> tuple[float, np.ndarray]:
        guess = reader.predict(np.asarray(images)[..., None] / 255.0, batch_size=512, verbose=0).argmax(1)
        return round(float((guess == labels).mean()), 4), guess

    original, original_guess = accuracy(digits)
    tracers = {
        "4x": [strokes.digit_strokes(d) for d in digits],
        "28px": [strokes_at_28_px(d) for d in digits],
    }
    rows = {}
    for name, lines in tracers.items():
        for brush in args.brushes:
            redrawn = np.stack([redraw(one, brush) for one in lines])
            rows[f"{name}, brush {brush:g}"], guess = accuracy(redrawn)
            if name == "4x" and brush == args.brushes[len(args.brushes) // 2]:
                save_gallery(digits, redrawn, np.flatnonzero((guess != labels) & (original_guess == labels)))
    result = {
        "digits": len(digits),
        "originals": original,
        "redrawn": rows,
        "seconds": round(time.time() - started),
    }
    save_json(RESULTS, result)
    print(f"reader on {len(digits)} MNIST val digits: originals {original}")
    for key, value in rows.items():
        print(f"  redrawn, traced {key}: {value}")
    print(f"wrote {RESULTS.relative_to(ROOT)} and {GALLERY.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
