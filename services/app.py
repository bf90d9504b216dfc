"""Flask app factory: the drawing page, the champion's TF.js files, and a small JSON API.

Run it with gunicorn (`make serve`): `gunicorn 'services.app:create_app()'`. Configuration, in order:
the defaults below, then `MULTIDIGIT_*` environment variables (e.g. `MULTIDIGIT_MODELS_DIR=/srv/tfjs`),
or only `test_config` when one is passed. Relative paths are taken from the repository root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from multidigit.constants import CANVAS_OUT, MNIST_OUT, MODELS_DIR
from services import api, headers, models, pages

ROOT = Path(__file__).resolve().parents[1]
PATH_KEYS = (
    "MODELS_DIR",
    "DETECTOR_PATH",
    "WEB_DIR",
    "NODE_MODULES",
    "CANVAS_DIR",
    "MNIST_DIR",
    "PARAMS_FILE",
)
DEFAULTS: dict[str, Any] = {
    "MODELS_DIR": MODELS_DIR / "tfjs",  # champion.json + <version>/ from the export stage
    "DETECTOR_PATH": MODELS_DIR / "stage3" / "detector.keras",  # Keras model behind /api/detect
    "WEB_DIR": "web",
    "NODE_MODULES": "node_modules",
    "CANVAS_DIR": CANVAS_OUT,
    "MNIST_DIR": MNIST_OUT,
    "PARAMS_FILE": "params.yaml",  # its nms block sets /api/detect's IoU and max detections
    "MAX_CONTENT_LENGTH": 1024 * 1024,  # larger bodies get 413
}


def _error(exc: HTTPException) -> Response:
    """HTTP errors: JSON under /api/ (and /healthz), a one-line text page elsewhere; never a traceback."""
    status = exc.code or 500
    if request.path.startswith(("/api/", "/healthz", "/models/")):
        response = jsonify({"error": exc.description or exc.name})
    else:
        response = Response(f"{status} {exc.name}: {exc.description}\n", mimetype="text/plain")
    response.status_code = status
    return response


def _resolve_paths(config: dict[str, Any]) -> None:
    for key in PATH_KEYS:
        path = Path(config[key])
        config[key] = path if path.is_absolute() else ROOT / path


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app.

    Args:
        test_config: settings that replace the environment (tests pass TESTING and tmp folders).
    Returns:
        The configured Flask app with the pages, models and api blueprints.
    """
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(DEFAULTS)
    if test_config is None:
        app.config.from_prefixed_env("MULTIDIGIT")
    else:
        app.config.from_mapping(test_config)
    _resolve_paths(app.config)
    app.json.sort_keys = False
    app.register_blueprint(models.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_error_handler(HTTPException, _error)
    headers.init_app(app)
    return app
