"""Server-side detection for POST /api/detect: the champion version's exported artifact, cached per version.

The artifact is the version's SavedModel (`<version>/saved_model/`, `multidigit.artifact.load_artifact`):
the same graph the page runs as TF.js, post-processing included, so the API and the page answer alike.
Loaded versions are cached per process, keyed by version folder, so `registry promote` / `rollback`
take effect on the next request without a restart; `preload` loads the champion when a gunicorn worker
starts (`services.app.create_app` with PRELOAD_MODEL), so no request pays the TensorFlow import.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

CACHED_VERSIONS = 4  # the champion and the versions a promote/rollback may switch between
_lock = threading.Lock()
_loaded: OrderedDict[str, Any] = OrderedDict()  # resolved version folder -> loaded SavedModel


class ModelMissingError(FileNotFoundError):
    """The champion version has no SavedModel (or there is no champion yet)."""


def get_artifact(version_dir: str | Path) -> Any:
    """The SavedModel of a version folder, loaded on first use and shared by every thread of the process.

    Args:
        version_dir: models/tfjs/<version>.
    Returns:
        The object `multidigit.artifact.load_artifact` returns (it has `.detect`).
    Raises:
        ModelMissingError: the folder has no SavedModel.
    """
    key = str(Path(version_dir).resolve())
    with _lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
        from multidigit.artifact import load_artifact  # heavy: imports TensorFlow

        try:
            fn = load_artifact(Path(key))
        except FileNotFoundError as exc:
            raise ModelMissingError(str(exc)) from None
        _loaded[key] = fn
        while len(_loaded) > CACHED_VERSIONS:
            _loaded.popitem(last=False)
        return fn


def preload(version_dir: str | Path | None) -> bool:
    """Load a version's artifact (loading runs it once: kernels warm, TensorFlow's first-run notice
    filtered); False if absent."""
    if version_dir is None:
        return False
    try:
        get_artifact(version_dir)
    except ModelMissingError:
        return False
    return True


def detect_canvas(fn: Any, canvas: np.ndarray, score_threshold: float) -> list[dict[str, Any]]:
    """The shown detections on one canvas as JSON-ready dicts, the shape the page's detector.js returns.

    Args:
        fn: a loaded artifact (see `get_artifact`).
        canvas: uint8 (100, 100), white digits on black.
        score_threshold: minimum objectness x class probability.
    Returns:
        [{"x", "y", "w", "h" (pixels, top-left corner), "label": int, "score": float}], best first.
    """
    from multidigit.artifact import detect_canvases, shown_only

    (found,) = detect_canvases(fn, canvas[None], score_threshold)
    found = shown_only(found)
    return [
        {
            **{k: round(float(v), 2) for k, v in zip("xywh", found["boxes"][i], strict=True)},
            "label": int(found["labels"][i]),
            "score": round(float(found["scores"][i]), 4),
        }
        for i in range(len(found["labels"]))
    ]
