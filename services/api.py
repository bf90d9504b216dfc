"""JSON API: POST /api/detect (server-side detection), /api/examples, /api/openapi.json.

Every error under /api/ is JSON {"error": "one line"} with a 4xx status (503 only while no model is
exported); `services.app` registers the handlers that keep it so for 404, 405 and 413 too. /api/detect runs
the champion version's artifact with the thresholds of its manifest (services/inference.py).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from services.drawing import InputError, canvas_from_body
from services.examples import load_examples
from services.inference import ModelMissingError, detect_canvas, get_artifact
from services.models import champion_manifest, models_dir

bp = Blueprint("api", __name__, url_prefix="/api")

OPENAPI_FILE = Path(__file__).with_name("openapi.json")


def json_error(message: str, status: int) -> tuple[Response, int]:
    """The one error shape of the API."""
    return jsonify({"error": message}), status


def _score_threshold(manifest: dict[str, Any]) -> float:
    """?score_threshold=, else the champion manifest's calibrated `thresholds.score`."""
    raw = request.args.get("score_threshold")
    if raw is None:
        value = manifest_score_threshold(manifest)
        if value is None:
            raise ModelMissingError(f"the manifest of {manifest.get('version')} has no thresholds.score")
        return value
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"score_threshold={raw!r} is not a number in [0, 1]") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InputError(f"score_threshold={raw!r} is outside [0, 1]")
    return value


def manifest_score_threshold(manifest: dict[str, Any] | None) -> float | None:
    """The calibrated score threshold recorded in the export manifest (`thresholds.score`)."""
    thresholds = (manifest or {}).get("thresholds")
    value = thresholds.get("score") if isinstance(thresholds, dict) else None
    return float(value) if isinstance(value, int | float) and 0 <= value <= 1 else None


@bp.post("/detect")
def detect() -> Response | tuple[Response, int]:
    """Detect digits in a PNG drawing or a JSON 100 x 100 pixel array (see services/drawing.py)."""
    try:
        canvas = canvas_from_body(request.get_data(cache=False), request.mimetype)
        manifest = champion_manifest()
        if manifest is None:
            raise ModelMissingError("no champion version exported")
        threshold = _score_threshold(manifest)
        fn = get_artifact(models_dir() / manifest["version"])
    except InputError as exc:
        return json_error(str(exc), exc.status)  # 415 for a wrong content type, else 400
    except ModelMissingError as exc:
        return json_error(f"no model exported yet: {exc}", 503)
    detections = detect_canvas(fn, canvas, threshold)
    return jsonify({"detections": detections, "score_threshold": threshold, "model": manifest["version"]})


@lru_cache(maxsize=4)
def _examples(canvas_dir: str, mnist_dir: str) -> dict[str, Any]:
    return load_examples(Path(canvas_dir), Path(mnist_dir))


@bp.get("/examples")
def examples() -> Response:
    """A few real test canvases for the page's example button (read once per process)."""
    data = _examples(str(current_app.config["CANVAS_DIR"]), str(current_app.config["MNIST_DIR"]))
    response = jsonify(data)
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of /api/* and /healthz."""
    response = jsonify(json.loads(OPENAPI_FILE.read_text()))
    response.add_etag()
    return response.make_conditional(request)
