"""Canvases as standard detection datasets, and back: YOLO (PNG + `class xc yc w h` txt) or COCO JSON.

`multidigit export-dataset --stage S --format yolo|coco --split SPLIT --out DIR` writes
  yolo: DIR/images/<split>/canvas-NNNNNN.png, DIR/labels/<split>/canvas-NNNNNN.txt, DIR/data.yaml
  coco: DIR/images/<split>/canvas-NNNNNN.png, DIR/annotations/<split>.json
Each split's folders are replaced atomically, so several splits can share one DIR. `read_yolo` and
`read_coco` read them back into `Canvases` (the round-trip tests compare bytes and boxes exactly).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from tqdm import tqdm

from multidigit.atomic import atomic_path, save_json
from multidigit.canvas import Canvases, read_canvases
from multidigit.constants import CANVAS_OUT, CLASS_NAMES, SPLITS
from multidigit.evaluation.coco import coco_ground_truth

FORMATS = ("yolo", "coco")


def image_name(i: int) -> str:
    """File stem of canvas i of a split."""
    return f"canvas-{i:06d}"


def _write_pngs(images: np.ndarray, folder: Path) -> None:
    with atomic_path(folder, is_dir=True) as tmp:
        for i, image in enumerate(tqdm(images, desc=f"png {folder.name}", leave=False)):
            Image.fromarray(image, mode="L").save(tmp / f"{image_name(i)}.png")


def yolo_lines(boxes: np.ndarray, labels: np.ndarray, size: int) -> str:
    """One canvas's YOLO label text: `class xc yc w h` per digit, normalised by the canvas side."""
    rows = []
    for (x, y, w, h), label in zip(boxes, labels, strict=True):
        if label >= 0:
            xc, yc = (x + w / 2) / size, (y + h / 2) / size
            rows.append(f"{label} {xc:.6f} {yc:.6f} {w / size:.6f} {h / size:.6f}\n")
    return "".join(rows)


def write_yolo(data: Canvases, split: str, out: Path) -> None:
    """Write a split as YOLO PNGs and label files, and (re)write data.yaml listing every split present."""
    size = data.images.shape[1]
    _write_pngs(data.images, out / "images" / split)
    with atomic_path(out / "labels" / split, is_dir=True) as tmp:
        for i, (boxes, labels) in enumerate(zip(data.boxes, data.labels, strict=True)):
            (tmp / f"{image_name(i)}.txt").write_text(yolo_lines(boxes, labels, size))
    present = {s: f"images/{s}" for s in SPLITS if (out / "images" / s).is_dir()}
    spec = {"path": ".", **present, "nc": len(CLASS_NAMES), "names": dict(enumerate(CLASS_NAMES))}
    with atomic_path(out / "data.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(spec, sort_keys=False))


def write_coco(data: Canvases, split: str, out: Path) -> None:
    """Write a split as PNGs plus one COCO instances JSON (image ids from 1, categories 0..9)."""
    _write_pngs(data.images, out / "images" / split)
    coco = coco_ground_truth(data.boxes, data.labels)
    for entry in coco["images"]:
        entry["file_name"] = f"{split}/{image_name(entry['id'] - 1)}.png"
    save_json(out / "annotations" / f"{split}.json", coco)


def _read_png(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"{path}: image listed by the labels is missing")
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def _pack(images: list[np.ndarray], rows: list[list[tuple]], max_digits: int | None) -> Canvases:
    """Stack images and pad per-canvas (label, x, y, w, h) rows into the canvas arrays."""
    k = max_digits or max((len(r) for r in rows), default=0)
    boxes = np.zeros((len(images), k, 4), np.float32)
    labels = np.full((len(images), k), -1, np.int16)
    for i, canvas_rows in enumerate(rows):
        if len(canvas_rows) > k:
            raise ValueError(f"canvas {i}: {len(canvas_rows)} digits > max_digits {k}")
        for j, (label, *box) in enumerate(canvas_rows):
            labels[i, j] = label
            boxes[i, j] = box
    return Canvases(np.stack(images), boxes, labels)


def read_yolo(out: str | Path, split: str, max_digits: int | None = None) -> Canvases:
    """Read a YOLO split back: pixel xywh recovered from the normalised centre boxes."""
    out = Path(out)
    files = sorted((out / "labels" / split).glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"{out / 'labels' / split}: no YOLO label files")
    images, rows = [], []
    for path in files:
        image = _read_png(out / "images" / split / f"{path.stem}.png")
        size = image.shape[0]
        canvas_rows = []
        for line in path.read_text().splitlines():
            label, xc, yc, w, h = line.split()
            w_px, h_px = float(w) * size, float(h) * size
            box = (float(xc) * size - w_px / 2, float(yc) * size - h_px / 2, w_px, h_px)
            canvas_rows.append((int(label), *box))
        images.append(image)
        rows.append(canvas_rows)
    return _pack(images, rows, max_digits)


def read_coco(out: str | Path, split: str, max_digits: int | None = None) -> Canvases:
    """Read a COCO split back, canvases in image-id order, digits in annotation-id order."""
    path = Path(out) / "annotations" / f"{split}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no COCO annotations")
    coco = json.loads(path.read_text())
    entries = sorted(coco["images"], key=lambda e: e["id"])
    rows: dict[int, list[tuple]] = {e["id"]: [] for e in entries}
    for ann in sorted(coco["annotations"], key=lambda a: a["id"]):
        rows[ann["image_id"]].append((ann["category_id"], *ann["bbox"]))
    images = [_read_png(Path(out) / "images" / e["file_name"]) for e in entries]
    return _pack(images, [rows[e["id"]] for e in entries], max_digits)


def export_dataset(data: Canvases, fmt: str, split: str, out: str | Path) -> Path:
    """Write canvases in `fmt` (yolo or coco) under `out`.

    Args:
        data: the split's canvases.
        fmt: "yolo" or "coco".
        split: the split name used for folders and files.
        out: the dataset folder.
    Returns:
        The dataset folder.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    (write_yolo if fmt == "yolo" else write_coco)(data, split, out)
    return out


def main(params: str | Path, stage: str, format: str, split: str, out: str | Path) -> None:
    """`multidigit export-dataset`: one stage's split from data/canvases as YOLO or COCO."""
    from multidigit.params import load_params

    load_params(params)  # a bad params file fails here, before any file is written
    data = read_canvases(stage, split, CANVAS_OUT)
    export_dataset(data, format, split, out)
    print(f"export-dataset: wrote {len(data)} {stage}/{split} canvases as {format} to {out}")
