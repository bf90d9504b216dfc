"""Run a trained Keras detector on canvases with the numpy reference post-processing (boxes.postprocess).

The served and evaluated detector is the exported artifact (multidigit.artifact), which runs the same
post-processing inside its graph; this module is the reference its tests compare against.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np

from multidigit.boxes import Detections, postprocess
from multidigit.params import NmsParams
from multidigit.preprocess import to_model_input


def load_detector(path: str | Path) -> Any:
    """Load models/<stage>/detector.keras and wrap it as the inference model.

    Args:
        path: a detector saved by `train` (raw-output training model).
    Returns:
        The Keras inference model (B, 100, 100, 1) -> (B, N, 15) decoded.
    Raises:
        FileNotFoundError: no file at `path`.
    """
    import keras

    from multidigit.model import inference_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector {path} not found; run `dvc repro train@stage3` first")
    detector = keras.saving.load_model(path, compile=False)
    return inference_model(detector)


_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(model: Any) -> Any:
    """One traced tf.function per model (eager Keras calls are ~13x slower at batch 1)."""
    import tensorflow as tf

    if model not in _TRACED:
        _TRACED[model] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return _TRACED[model]


def predict_decoded(model: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Decoded model output for uint8 canvases.

    Args:
        model: an inference model (`load_detector` or `model.inference_model`).
        images: uint8 (B, 100, 100).
        batch_size: canvases per call.
    Returns:
        float32 (B, N, 15) [x, y, w, h, objectness, 10 class probs].
    """
    x = to_model_input(images)
    fn = _compiled(model)
    parts = [np.asarray(fn(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0, 15), np.float32)


def predict_canvases(
    model: Any,
    images: np.ndarray,
    nms: NmsParams,
    score_threshold: float | None = None,
    batch_size: int = 256,
) -> list[Detections]:
    """Detections per canvas.

    Args:
        model: an inference model.
        images: uint8 (B, 100, 100) canvases.
        nms: the nms block (IoU threshold, max detections, default score threshold).
        score_threshold: overrides `nms.score_threshold` (evaluation passes a low floor).
        batch_size: canvases per model call.
    Returns:
        One `Detections` dict per canvas, best score first.
    """
    threshold = nms.score_threshold if score_threshold is None else score_threshold
    return postprocess_by(nms, predict_decoded(model, images, batch_size), images, threshold)


def postprocess_by(
    nms: NmsParams, decoded: np.ndarray, images: np.ndarray, threshold: float
) -> list[Detections]:
    """`boxes.postprocess` of decoded slots under every step of the nms block, at `threshold`."""
    return postprocess(
        decoded, threshold, nms.iou_threshold, nms.max_detections, nms.merge,
        nms.agnostic_iou, nms.agnostic_containment, images, nms.ink_shrink, nms.ink_grow,
        containment_any_class=nms.containment_any_class,
    )  # fmt: skip
