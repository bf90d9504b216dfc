"""Flask app factory: the drawing page, the champion's TF.js files, and a small JSON API.

Run it with gunicorn (`make serve`): `gunicorn 'services.app:create_app()'`; gunicorn calls the factory
in each worker after the fork, so PRELOAD_MODEL loads the champion's SavedModel at worker start (a
promote/rollback later loads the new champion on its first request). Configuration, in order:
the defaults below, then `MULTIDIGIT_*` environment variables (e.g. `MULTIDIGIT_MODELS_DIR=/srv/tfjs`),
or only `test_config` when one is passed. Relative paths are taken from the repository root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from multidigit.constants import CANVAS_OUT, MNIST_OUT, TFJS_DIR
from services import api, headers, inference, models, pages

ROOT = Path(__file__).resolve().parents[1]
PATH_KEYS = ("MODELS_DIR", "WEB_DIR", "NODE_MODULES", "CANVAS_DIR", "MNIST_DIR")
DEFAULTS: dict[str, Any] = {
    "MODELS_DIR": TFJS_DIR,  # champion.json + <version>/ (TF.js files, saved_model/) from the export stage
    "WEB_DIR": "web",
    "NODE_MODULES": "node_modules",
    "CANVAS_DIR": CANVAS_OUT,
    "MNIST_DIR": MNIST_OUT,
    # Load the champion's SavedModel when the app is created, i.e. when a gunicorn worker starts, so no
    # request pays the TensorFlow import (tests get False unless their config asks for it).
    "PRELOAD_MODEL": True,
    "MAX_CONTENT_LENGTH": 1024 * 1024,  # larger bodies get 413
}


def _error(exc: HTTPException) -> Response:
    """HTTP errors: JSON under /api/ (and /healthz), a one-line text page elsewhere; never a traceback."""
    status = exc.code or 500
    if status == 413:  # werkzeug's text does not say what the limit is
        exc.description = f"body is larger than the {current_app.config['MAX_CONTENT_LENGTH']} byte limit"
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
        app.config.from_mapping({"PRELOAD_MODEL": False, **test_config})
    _resolve_paths(app.config)
    app.json.sort_keys = False
    app.register_blueprint(models.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_error_handler(HTTPException, _error)
    headers.init_app(app)
    if app.config["PRELOAD_MODEL"]:
        with app.app_context():
            version = models.champion_version()
            inference.preload(models.models_dir() / version if version else None)
    return app
