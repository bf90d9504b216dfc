"""Shared fixtures: the repo root, the real MNIST folder, a params mapping, a throwaway repo copy."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import multidigit  # noqa: F401  first: quiets TensorFlow's start-up for every test (multidigit/quiet.py)
from scripts.smoke import make_workspace, workspace_env

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist")).resolve()
VENV_BIN = Path(sys.executable).parent


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A fresh interpreter of this venv running `code` in the repo root (TensorFlow's once-a-process
    notices are still to come there); its output captured as text."""
    argv = [str(VENV_BIN / "python"), "-c", code]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found at {MNIST_DIR}; tests never download")
    return MNIST_DIR


@pytest.fixture()
def params_dict() -> dict:
    """A deep copy of the repo's params.yaml, free to mutate."""
    return copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))


def copy_repo(dest: Path) -> Path:
    """Copy the working tree (as a clone would have it) into `dest` and make it a git repo."""
    return make_workspace(dest, smoke=False)


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


@pytest.fixture(scope="session")
def smoke_workspace(tmp_path_factory, mnist_dir) -> Path:
    """The whole pipeline run once on params.smoke.yaml (minutes); tests read its outputs, never write."""
    dest = make_workspace(tmp_path_factory.mktemp("smoke") / "repo")
    env = workspace_env() | pipeline_env(mnist_dir)
    run = subprocess.run(["dvc", "repro"], cwd=dest, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"smoke pipeline failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
    return dest


@pytest.fixture(scope="session")
def mnist_splits(tmp_path_factory, mnist_dir) -> Path:
    """data/mnist-style split files (train/val/test npz) written from the real IDX files, once."""
    from multidigit import mnist
    from multidigit.params import load_params

    params = load_params(ROOT / "params.yaml")
    arrays = mnist.load_mnist_arrays(params.mnist.model_copy(update={"dir": str(mnist_dir)}))
    out = tmp_path_factory.mktemp("mnist") / "mnist"
    mnist.write_splits(arrays, out, params.mnist.val_size, params.seed)
    return out


@pytest.fixture(scope="session")
def drawn_root(tmp_path_factory, mnist_splits) -> Path:
    """A canvases folder holding one shard of params.yaml's stage-3 drawn split (benchmarks/drawn_page.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import drawn_page

    root = tmp_path_factory.mktemp("canvases")
    drawn_page.make_drawn_split(root, mnist_splits, ROOT / "params.yaml", max_shards=1)
    return root


def generate_workspace(tmp_path: Path, mnist_splits: Path, monkeypatch, stage: str, **generate) -> tuple:
    """A cwd for generator-flow tests: data/mnist (linked) and params.yaml's dict with `stage` at
    40/20/20 canvases and 20 of the drawn split, shards of 20, `generate` keys set; returns (cwd, dict)."""
    from multidigit.params import validate_params

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(mnist_splits, target_is_directory=True)
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["generate"].update(shard_size=20, workers=2, **generate)
    data["generate"]["stages"][stage]["canvases"] = {"train": 40, "val": 20, "test": 20, "drawn": 20}
    validate_params(data)
    monkeypatch.chdir(tmp_path)
    return tmp_path, data


@pytest.fixture(scope="module")
def prefect_harness():
    """A temporary Prefect server for a module's in-process flow tests (module-scoped: its settings must
    not leak into tests of the no-server fallback)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
