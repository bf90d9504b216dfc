"""The champion TF.js model: where it is, its manifest, its files under a versioned URL, and /healthz.

Layout (written by the export stage): `MODELS_DIR/champion.json` = {"version": V} and
`MODELS_DIR/V/{model.json, *.bin, manifest.json}`. A version's files never change, so their URLs
`/models/V/...` are cached as immutable. `/healthz` answers 503 {"status": "no-model", "model": null}
until a champion exists (a load balancer should not route drawing users to a page that cannot detect),
200 {"status": "ok", "model": V} after.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request, send_from_directory

bp = Blueprint("models", __name__)

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FILE_RE = re.compile(r"^(model\.json|manifest\.json|[A-Za-z0-9._-]+\.bin)$")
IMMUTABLE = "public, max-age=31536000, immutable"


def models_dir() -> Path:
    return Path(current_app.config["MODELS_DIR"])


def champion_version() -> str | None:
    """The served version from champion.json, or None when nothing valid is exported yet."""
    path = models_dir() / "champion.json"
    try:
        version = json.loads(path.read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(version, str) or not VERSION_RE.match(version):
        return None
    return version if (models_dir() / version / "model.json").is_file() else None


def champion_manifest() -> dict[str, Any] | None:
    """The champion's manifest.json plus the URL of its model.json, or None without a champion."""
    version = champion_version()
    if version is None:
        return None
    try:
        manifest = json.loads((models_dir() / version / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}
    return {**manifest, "version": version, "model_url": f"/models/{version}/model.json"}


def _conditional_json(data: Any, status: int = 200) -> Response:
    response = jsonify(data)
    response.status_code = status
    if status == 200:
        response.add_etag()
        response.make_conditional(request)
    return response


@bp.get("/models/<version>/<filename>")
def model_file(version: str, filename: str) -> Response:
    """One file of an exported version: model.json / manifest.json (JSON) or a weight shard (binary)."""
    if not VERSION_RE.match(version) or not FILE_RE.match(filename):
        abort(404, description=f"no model file /models/{version}/{filename}")
    folder = models_dir() / version
    if not (folder / filename).is_file():
        abort(404, description=f"no model file /models/{version}/{filename}")
    mimetype = "application/json" if filename.endswith(".json") else "application/octet-stream"
    response = send_from_directory(folder, filename, mimetype=mimetype, conditional=True, etag=True)
    response.headers["Cache-Control"] = IMMUTABLE
    return response


@bp.get("/api/model")
def model_manifest() -> Response:
    """The champion's manifest (version, input, classes, thresholds, metrics, files), or 404 without one."""
    manifest = champion_manifest()
    if manifest is None:
        return _conditional_json({"error": "no model exported yet", "model": None}, status=404)
    return _conditional_json(manifest)


@bp.get("/healthz")
def healthz() -> Response:
    """200 with the champion's version, or 503 while no model is exported."""
    version = champion_version()
    if version is None:
        return jsonify({"status": "no-model", "model": None}), 503
    return jsonify({"status": "ok", "model": version})
