"""Response headers every route gets: security policy, cache policy defaults, gzip of text bodies.

CSP: everything from this origin only; no inline script or style. Two relaxations, both for the tfjs
WebAssembly backend: `'wasm-unsafe-eval'` compiles it, and `blob:` scripts and workers run its threads
(XNNPACK's pool: Emscripten starts each thread as a Worker from a Blob of the backend's own code, which
only this origin's scripts can create).

Cross-origin isolation (COOP same-origin + COEP require-corp, every resource same-origin) gives the page
SharedArrayBuffer, which the threaded wasm build needs; without it tfjs falls back to one thread.
"""

from __future__ import annotations

import gzip
from functools import lru_cache

from flask import Flask, Response, request

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval' blob:",
        "worker-src 'self' blob:",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # for browsers that ignore frame-ancestors
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
COMPRESSIBLE = ("text/", "application/json", "application/javascript", "image/svg+xml")
MIN_GZIP_BYTES = 512


def _is_compressible(response: Response) -> bool:
    if response.status_code != 200 or "Content-Encoding" in response.headers:
        return False
    if not response.mimetype.startswith(COMPRESSIBLE):
        return False
    return "gzip" in request.headers.get("Accept-Encoding", "").lower()


@lru_cache(maxsize=64)
def _gzip_cached(body: bytes) -> bytes:
    # Static files (tf.min.js is 1.4 MB) are requested again and again: compress each body once.
    return gzip.compress(body, compresslevel=6, mtime=0)


def gzip_response(response: Response) -> Response:
    """Gzip a 200 text/JSON/JS body when the client accepts it; the ETag becomes weak (RFC 9110 8.8.1)."""
    response.vary.add("Accept-Encoding")
    if not _is_compressible(response):
        return response
    response.direct_passthrough = False  # send_file streams; read the file so it can be compressed
    body = response.get_data()
    if len(body) < MIN_GZIP_BYTES:
        return response
    response.set_data(_gzip_cached(body))
    response.headers["Content-Encoding"] = "gzip"
    etag, weak = response.get_etag()
    if etag and not weak:
        response.set_etag(etag, weak=True)
    return response


def add_headers(response: Response) -> Response:
    """after_request hook: security headers, a default Cache-Control, then gzip."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if "Cache-Control" not in response.headers:
        # Revalidate with the ETag every time: the page and the API change when the champion does.
        response.headers["Cache-Control"] = "no-cache"
    return gzip_response(response)


def init_app(app: Flask) -> None:
    """Register the header hook on `app`."""
    app.after_request(add_headers)
