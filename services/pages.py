"""The drawing page and its static files: web/ at the root, tfjs from node_modules under /vendor/.

Nothing comes from a CDN: the page works with the network cable pulled. Paths are joined with
`send_from_directory` (werkzeug's safe_join), so `..` and absolute paths give 404.
"""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, send_from_directory

bp = Blueprint("pages", __name__)

# URL prefix under /vendor/ -> folder under node_modules. Only the browser bundles and wasm binaries.
VENDOR = {
    "tfjs": "@tensorflow/tfjs/dist",
    "tfjs-backend-wasm": "@tensorflow/tfjs-backend-wasm/dist",
}
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+\.(css|js|svg|png|ico|json)$")
MIMETYPES = {".js": "text/javascript", ".wasm": "application/wasm", ".map": "application/json"}


def _send(folder: Path, filename: str) -> Response:
    """send_from_directory with our mimetypes; 404 naming the file when it is missing."""
    if not (folder / filename).is_file():
        abort(404, description=f"no file {filename}")
    mimetype = MIMETYPES.get(Path(filename).suffix)
    return send_from_directory(folder, filename, mimetype=mimetype, conditional=True, etag=True)


@bp.get("/")
def index() -> Response:
    """The drawing page."""
    return _send(Path(current_app.config["WEB_DIR"]), "index.html")


@bp.get("/favicon.svg")
def favicon() -> Response:
    return _send(Path(current_app.config["WEB_DIR"]), "favicon.svg")


@bp.get("/<any(css, js, img):folder>/<name>")
def static_file(folder: str, name: str) -> Response:
    """A file of web/css, web/js or web/img with an allow-listed name, so nothing else leaks."""
    if not NAME_RE.match(name):
        abort(404, description=f"no file /{folder}/{name}")
    return _send(Path(current_app.config["WEB_DIR"]) / folder, name)


@bp.get("/vendor/<package>/<path:filename>")
def vendor_file(package: str, filename: str) -> Response:
    """A file of an npm package's dist/ folder (tfjs bundles, wasm binaries, source maps)."""
    if package not in VENDOR or not re.match(r"^[A-Za-z0-9_.-]+$", filename):
        abort(404, description=f"no vendor file /vendor/{package}/{filename}")
    return _send(Path(current_app.config["NODE_MODULES"]) / VENDOR[package], filename)
