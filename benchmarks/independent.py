"""An independent check the project's generator did not shape: canvases of MNIST *test* digits made by
code that shares nothing with multidigit/canvas.py or augment.py, scored by the project's evaluation.

    python benchmarks/independent.py [--models models] [--canvases 1000] [--seed 0]
    python benchmarks/independent.py --preview-only   # the canvases and their preview, no model

The generator, per canvas (deterministic from the seed and the canvas index):
- 1-10 digits, each a random MNIST test digit cropped to its ink (pixels > 0) first;
- resized with PIL (bicubic/bilinear to enlarge, box/bilinear to shrink; no Keras layers) to an ink height of
  15-50 px (the upper end shrinks with the digit count so ten digits fit), aspect ratio kept;
- placed by rejection sampling of non-overlapping boxes with a 2 px gap; a digit that does not fit
  after `TRIES` positions shrinks by 15 % (never below 15 px), and a canvas that still cannot hold
  all its digits is drawn again;
- composited by max, pixels below `DUST` zeroed, and each box taken tight around that digit's final
  pixels (the gap keeps every digit's pixels inside its own placement rectangle).

Scoring (`detections_of` and `score_canvases`, the two small seams to switch when the artifact and the
evaluation package land): COCO mAP from every box down to the evaluation's score floor; count, canvas
accuracy, precision and recall from what a user is shown at the manifest's calibrated threshold.
Writes benchmarks/results/independent.json and benchmarks/results/independent_preview.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidigit.atomic import save_json  # noqa: E402
from multidigit.constants import CANVAS_SIZE  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "independent.json"
DIGITS = (1, 10)  # digits per canvas, inclusive
HEIGHT = (15, 50)  # ink height in canvas pixels, inclusive
GAP = 2  # free pixels between any two digit boxes
TRIES = 200  # random positions tried per digit size
SHRINK = 0.85  # a digit that does not fit is tried again this much smaller
DUST = 10  # pixels below this (of 255) are cleared after resizing: invisible, and they would pad the box
MAX_DIGITS = DIGITS[1]
# (name, lowest, highest) ink height in canvas px of the recall-by-size figures; stage-3 training digits
# reach about 36 px (scale 1.8 of MNIST's ~20 px ink), so the top bucket is beyond what it was shown.
HEIGHT_BUCKETS = (("15-24", 0, 24), ("25-34", 25, 34), ("35-50", 35, HEIGHT[1]))
DECIMALS = 4


# ---------------------------------------------------------------- the generator
def ink_crop(digit: np.ndarray) -> np.ndarray:
    """A (28, 28) uint8 digit cut to the rows and columns holding ink (> 0)."""
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def resized(crop: np.ndarray, height: int, smooth: bool) -> np.ndarray:
    """PIL resize of an ink crop to `height` rows (width keeps the aspect ratio), dust cleared.

    Filters: enlarging uses bicubic (`smooth`) or bilinear; shrinking uses box (area average) or bilinear.
    Box is never used to enlarge: there it is nearest-neighbour and draws blocky digits nobody writes.
    """
    from PIL import Image

    width = max(1, round(crop.shape[1] * height / crop.shape[0]))
    r = Image.Resampling
    if height > crop.shape[0]:
        resample = r.BICUBIC if smooth else r.BILINEAR
    else:
        resample = r.BOX if smooth else r.BILINEAR
    out = np.asarray(Image.fromarray(crop).resize((width, height), resample=resample)).copy()
    out[out < DUST] = 0
    return out


def _fits(x: int, y: int, w: int, h: int, placed: list[tuple[int, int, int, int]]) -> bool:
    """True when the box keeps a GAP-pixel margin from every placed box."""
    for px, py, pw, ph in placed:
        if x < px + pw + GAP and px < x + w + GAP and y < py + ph + GAP and py < y + h + GAP:
            return False
    return True


def _place(patch_shape: tuple[int, int], placed: list, rng: np.random.Generator) -> tuple[int, int] | None:
    """A random top-left corner where a (h, w) patch fits beside the placed boxes, or None."""
    h, w = patch_shape
    if h > CANVAS_SIZE or w > CANVAS_SIZE:
        return None
    for _ in range(TRIES):
        x, y = int(rng.integers(0, CANVAS_SIZE - w + 1)), int(rng.integers(0, CANVAS_SIZE - h + 1))
        if _fits(x, y, w, h, placed):
            return x, y
    return None


def _attempt(digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple | None:
    """One try at a canvas: (image, boxes (n, 4) xywh, labels (n,)), or None when a digit found no room."""
    n = int(rng.integers(DIGITS[0], DIGITS[1] + 1))
    top = max(HEIGHT[0], min(HEIGHT[1], int(90 / np.sqrt(n))))  # ten 50-px digits cannot fit
    image = np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.uint8)
    placed, boxes, out_labels = [], [], []
    for index in rng.integers(0, len(labels), size=n):
        crop, height = ink_crop(digits[index]), int(rng.integers(HEIGHT[0], top + 1))
        smooth = bool(rng.random() < 0.5)
        while True:
            patch = resized(crop, height, smooth)
            corner = _place(patch.shape, placed, rng)
            if corner is not None or height == HEIGHT[0]:
                break
            height = max(HEIGHT[0], int(height * SHRINK))
        if corner is None:
            return None
        x, y = corner
        h, w = patch.shape
        np.maximum(image[y : y + h, x : x + w], patch, out=image[y : y + h, x : x + w])
        placed.append((x, y, w, h))
        out_labels.append(int(labels[index]))
    for x, y, w, h in placed:  # tight boxes from the final pixels of each placement rectangle
        region = image[y : y + h, x : x + w] > 0
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        boxes.append((x + cols[0], y + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1))
    return image, np.array(boxes, np.float32), np.array(out_labels, np.int16)


@dataclass
class IndependentSet:
    """The canvases and their ground truth in the project's canvas contract."""

    images: np.ndarray  # (N, 100, 100) uint8
    boxes: np.ndarray  # (N, 10, 4) float32 pixel xywh, 0-padded
    labels: np.ndarray  # (N, 10) int16, -1-padded
    redraws: int  # canvases drawn again because a digit found no room

    def digest(self) -> str:
        """sha256 over images, boxes and labels: the same seed must give the same set."""
        h = hashlib.sha256()
        for a in (self.images, self.boxes, self.labels):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def make_independent_set(digits: np.ndarray, labels: np.ndarray, count: int, seed: int) -> IndependentSet:
    """`count` canvases of the given digits (MNIST test), each from its own seeded stream.

    Args:
        digits: (D, 28, 28) uint8 MNIST digits; labels: (D,) their classes.
        count: canvases to make.
        seed: the set's seed; canvas i uses SeedSequence([seed, i]).
    Returns:
        The `IndependentSet`.
    """
    images = np.zeros((count, CANVAS_SIZE, CANVAS_SIZE), np.uint8)
    boxes = np.zeros((count, MAX_DIGITS, 4), np.float32)
    out_labels = np.full((count, MAX_DIGITS), -1, np.int16)
    redraws = 0
    for i in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        while (made := _attempt(digits, labels, rng)) is None:
            redraws += 1
        images[i], b, lab = made
        boxes[i, : len(lab)], out_labels[i, : len(lab)] = b, lab
    return IndependentSet(images, boxes, out_labels, redraws)


def mnist_test_digits(folder: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST test images and labels from the verified IDX files (`folder`, else $MNIST_DIR, else
    ../shared/data/mnist)."""
    from multidigit.mnist import load_mnist_arrays
    from multidigit.params import load_params

    params = load_params(ROOT / "params.yaml").mnist
    if folder is not None:
        params = params.model_copy(update={"dir": str(folder)})
    arrays = load_mnist_arrays(params)
    return arrays["test_images"], arrays["test_labels"]


# ---------------------------------------------------------------- detections and scoring
def evaluation_modules(with_stage: bool = False) -> tuple[Any, ...]:
    """(coco, matching, figures[, the stage module holding SCORE_FLOOR]) from multidigit/evaluation/, or
    the flat modules they moved from (the move is under way; each is looked up on its own)."""
    import importlib

    def first(*names: str) -> Any:
        for name in names:
            try:
                return importlib.import_module(name)
            except ImportError:
                continue
        raise ImportError(f"none of {', '.join(names)} imports")

    coco = first("multidigit.evaluation.coco", "multidigit.coco")
    matching = first("multidigit.evaluation.matching", "multidigit.metrics")
    figures = first("multidigit.evaluation.figures", "multidigit.plots")
    if not with_stage:
        return coco, matching, figures
    return coco, matching, figures, first("multidigit.evaluation.stage", "multidigit.evaluate")


@dataclass
class ModelSource:
    """Where a detector and its operating point come from."""

    version_dir: Path | None  # an exported version (manifest.json, saved_model/ once the artifact lands)
    detector: Path | None  # a .keras detector, read when named (`keras_only`), else until the artifact exists
    threshold: float  # the operating score threshold (the manifest's calibrated one unless overridden)
    thresholds: dict[str, Any]  # the manifest's decoding thresholds (iou, max_detections, merge, ...)
    # a detector was named: read it, not the version's SavedModel, whose manifest still gives the
    # post-processing and (unless overridden) the threshold; else `--detector` read the champion silently
    keras_only: bool = False


def resolve_model(models: Path, version_dir: Path | None, detector: Path | None, threshold: float | None):
    """The `ModelSource` of a models folder (its champion and stage-3 detector) or explicit paths; a
    named `detector` is what is read, at the version's post-processing."""
    from multidigit.manifest import read_manifest

    keras_only = detector is not None
    if keras_only and not detector.is_file():
        raise FileNotFoundError(f"--detector: {detector} not found")
    if version_dir is None and (models / "tfjs" / "champion.json").is_file():
        champion = json.loads((models / "tfjs" / "champion.json").read_text())["version"]
        version_dir = models / "tfjs" / champion
    detector = detector or models / "stage3" / "detector.keras"
    thresholds = read_manifest(version_dir)["thresholds"] if version_dir else {}
    if threshold is None:
        if "score" not in thresholds:
            raise FileNotFoundError(
                f"{models}: no exported champion manifest; pass --threshold or --version-dir"
            )
        threshold = float(thresholds["score"])
    return ModelSource(
        version_dir, detector if detector.is_file() else None, threshold, thresholds, keras_only
    )


def model_record(source: ModelSource) -> dict[str, Any]:
    """The results files' "model" entry: the version and threshold read, and the detector when one was
    named (its figures are not the version's)."""
    record = {"version_dir": workspace_path(source.version_dir), "threshold": source.threshold}
    if source.keras_only:
        record["detector"] = workspace_path(source.detector)
    return record


def _has_artifact(source: ModelSource) -> bool:
    """True when engineer A's artifact module exists, the version holds its SavedModel and no detector
    was named."""
    if source.keras_only:
        return False
    try:
        import multidigit.artifact  # noqa: F401
    except ImportError:
        return False
    return source.version_dir is not None and (source.version_dir / "saved_model").is_dir()


def manifest_nms(source: ModelSource) -> Any:
    """The post-processing the version was exported with, as `NmsParams` (never params.yaml, which
    describes the next run); a version from before the one-box-per-digit rule or the fit to ink gets
    them off (1.0, 0)."""
    from multidigit.params import NmsParams

    t = source.thresholds
    names = {"iou": "iou_threshold", "max_detections": "max_detections", "merge": "merge"}
    values = {field: t[key] for key, field in names.items() if key in t}
    off = {"agnostic_iou": 1.0, "agnostic_containment": 1.0, "ink_shrink": 0.0, "ink_grow": 0}
    rule = {key: t.get(key, value) for key, value in off.items() if key in NmsParams.model_fields}
    return NmsParams(score_threshold=source.threshold, **values, **rule)


_MODELS: dict[tuple[str, str], Any] = {}


def _loaded(loader: Any, path: Path) -> Any:
    """`loader(path)`, once per path (drawn_page.py scores several brushes with one model)."""
    key = (loader.__name__, str(path))
    if key not in _MODELS:
        _MODELS[key] = loader(path)
    return _MODELS[key]


def detections_of(source: ModelSource, images: np.ndarray) -> tuple[list, list, str]:
    """(every box down to the score floor, the boxes a user is shown, which path produced them).

    The artifact path runs the exported SavedModel (its `shown` at the operating threshold); until it
    exists, the Keras detector + the numpy post-processing at the manifest's NMS settings.
    """
    _, mt, _, stage = evaluation_modules(with_stage=True)
    score_floor = float(stage.SCORE_FLOOR)
    if _has_artifact(source):
        from multidigit.artifact import detect_canvases, load_artifact, shown_only

        fn = _loaded(load_artifact, source.version_dir)
        floor = detect_canvases(fn, images, score_floor)
        shown = [shown_only(d) for d in detect_canvases(fn, images, source.threshold)]
        return floor, shown, "artifact"
    from multidigit.predict import load_detector, predict_canvases

    if source.detector is None:
        raise FileNotFoundError(
            "no detector: pass --detector or a --models folder holding stage3/detector.keras"
        )
    model = _loaded(load_detector, source.detector)
    nms = manifest_nms(source)
    floor = predict_canvases(model, images, nms, score_threshold=score_floor)
    # Run again at the threshold, as the page does: with the merge on, a kept box averages only the
    # candidates above the threshold, so the floor's boxes cut at the threshold are not what users see.
    shown = predict_canvases(model, images, nms, score_threshold=source.threshold)
    return floor, [mt.shown_only(d) for d in shown], "keras"


def score_canvases(boxes: np.ndarray, labels: np.ndarray, floor: list, shown: list) -> dict[str, float]:
    """The project's evaluation on these canvases: COCO mAP (pycocotools) on `floor`, and P/R, count and
    canvas accuracy of `shown` (every shown box counts: the threshold was applied already), overall, per
    project bucket (1, 2-5, 6-10 digits) and per exact digit count."""
    coco, mt, _ = evaluation_modules()
    gt, results = coco.coco_ground_truth(boxes, labels), coco.coco_detections(floor)
    out = dict(coco.coco_metrics(gt, results).stats)
    m = mt.match_split(boxes, labels, shown)
    counts = mt.canvas_counts(m, 0.0)
    out.update(mt.canvas_accuracies(counts))
    prf = mt.class_prf(m, 0.0)
    out.update({k: prf[f"{k}/all"] for k in ("precision", "recall", "f1")})
    buckets = mt.count_buckets(labels)
    n_digits = np.sum(labels >= 0, axis=1)
    buckets.update({f"n{n}": np.flatnonzero(n_digits == n) for n in range(1, MAX_DIGITS + 1)})
    for name, idx in buckets.items():
        if len(idx) == 0:
            continue
        if not name.startswith("n"):
            sub = coco.coco_metrics(gt, results, image_ids=idx + 1).stats  # image id = canvas index + 1
            out[f"bucket/{name}/mAP50"], out[f"bucket/{name}/mAP50-95"] = (
                sub["metrics/mAP50"],
                sub["metrics/mAP50-95"],
            )
        acc = mt.canvas_accuracies(counts, idx)
        out[f"bucket/{name}/count_accuracy"] = acc["count/accuracy"]
        out[f"bucket/{name}/canvas_accuracy"] = acc["canvas/accuracy"]
        out[f"bucket/{name}/canvases"] = float(len(idx))
    out.update(recall_by_height(boxes, labels, m))
    return {k: round(float(v), DECIMALS) for k, v in out.items()}


def recall_by_height(boxes: np.ndarray, labels: np.ndarray, m: Any) -> dict[str, float]:
    """Share of the digits of each ink-height bucket that a shown detection found (class-aware, IoU 0.5).

    Uses the matches' `det_gt` (rows in the ground truth's row-major digit order); {} without it.
    """
    if not hasattr(m, "det_gt"):
        return {}
    heights = boxes[..., 3][labels >= 0]  # the same row-major order as the matches' gt rows
    found = np.zeros(len(heights), bool)
    found[m.det_gt[m.det_gt >= 0]] = True
    out = {}
    for name, lo, hi in HEIGHT_BUCKETS:
        sel = (heights >= lo) & (heights <= hi)
        out[f"height/{name}/recall"] = float(found[sel].mean()) if sel.any() else 0.0
        out[f"height/{name}/digits"] = float(sel.sum())
    return out


# ---------------------------------------------------------------- outputs
def workspace_path(path: Path | None) -> str | None:
    """A path relative to the repository, or to the workspace holding its models/ folder when elsewhere."""
    if path is None:
        return None
    path = Path(path).resolve()
    if path.is_relative_to(ROOT):
        return path.relative_to(ROOT).as_posix()
    parts = path.parts
    top = [i for i, part in enumerate(parts) if part in ("models", "data")]
    return Path(*parts[top[0] :]).as_posix() if top else path.name


def write_preview(data: IndependentSet, shown: list | None, path: Path, count: int = 16) -> None:
    """The first `count` canvases with their truth boxes (and the shown detections, when scored)."""
    figures = evaluation_modules()[2]
    dets = shown if shown is not None else [None] * len(data.labels)
    title = "independent canvases (MNIST test digits, PIL resize, rejection placement)"
    figures.plot_canvases(
        data.images, data.boxes, data.labels, dets, range(min(count, len(data.labels))), path, title
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "models", help="folder holding tfjs/ and stage3/")
    p.add_argument("--version-dir", type=Path, help="an exported version (default: the champion of --models)")
    p.add_argument("--detector", type=Path, help=".keras detector (default: <models>/stage3/detector.keras)")
    p.add_argument("--threshold", type=float, help="operating score threshold (default: the manifest's)")
    p.add_argument("--canvases", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--preview", type=Path, help="preview PNG (default: beside --out, <out stem>_preview.png)")
    p.add_argument("--preview-only", action="store_true", help="make the canvases and the preview, no model")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # the preview follows --out, so a run written elsewhere never overwrites the committed preview
    args.preview = args.preview or args.out.with_name(f"{args.out.stem}_preview.png")
    start = time.perf_counter()
    data = make_independent_set(*mnist_test_digits(), args.canvases, args.seed)
    made_s = time.perf_counter() - start
    generator = {
        "canvases": args.canvases, "seed": args.seed, "digits": list(DIGITS), "height_px": list(HEIGHT),
        "gap_px": GAP, "dust": DUST, "redraws": data.redraws, "total_digits": int(np.sum(data.labels >= 0)),
        "sha256": data.digest(), "seconds": round(made_s, 2),
    }  # fmt: skip
    if args.preview_only:
        write_preview(data, None, args.preview)
        print(json.dumps(generator, indent=1))
        return {"generator": generator}
    source = resolve_model(args.models, args.version_dir, args.detector, args.threshold)
    floor, shown, path = detections_of(source, data.images)
    metrics = score_canvases(data.boxes, data.labels, floor, shown)
    write_preview(data, shown, args.preview)
    result = {
        "generator": generator,
        "model": {
            "version_dir": workspace_path(source.version_dir), "detector": workspace_path(source.detector),
            "workspace": "this checkout" if args.models.resolve().is_relative_to(ROOT) else "another one",
            "path": path, "score_threshold": source.threshold,
        },
        "metrics": metrics,
        "preview": workspace_path(args.preview),
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    save_json(args.out, result)
    keys = ("metrics/mAP50", "metrics/mAP50-95", "count/accuracy", "canvas/accuracy")
    print(
        "independent: "
        + "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)
        + f"  -> {workspace_path(args.out)}"
    )
    return result


if __name__ == "__main__":
    main()
