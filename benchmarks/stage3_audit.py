"""Whose are stage-3 test's misreads: the detector's, or the generator's? A reader the generator did not
shape decides, as `drawn_audit.py` does for the drawn split.

    python benchmarks/stage3_audit.py [--models models] [--epochs 3]

The test shards are made again, shard by shard, with the generate flow's own code (`canvas.make_shard`,
the same seeds), keeping each digit's own crop as it was composed: its scale, Keras transform, and brush
where it was re-stroked, before any other digit covered it. The rebuilt canvases must equal the stored
shards byte for byte, or the audit stops.

The reader is `restroke_fidelity.py`'s MNIST classifier, fitted to the original MNIST train split only. It
reads each test digit twice:
- its MNIST original, as it is;
- its crop as composed, boxed to 20 px and centred by mass in 28 px (MNIST's own normalisation), read as
  it is and once more redrawn from its strokes at the page's read brush: a tall digit re-stroked with a thin
  brush, or a small one with a thick brush, is read at MNIST's stroke width. Either reading right counts.

A digit both readings get right is legible as its label to a reader with no stake in our generator. The
detector's outcome per digit is the drawn audit's (the shown box of best IoU, at IoU >= 0.5: right,
misread, else missed), from the champion's exported artifact at its threshold, as the page runs it.
`ceiling_recall` is the recall of a detector right on every legible digit and as now on the rest: how far
this test set's own rendering lets recall, and with it mAP@0.5, go for this detector. The report also
splits the outcomes by the digit's height on the canvas. Writes benchmarks/results/stage3_audit.json and a
gallery of the legible digits the detector misreads or misses (each on its canvas, boxed, beside its own
crop as the reader saw it): benchmarks/results/stage3_audit_legible_errors.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import drawn_audit  # noqa: E402
import drawn_page  # noqa: E402
import independent  # noqa: E402
import restroke_fidelity  # noqa: E402

from multidigit import canvas  # noqa: E402
from multidigit.atomic import save_json  # noqa: E402
from multidigit.mnist import read_split  # noqa: E402
from multidigit.params import load_params  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "stage3_audit.json"
GALLERY = ROOT / "benchmarks" / "results" / "stage3_audit_legible_errors.png"
GALLERY_SIZE = 48
STAGE, SPLIT = "stage3", "test"
HEIGHTS = (("<24 px", 0, 24), ("24-40 px", 24, 40), (">=40 px", 40, 1e9))


@contextmanager
def recording():
    """Record what `make_shard` draws and which canvases fit, round by round, without changing either."""
    rounds: list[dict] = []
    draw_canvases, place_boxes = canvas._draw_canvases, canvas.place_boxes

    def draw(*args, **kwargs):
        rounds.append({"draw": draw_canvases(*args, **kwargs)})
        return rounds[-1]["draw"]

    def place(*args, **kwargs):
        corners, fits = place_boxes(*args, **kwargs)
        rounds[-1]["fits"] = fits
        return corners, fits

    with mock.patch.object(canvas, "_draw_canvases", draw), mock.patch.object(canvas, "place_boxes", place):
        yield rounds


def crops_by_slot(rounds: list[dict], n: int) -> dict[tuple[int, int], tuple[np.ndarray, int]]:
    """(canvas, place) -> (the digit's crop as composed, its row of the MNIST split), as `make_shard`
    assigns them: each round's fitting canvases take the slots still to do, in order."""
    out, todo = {}, np.arange(n)
    for r in rounds:
        draw, fits = r["draw"], r["fits"]
        starts = np.concatenate([[0], np.cumsum(draw.counts)])
        for i in np.flatnonzero(fits):
            for place, j in enumerate(range(starts[i], starts[i + 1])):
                w, h = (int(v) for v in draw.crops.sizes[j])
                at = int(draw.crops.at[j])
                crop = draw.crops.flat[at : at + w * h].reshape(h, w)
                out[(int(todo[i]), place)] = (crop, int(draw.digit_ids[j]))
        todo = todo[~fits]
    return out


def rebuild_test(
    cfg, digits: np.ndarray, labels: np.ndarray
) -> tuple[canvas.Canvases, list[tuple[np.ndarray, int]]]:
    """The stage-3 test canvases rebuilt from the MNIST test `digits` and `labels`, and each digit's (crop,
    MNIST test row) in canvas then box order. Raises if a rebuilt shard differs from the stored one."""
    stored = canvas.read_canvases(STAGE, SPLIT)
    specs = sorted(
        (s for s in canvas.plan_shards(cfg.generate, STAGE) if s.split == SPLIT), key=lambda s: s.index
    )
    crops, offset = [], 0
    for spec in specs:
        seed = canvas.shard_seed(cfg.seed, STAGE, SPLIT, spec.index)
        with recording() as rounds:
            shard = canvas.make_shard(
                digits, labels, spec.canvases, cfg.generate, cfg.generate.stages[STAGE], seed
            )
        part = slice(offset, offset + spec.canvases)
        if not np.array_equal(shard.images, stored.images[part]) or not np.array_equal(
            shard.labels, stored.labels[part]
        ):
            raise RuntimeError(
                f"{STAGE}/{SPLIT} shard {spec.index}: rebuilt canvases differ from the stored ones"
            )
        slots = crops_by_slot(rounds, spec.canvases)
        for i in range(spec.canvases):
            crops += [slots[(i, place)] for place in range(int((shard.labels[i] >= 0).sum()))]
        offset += spec.canvases
    return stored, crops


def mnist_normalised(crop: np.ndarray) -> np.ndarray:
    """A digit crop as MNIST holds digits: ink boxed to 20 px on its longer side, centred by mass in 28."""
    ink = independent.ink_crop(crop) if crop.any() else np.zeros((1, 1), np.uint8)
    scale = 20 / max(ink.shape)
    height, width = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    from PIL import Image

    small = np.asarray(Image.fromarray(ink).resize((width, height), Image.Resampling.BILINEAR), np.float32)
    mass = small.sum() or 1.0
    cy, cx = (np.indices(small.shape) * small).reshape(2, -1).sum(1) / mass
    top, left = (int(np.clip(round(14 - c), 0, 28 - s)) for c, s in ((cy, height), (cx, width)))
    out = np.zeros((28, 28), np.float32)
    out[top : top + height, left : left + width] = small
    return out.astype(np.uint8)


def reader_verdicts(
    reader, crops: list[tuple[np.ndarray, int]], digits: np.ndarray, labels: np.ndarray, read_brush: float
) -> tuple[dict, np.ndarray]:
    """Per test digit: the reader right on its MNIST original, and on its crop as composed (as it is, or
    redrawn from its strokes at the read brush); and the normalised crops."""
    from multidigit.strokes import digit_strokes

    rows = [row for _, row in crops]
    truth = labels[rows]
    normalised = np.stack([mnist_normalised(crop) for crop, _ in crops])
    redrawn = np.stack([restroke_fidelity.redraw(digit_strokes(d), read_brush) for d in normalised])

    def right(images: np.ndarray) -> np.ndarray:
        return reader.predict(images[..., None] / 255.0, batch_size=512, verbose=0).argmax(1) == truth

    original = right(digits[rows])
    composed, restroked = right(normalised), right(redrawn)
    verdicts = {
        "original": original,
        "composed": composed | restroked,
        "as_is": composed,
        "redrawn": restroked,
    }
    return verdicts, normalised


def outcome_rows(stored: canvas.Canvases, shown: list, verdicts: dict) -> list[tuple]:
    """(reader verdict, detector outcome, true label, label read or -1, height px, canvas, box) per digit."""
    rows, k = [], 0
    for i, (boxes, labels, found) in enumerate(zip(stored.boxes, stored.labels, shown, strict=True)):
        real = labels >= 0
        for box, label, (outcome, got) in zip(
            boxes[real], labels[real], drawn_audit.outcomes(boxes[real], labels[real], found), strict=True
        ):
            key = (bool(verdicts["original"][k]), bool(verdicts["composed"][k]))
            rows.append((drawn_audit.VERDICTS[key], outcome, int(label), got, float(box[3]), i, box))
            k += 1
    return rows


def save_gallery(rows: list[tuple], images: np.ndarray, normalised: np.ndarray, path: Path) -> None:
    """The first GALLERY_SIZE legible digits the detector gets wrong: each on its canvas with its true box,
    and its own crop as the reader read it, titled "true -> read" ("-" for missed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from multidigit.atomic import atomic_path

    wrong = [k for k, r in enumerate(rows) if r[0] == "legible" and r[1] != "right"][:GALLERY_SIZE]
    cols, lines = 8, max(1, -(-len(wrong) // 8))
    fig, axes = plt.subplots(2 * lines, cols, figsize=(cols * 1.3, 2.6 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, k in enumerate(wrong):
        _, outcome, truth, got, _, i, (x, y, w, h) = rows[k]
        top, bottom = axes[2 * (n // cols), n % cols], axes[2 * (n // cols) + 1, n % cols]
        top.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        top.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="lime", linewidth=0.8))
        top.set_title(f"{truth} -> {got if outcome == 'misread' else '-'}", fontsize=8)
        bottom.imshow(normalised[k], cmap="gray", vmin=0, vmax=255)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def by_height(rows: list[tuple]) -> dict:
    """Digits, the detector's recall, and the share legible, per height bucket."""
    out = {}
    for name, lo, hi in HEIGHTS:
        part = [r for r in rows if lo <= r[4] < hi]
        n = max(len(part), 1)
        out[name] = {
            "digits": len(part),
            "recall": round(sum(r[1] == "right" for r in part) / n, 4),
            "legible": round(sum(r[0] == "legible" for r in part) / n, 4),
            "misread": sum(r[1] == "misread" for r in part),
        }
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "models", help="folder holding tfjs/ and stage3/")
    p.add_argument(
        "--params", type=Path, default=ROOT / "params.yaml", help="the params the shards were made with"
    )
    p.add_argument("--mnist", type=Path, default=ROOT / "data" / "mnist", help="MNIST npz splits")
    drawn_audit.add_reader_args(p, RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    digits, labels = read_split(SPLIT, args.mnist)
    stored, crops = rebuild_test(load_params(args.params), digits, labels)
    source = independent.resolve_model(args.models, None, None, None)
    _, shown, path = independent.detections_of(source, stored.images)
    reader = restroke_fidelity.train_reader(args.epochs, args.seed, args.mnist)
    read_brush = drawn_page.read_input(source)["read_brush"] or drawn_audit.SLIDER_DEFAULT
    verdicts, normalised = reader_verdicts(reader, crops, digits, labels, read_brush)
    rows = outcome_rows(stored, shown, verdicts)
    save_gallery(
        rows, stored.images, normalised, GALLERY if args.out == RESULTS else args.out.with_suffix(".png")
    )
    result = {
        "canvases": len(stored),
        "model": independent.model_record(source),
        "path": path,
        "read_brush": read_brush,
        "reader": {name: round(float(v.mean()), 4) for name, v in verdicts.items()},
        **drawn_audit.tabulate([r[:4] for r in rows]),
        "by_height": by_height(rows),
        "seconds": round(time.perf_counter() - start, 1),
    }
    save_json(args.out, result)
    print(f"{result['digits']} stage-3 test digits of {result['canvases']} canvases, as the page shows them")
    print(f"reader (MNIST originals only), share right: {result['reader']}")
    for verdict, row in result["by_reader_verdict"].items():
        print(f"  {verdict:>26}: {row}")
    print(f"recall {result['recall']}; right on every legible digit: {result['ceiling_recall']}")
    print(f"by height: {result['by_height']}")
    print(f"-> {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return result


if __name__ == "__main__":
    main()
