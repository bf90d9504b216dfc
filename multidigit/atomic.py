"""Write outputs so that a failure never leaves a half-written file for DVC to cache."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(final: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    Args:
        final: the file or folder to produce.
        is_dir: yield an empty temporary folder instead of a file name.
    Yields:
        The temporary path to write to.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target, so the rename stays on one filesystem and is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp if is_dir else tmp / final.name
    try:
        yield target
        if is_dir:
            target.chmod(0o755)  # mkdtemp makes 0700 folders
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write compressed arrays atomically (np.savez_compressed through a temp file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def save_json(path: str | Path, data: Any) -> None:
    """Write indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
