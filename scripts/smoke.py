"""Run the whole pipeline on small params in a throwaway workspace: `python scripts/smoke.py [DEST]`.

The workspace is a copy of the files a clone would hold, with params.smoke.yaml merged over params.yaml,
so a newcomer (and the test suite) sees every stage work in minutes without touching this checkout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `overrides` into a copy of `base`; an override key must exist in base."""
    out = dict(base)
    for key, value in overrides.items():
        if key not in base:
            raise KeyError(f"params.smoke.yaml: {key} is not a key of params.yaml")
        out[key] = merge(base[key], value) if isinstance(value, dict) else value
    return out


def clone_files() -> list[str]:
    """Files git tracks plus untracked files it does not ignore: what a fresh clone would hold."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [rel for rel in listing.splitlines() if (ROOT / rel).is_file()]


def make_workspace(dest: Path, *, smoke: bool = True) -> Path:
    """Copy the checkout into `dest` as a fresh git repo, with smoke params merged in when asked."""
    for rel in clone_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    if smoke:
        base = yaml.safe_load((ROOT / "params.yaml").read_text())
        overrides = yaml.safe_load((ROOT / "params.smoke.yaml").read_text())
        (dest / "params.yaml").write_text(yaml.safe_dump(merge(base, overrides), sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    return dest


def workspace_env() -> dict[str, str]:
    """Environment for a workspace run: this venv first, MNIST from the checkout's default folder."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    default_mnist = ROOT.parent / "shared" / "data" / "mnist"
    if "MNIST_DIR" not in env and default_mnist.is_dir():
        env["MNIST_DIR"] = str(default_mnist)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", default=str(ROOT / ".smoke"), help="workspace folder")
    args = parser.parse_args()
    dest = Path(args.dest).resolve()
    if dest.exists():
        shutil.rmtree(dest)
    make_workspace(dest)
    print(f"smoke workspace: {dest}", flush=True)
    return subprocess.run(["dvc", "repro"], cwd=dest, env=workspace_env()).returncode


if __name__ == "__main__":
    sys.exit(main())
