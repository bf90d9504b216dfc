"""The manifest beside every exported TF.js model, and the check that its files are the ones exported.

`models/tfjs/<version>/manifest.json` is the one source of truth for everything the page and the service
must agree on with training: input shape and preprocessing, classes, grid, output layout, decoding
thresholds, metrics at export, quantization, and the size + sha256 of every file of the version.
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
FORMAT = "multidigit-tfjs/1"
# Output channels of the decoded (N, 15) tensor, in order (model contract, brief section 2).
OUTPUT_CHANNELS = ("x", "y", "w", "h", "objectness", *(f"p{c}" for c in CLASS_NAMES))
# Class-aware NMS shifts each class's boxes by label * offset so that one NMS pass never lets two
# classes suppress each other; any offset larger than the canvas works (boxes.postprocess uses 4x).
NMS_CLASS_OFFSET = 4.0 * CANVAS_SIZE


class IntegrityError(ValueError):
    """A file of an exported version does not match the size or sha256 its manifest records."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_table(model_dir: Path) -> dict[str, dict[str, Any]]:
    """{file name: {"size": bytes, "sha256": hex}} for every file of a version except the manifest."""
    return {
        p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(Path(model_dir).iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
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
) -> dict[str, Any]:
    """The manifest of a converted model folder (the files must already be written).

    Args:
        model_dir: folder holding model.json and its weight shards.
        version: the version name (also the folder name under models/tfjs/).
        grid: {"stride", "size", "boxes_per_cell", "slots"} of the detector.
        thresholds: {"score", "score_source", "iou", "max_detections", "merge"} for decoding.
        metrics: the stage-3 metrics at export (flat dict of floats).
        quantization: {"dtype", "tolerance", ...} of the weights.
        source: where the model came from (Keras path and its sha256).
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
        },
        "classes": list(CLASS_NAMES),
        "grid": grid,
        "output": {
            "shape": [grid["slots"], len(OUTPUT_CHANNELS)],
            "channels": list(OUTPUT_CHANNELS),
            "box_format": BOX_FORMAT,
            "box_units": "pixels",
            "score": "objectness * max class probability; label = argmax class",
        },
        "thresholds": {**thresholds, "nms_class_offset": NMS_CLASS_OFFSET},
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
    extra = sorted(p.name for p in model_dir.iterdir() if p.is_file() and p.name not in files)
    extra = [name for name in extra if name != MANIFEST_NAME]
    if extra:
        raise IntegrityError(f"manifest: {model_dir} holds unlisted files {', '.join(extra)}")
    return manifest
