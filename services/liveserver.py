"""A real gunicorn server on a free loopback port: browser tests, fuzz run, benchmarks/load.py."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).with_name("gunicorn")
# A worker loads TensorFlow and the champion's SavedModel before it serves (services.app PRELOAD_MODEL):
# ~10 s on idle cores, more on busy ones; gunicorn's default 30 s would kill it while loading.
WORKER_TIMEOUT_S = 180


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it); tests and benchmarks import this one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode} before serving {url}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # 503 from /healthz without a model still means the server is up
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer {url} within {timeout} s")


@contextlib.contextmanager
def live_server(log_dir: Path, workers: int = 1, threads: int = 4, **config: str | Path) -> Iterator[str]:
    """Run `gunicorn 'services.app:create_app()'` with MULTIDIGIT_<KEY> settings; yield its base URL.

    Args:
        log_dir: where access.log and error.log go.
        workers, threads: gunicorn gthread workers and threads per worker.
        config: app settings, e.g. MODELS_DIR=path (passed as MULTIDIGIT_MODELS_DIR).
    Yields:
        "http://127.0.0.1:PORT".
    """
    port = free_port()
    env = {**os.environ, **{f"MULTIDIGIT_{k}": str(v) for k, v in config.items()}}
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(GUNICORN),
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--threads", str(threads),
        "--timeout", str(WORKER_TIMEOUT_S),
        "--access-logfile", str(log_dir / "access.log"),
        "--error-logfile", str(log_dir / "error.log"),
        "services.app:create_app()",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{url}/healthz", proc, timeout=WORKER_TIMEOUT_S)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
