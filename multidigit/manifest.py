"""The manifest beside every exported version, and the check that its files are the ones exported.

`models/tfjs/<version>/manifest.json` is the detector contract, the one source of truth for everything
the page and the service must agree on with training: the graph's inputs (canvas and score threshold)
and outputs (final detections) by name, preprocessing, classes, grid, the post-processing parameters
baked into the graph and the calibrated score threshold, metrics at export, quantization, and the
size + sha256 of every file of the version (TF.js files and the SavedModel under `saved_model/`).
`verify_model_dir` recomputes the digests and refuses a tampered or missing file with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from multidigit.constants import BOX_FORMAT, CANVAS_SIZE, CLASS_NAMES

MANIFEST_NAME = "manifest.json"
MODEL_JSON = "model.json"
FORMAT = "multidigit-detector/2"  # /1 was the raw (N, 15) grid output with post-processing in the page
SAVED_MODEL = "saved_model"  # the SavedModel folder inside a version (multidigit.artifact.SAVED_MODEL_DIR)
# The graph's inputs and outputs by signature name (multidigit.artifact): what consumers feed and read.
INPUTS = {
    "image": {"shape": [1, CANVAS_SIZE, CANVAS_SIZE, 1], "dtype": "float32"},
    "score_threshold": {"shape": [], "dtype": "float32"},
}
OUTPUTS = {
    "boxes": {"shape": ["K", 4], "dtype": "float32", "meaning": "x, y, w, h pixels, top-left corner"},
    "scores": {"shape": ["K"], "dtype": "float32", "meaning": "objectness * max class probability"},
    "labels": {"shape": ["K"], "dtype": "int32", "meaning": "argmax class"},
    "shown": {"shape": ["K"], "dtype": "int32", "meaning": "1 = listed (one box per digit), 0 = hidden"},
    "count": {"shape": [], "dtype": "int32", "meaning": "sum(shown)"},
}


class IntegrityError(ValueError):
    """A file of an exported version does not match the size or sha256 its manifest records."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(model_dir: Path) -> list[str]:
    """Every file of a version folder, relative POSIX paths, sorted; the manifest itself excluded."""
    root = Path(model_dir)
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(name for name in names if name != MANIFEST_NAME)


def file_table(model_dir: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"size": bytes, "sha256": hex}} for every file of a version except the manifest."""
    return {
        name: {"size": (Path(model_dir) / name).stat().st_size, "sha256": file_sha256(Path(model_dir) / name)}
        for name in _files(model_dir)
    }


def build_manifest(
    model_dir: Path,
    *,
    version: str,
    grid: dict[str, int],
    thresholds: dict[str, Any],
    metrics: dict[str, float],
    quantization: dict[str, Any],
    source: dict[str, Any],
    read_brush: float | None = None,
    read_height: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a converted model folder (the files must already be written).

    Args:
        model_dir: folder holding model.json and its weight shards.
        version: the version name (also the folder name under models/tfjs/).
        grid: {"stride", "size", "boxes_per_cell", "slots"} of the detector.
        thresholds: {"score", "score_source", "iou", "max_detections", "merge", "peaks", "agnostic_iou",
            "agnostic_containment", "containment_any_class", "ink_shrink", "ink_grow"}: the post-processing in
            the graph and the default score threshold.
        metrics: the stage-3 metrics at export (flat dict of floats).
        quantization: {"dtype", "tolerance", ...} of the weights.
        source: where the model came from (Keras path and its sha256).
        read_brush: the brush width (400-px buffer px) a page renders drawn strokes at for this model;
            None: at the width they were drawn with.
        read_height: {"height", "band"} of the page's second look (multidigit/rescale.py); None: none.
    Returns:
        The manifest as a JSON-ready dict.
    """
    return {
        "format": FORMAT,
        "version": version,
        "model": MODEL_JSON,
        "input": {
            "shape": [1, CANVAS_SIZE, CANVAS_SIZE, 1],
            "dtype": "float32",
            "layout": "NHWC",
            "preprocessing": "grey canvas, white digits on black, uint8 / 255 -> float32 in [0, 1]",
            "range": [0.0, 1.0],
            "polarity": "white-on-black",
            "read_brush": read_brush,
            "read_height": read_height,
        },
        "classes": list(CLASS_NAMES),
        "grid": grid,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "box_format": BOX_FORMAT,
        "saved_model": SAVED_MODEL,
        "thresholds": thresholds,
        "metrics": metrics,
        "quantization": quantization,
        "source": source,
        "files": file_table(model_dir),
    }


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """Parse `model_dir/manifest.json`; FileNotFoundError / ValueError with one line when unusable."""
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"manifest: {path} not found")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"manifest: {path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"manifest: {path} has no 'files' table")
    return manifest


def verify_model_dir(model_dir: Path) -> dict[str, Any]:
    """Recompute size and sha256 of every file the manifest lists; refuse any difference.

    Args:
        model_dir: an exported version folder.
    Returns:
        The manifest, once every file matched.
    Raises:
        FileNotFoundError: the manifest or a listed file is missing.
        IntegrityError: a file's sha256 differs, or a weight file is not listed.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    files = manifest["files"]
    if MODEL_JSON not in files:
        raise IntegrityError(f"manifest: {model_dir / MANIFEST_NAME} does not list {MODEL_JSON}")
    for name, entry in files.items():
        path = model_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"manifest: {path} is listed but missing")
        actual = file_sha256(path)
        if actual != entry.get("sha256"):
            raise IntegrityError(f"sha256 mismatch: {path} expected {entry.get('sha256')} got {actual}")
    extra = [name for name in _files(model_dir) if name not in files]
    if extra:
        raise IntegrityError(f"manifest: {model_dir} holds unlisted files {', '.join(extra)}")
    return manifest
