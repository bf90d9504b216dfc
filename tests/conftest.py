"""Shared fixtures: the repo root, the real MNIST folder, a params mapping, a throwaway repo copy."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist")).resolve()
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found at {MNIST_DIR}; tests never download")
    return MNIST_DIR


@pytest.fixture()
def params_dict() -> dict:
    """A deep copy of the repo's params.yaml, free to mutate."""
    return copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))


def tracked_files() -> list[str]:
    """Files git tracks plus untracked files it does not ignore: what a fresh clone would hold."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


def copy_repo(dest: Path) -> Path:
    """Copy the working tree (as a clone would have it) into `dest` and make it a git repo."""
    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def pipeline_env(mnist_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MNIST_DIR"] = str(mnist_dir)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    return env


@pytest.fixture()
def repo_copy(tmp_path: Path) -> Path:
    return copy_repo(tmp_path / "repo")
