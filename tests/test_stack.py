"""How a stage command finds the stack (flows/runner.py resolve_mode), without starting Prefect.

A configured server that does not answer is one line and exit 1 within seconds; the stack's
`.stack/api_url` is used when it answers; with neither the command says in one line that it runs
in-process. The stack itself (up, a plain `dvc repro` through it, `make stop`) is exercised in
test_prefect_integration.py.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flows import runner
from services.liveserver import free_port

ROOT = Path(__file__).resolve().parents[1]


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


@pytest.fixture()
def health_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


def test_an_unreachable_configured_stack_is_one_line_and_exit_1(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "home")}
    argv = [sys.executable, "-m", "flows", "run", "generate", "--stage", "stage1"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr == f"error: PREFECT_API_URL={url}: Prefect API unreachable (no answer on /health)\n"
    assert done.stdout == ""


def test_without_a_server_it_runs_in_process_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert runner.resolve_mode() is None
    assert capsys.readouterr().err == (
        "flows: no Prefect server configured or running; running in-process (`make run` starts the stack)\n"
    )


def test_a_stopped_stack_falls_back_to_in_process(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (tmp_path / ".stack").mkdir()
    (tmp_path / ".stack" / "api_url").write_text(f"http://127.0.0.1:{free_port()}/api\n")
    assert runner.resolve_mode() is None
    assert "PREFECT_API_URL" not in os.environ
    err = capsys.readouterr().err
    assert err.startswith("flows: the stack in .stack/ is not running; running in-process")
    assert err.count("\n") == 1


def test_a_running_stack_is_found_in_its_folder(monkeypatch, tmp_path, capsys, health_server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (tmp_path / ".stack").mkdir()
    (tmp_path / ".stack" / "api_url").write_text(f"{health_server}\n")
    assert runner.resolve_mode() == health_server
    assert os.environ["PREFECT_API_URL"] == health_server  # set before Prefect is imported
    assert capsys.readouterr().err == ""


def test_a_configured_server_wins_over_the_stack_file(monkeypatch, tmp_path, health_server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", health_server)
    (tmp_path / ".stack").mkdir()
    (tmp_path / ".stack" / "api_url").write_text(f"http://127.0.0.1:{free_port()}/api\n")
    assert runner.resolve_mode() == health_server


def test_make_stop_without_a_stack_is_a_clean_no_op(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["make", "stop"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=99)
    assert done.returncode == 0, done.stderr
    assert "stack stopped: nothing was running" in done.stdout
