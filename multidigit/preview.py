"""Previews of a stage's canvases for a person to look at: a 4 x 4 grid with boxes and labels (beside it
a second grid of the drawn split, with each canvas's brush width, when the stage has one), and the class
and digit-count histograms (CSV files DVC plots, plus a PNG).

Outputs: plots/canvases/<stage>/{preview.png, histograms.png, classes.csv, digit_counts.csv}.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from multidigit.atomic import atomic_path
from multidigit.canvas import read_canvases, read_strokes
from multidigit.constants import CANVAS_OUT, CANVAS_SPLITS, DRAWN_SPLIT, MNIST_OUT, NUM_CLASSES, PLOTS_DIR
from multidigit.mnist import read_split

GRID = 4  # canvases per side of the preview grid
PREVIEW_SPLIT = "train"
LABEL_ROOM = 8  # pixels above a box needed to print its label there


def preview_dir(stage: str, plots_root: str | Path = PLOTS_DIR) -> Path:
    """Folder of one stage's preview files."""
    return Path(plots_root) / "canvases" / stage


def draw_grid(
    images: np.ndarray, boxes: np.ndarray, labels: np.ndarray, path: str | Path, extra: dict | None = None
) -> None:
    """Save up to 16 canvases in a 4 x 4 grid, each box outlined and labelled with its class.

    Args:
        images: (n, S, S) uint8; boxes: (n, K, 4) pixel xywh; labels: (n, K) int, -1 = padding.
        path: the PNG to write.
        extra: a second grid beside the first, {"title", "images", "boxes", "labels", "captions"}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        {
            "title": "train split" if extra else "",
            "images": images,
            "boxes": boxes,
            "labels": labels,
            "captions": None,
        }
    ]
    panels += [extra] if extra else []
    fig, axes = plt.subplots(GRID, GRID * len(panels), figsize=(10 * len(panels), 10), squeeze=False)
    for k, panel in enumerate(panels):
        _draw_panel(axes[:, k * GRID : (k + 1) * GRID], panel)
        fig.text(k / len(panels) + 0.01, 0.995, panel["title"], va="top", fontsize=12)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.97) if extra else None)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _draw_panel(axes, panel: dict) -> None:
    """One 4 x 4 grid of canvases with their boxes, labels and optional captions."""
    from matplotlib.patches import Rectangle

    captions = panel["captions"] or [None] * len(panel["images"])
    rows = zip(axes.flat, panel["images"], panel["boxes"], panel["labels"], captions, strict=False)
    for ax, image, canvas_boxes, canvas_labels, caption in rows:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for (x, y, w, h), label in zip(canvas_boxes, canvas_labels, strict=True):
            if label < 0:
                continue
            # pixel (x, y) spans [x - 0.5, x + 0.5] in imshow coordinates
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="lime", linewidth=1))
            # label above the box, or below it when the box touches the top edge
            above = y >= LABEL_ROOM
            ty, va = (y - 1.5, "bottom") if above else (y + h + 0.5, "top")
            ax.text(x - 0.5, ty, str(label), color="yellow", fontsize=8, va=va)
        if caption:
            ax.set_title(caption, fontsize=8)


def _csv(path: Path, header: str, rows: list[tuple]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def write_histograms(manifest: dict, mnist_dir: str | Path, out: Path) -> None:
    """CSV histograms (train split) for DVC plots and a PNG with every split against MNIST."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = manifest["splits"]
    train = splits[PREVIEW_SPLIT]
    _csv(out / "classes.csv", "class,count", list(enumerate(train["classes"])))
    _csv(out / "digit_counts.csv", "digits,count", list(enumerate(train["digit_counts"])))

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / (len(splits) + 1)
    for i, split in enumerate(s for s in CANVAS_SPLITS if s in splits):
        classes = np.asarray(splits[split]["classes"], float)
        left.bar(np.arange(NUM_CLASSES) + i * width, classes / classes.sum(), width, label=split)
        counts = np.asarray(splits[split]["digit_counts"], float)
        right.bar(np.arange(len(counts)) + i * width, counts / counts.sum(), width, label=split)
    mnist = np.bincount(read_split(PREVIEW_SPLIT, mnist_dir)[1], minlength=NUM_CLASSES)
    left.bar(np.arange(NUM_CLASSES) + len(splits) * width, mnist / mnist.sum(), width, label="MNIST train")
    left.set(title="class share", xlabel="class", xticks=range(NUM_CLASSES))
    right.set(title="canvas share", xlabel="digits per canvas")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out / "histograms.png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def write_previews(
    stage: str,
    canvas_root: str | Path = CANVAS_OUT,
    plots_root: str | Path = PLOTS_DIR,
    mnist_dir: str | Path = MNIST_OUT,
) -> Path:
    """Write a stage's preview grid and histograms.

    Returns:
        The folder written (plots/canvases/<stage>).
    """
    out = preview_dir(stage, plots_root)
    out.mkdir(parents=True, exist_ok=True)
    data = read_canvases(stage, PREVIEW_SPLIT, canvas_root)
    n = GRID * GRID
    manifest = json.loads((Path(canvas_root) / stage / "manifest.json").read_text())
    extra = None
    if DRAWN_SPLIT in manifest["splits"]:
        drawn = read_canvases(stage, DRAWN_SPLIT, canvas_root)
        brushes = [f"brush {w:g}" for w, _ in read_strokes(stage, DRAWN_SPLIT, canvas_root)[:n]]
        extra = {"title": "drawn split (MNIST test digits, re-stroked)", "captions": brushes}
        extra |= {"images": drawn.images[:n], "boxes": drawn.boxes[:n], "labels": drawn.labels[:n]}
    draw_grid(data.images[:n], data.boxes[:n], data.labels[:n], out / "preview.png", extra)
    write_histograms(manifest, mnist_dir, out)
    return out


def main(params: str | Path, stage: str) -> None:
    """`multidigit preview --stage S`: draw the grid and histograms of generated canvases."""
    from multidigit.params import load_params

    load_params(params)  # refuse a bad params file before drawing anything
    out = write_previews(stage)
    print(f"preview: wrote {out}")
