"""Server-side detection for POST /api/detect: the Keras detector, loaded once per process, lazily.

TensorFlow is imported on the first detection, not at app creation, so the page and model files
are served at once and a worker that never detects never pays the ~10 s import.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

_lock = threading.Lock()
_loaded: dict[str, Any] = {}  # resolved model path -> loaded detector


class ModelMissingError(FileNotFoundError):
    """No Keras detector at the configured path (the pipeline has not trained one yet)."""


def get_detector(path: str | Path) -> Any:
    """The detector at `path`, loaded on first use and shared by every thread of this process.

    Args:
        path: a `.keras` file written by the train stage.
    Returns:
        The object `multidigit.predict.load_detector` returns.
    """
    key = str(Path(path).resolve())
    if key in _loaded:
        return _loaded[key]
    if not Path(key).is_file():
        raise ModelMissingError(f"no detector at {path}")
    with _lock:
        if key not in _loaded:
            from multidigit.predict import load_detector  # heavy: imports TensorFlow

            _loaded[key] = load_detector(key)
    return _loaded[key]


def nms_params(params_file: str | Path | None, manifest: dict[str, Any] | None = None) -> Any:
    """NMS settings: the champion manifest's `thresholds` (iou, max_detections, merge), as the page decodes,
    else the `nms` block of params.yaml, else the schema defaults."""
    from multidigit.params import NmsParams, load_params

    nms = load_params(params_file).nms if params_file and Path(params_file).is_file() else NmsParams()
    thresholds = (manifest or {}).get("thresholds")
    if isinstance(thresholds, dict):
        keys = {"iou": "iou_threshold", "max_detections": "max_detections", "merge": "merge"}
        update = {field: thresholds[key] for key, field in keys.items() if key in thresholds}
        nms = NmsParams(**{**nms.model_dump(), **update})
    return nms


def detect_canvas(model: Any, canvas: np.ndarray, nms: Any, score_threshold: float) -> list[dict[str, Any]]:
    """Detections on one canvas as JSON-ready dicts, the shape the page's detector.js returns.

    Args:
        model: a loaded detector (see `get_detector`).
        canvas: uint8 (100, 100), white digits on black.
        nms: an `NmsParams` (IoU threshold, max detections).
        score_threshold: minimum objectness x class probability.
    Returns:
        [{"x", "y", "w", "h" (pixels, top-left corner), "label": int, "score": float}], best first.
    """
    from multidigit.predict import predict_canvases

    (found,) = predict_canvases(model, canvas[None], nms, score_threshold=score_threshold, batch_size=1)
    order = np.argsort(-found["scores"], kind="stable")
    return [
        {
            **{k: round(float(v), 2) for k, v in zip("xywh", found["boxes"][i], strict=True)},
            "label": int(found["labels"][i]),
            "score": round(float(found["scores"][i]), 4),
        }
        for i in order
    ]
