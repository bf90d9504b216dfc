"""MNIST: find or download the four IDX files, verify their digests, split, write npz.

The DVC stage `mnist` runs `main()`; everything else calls `load_mnist_arrays` or `read_split`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from multidigit.atomic import atomic_path, save_npz
from multidigit.constants import DEFAULT_MNIST_DIR, DIGIT_SIZE, MNIST_FILES, MNIST_OUT
from multidigit.params import MnistParams

SPLIT_FILES = {"train": "train.npz", "val": "val.npz", "test": "test.npz"}


class DigestError(ValueError):
    """A file's decompressed bytes do not have the published sha256."""


def resolve_mnist_dir(configured: str | None) -> Path | None:
    """The local folder to read, or None when the files must be downloaded.

    Order: params `mnist.dir`, then $MNIST_DIR, then ../shared/data/mnist when it exists.
    """
    for candidate in (configured, os.environ.get("MNIST_DIR")):
        if candidate:
            path = Path(candidate)
            if not path.is_dir():
                raise FileNotFoundError(f"MNIST folder {path} does not exist")
            return path
    return DEFAULT_MNIST_DIR if DEFAULT_MNIST_DIR.is_dir() else None


def verified_bytes(name: str, gz_bytes: bytes) -> bytes:
    """Decompress one IDX .gz payload and check its sha256 against the published digest."""
    try:
        raw = gzip.decompress(gz_bytes)
    except (OSError, EOFError) as exc:
        raise DigestError(f"{name}: not a valid gzip file ({exc})") from None
    actual = hashlib.sha256(raw).hexdigest()
    expected = MNIST_FILES[name]
    if actual != expected:
        raise DigestError(f"{name}: sha256 mismatch, expected {expected}, got {actual}")
    return raw


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
            while chunk := resp.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def fetch_file(name: str, params: MnistParams) -> bytes:
    """Download one file from the first mirror that serves bytes with the right digest."""
    errors = []
    for mirror in params.mirrors:
        for attempt in range(params.retries + 1):
            try:
                return verified_bytes(name, _download(mirror.rstrip("/") + "/" + name, params.timeout_s))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                errors.append(f"{mirror}: {exc}")
                time.sleep(min(2**attempt, 8))
            except DigestError as exc:
                errors.append(f"{mirror}: {exc}")
                break  # a mirror serving wrong bytes will keep serving them
    raise ConnectionError(f"{name}: no mirror served it ({'; '.join(errors[-3:])})")


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Turn IDX bytes (big-endian header, uint8 payload) into an array."""
    ndim = raw[3]
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{name}: not an unsigned-byte IDX file")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{name}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def load_mnist_arrays(params: MnistParams) -> dict[str, np.ndarray]:
    """Read and verify all four files.

    Returns:
        {"train_images": (60000, 28, 28) uint8, "train_labels": (60000,) uint8,
         "test_images": (10000, 28, 28) uint8, "test_labels": (10000,) uint8}
    """
    folder = resolve_mnist_dir(params.dir)
    out = {}
    for name in MNIST_FILES:
        if folder is not None:
            path = folder / name
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing from the MNIST folder")
            raw = verified_bytes(name, path.read_bytes())
        else:
            raw = fetch_file(name, params)
        split = "train" if name.startswith("train") else "test"
        kind = "images" if "images" in name else "labels"
        out[f"{split}_{kind}"] = parse_idx(raw, name)
    return out


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic disjoint index sets (train, val) over MNIST train."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0xD161])).permutation(len(labels))
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def write_splits(
    arrays: dict[str, np.ndarray], out_dir: Path, val_size: int, seed: int, trace: bool = False
) -> dict:
    """Write train/val/test npz files (images, labels, source indices), with `trace` each split's pen
    strokes beside it (`strokes_path`, ~15 s for all 70,000 digits on 2 cores), and return their counts."""
    train_idx, val_idx = split_train_val(arrays["train_images"], arrays["train_labels"], val_size, seed)
    splits = {
        "train": (arrays["train_images"][train_idx], arrays["train_labels"][train_idx], train_idx),
        "val": (arrays["train_images"][val_idx], arrays["train_labels"][val_idx], val_idx),
        "test": (
            arrays["test_images"],
            arrays["test_labels"],
            np.arange(len(arrays["test_labels"])),
        ),
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        for split, (images, labels, index) in splits.items():
            save_npz(tmp / SPLIT_FILES[split], images=images, labels=labels, index=index)
            if trace:
                from multidigit import stroke_cache

                stroke_cache.write_strokes(images, strokes_path(tmp / SPLIT_FILES[split]))
    return {split: len(v[1]) for split, v in splits.items()}


def read_split(split: str, data_dir: str | Path = MNIST_OUT) -> tuple[np.ndarray, np.ndarray]:
    """Load one written split: (N, 28, 28) uint8 images and (N,) uint8 labels."""
    path = Path(data_dir) / SPLIT_FILES[split]
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `dvc repro mnist` first")
    with np.load(path) as f:
        images, labels = f["images"], f["labels"]
    if images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"{path}: images have shape {images.shape}, expected (N, 28, 28)")
    traced = strokes_path(path)
    if traced.is_file():  # re-stroking reads the traced strokes instead of tracing again
        from multidigit import stroke_cache

        stroke_cache.attach(images, traced)
    return images, labels


def strokes_path(split_path: Path) -> Path:
    """data/mnist/train.npz -> data/mnist/train-strokes.npz: the split's pen strokes (`stroke_cache`)."""
    return split_path.with_name(f"{split_path.stem}-strokes.npz")


def main(params: str | Path, out_dir: str | Path = MNIST_OUT) -> None:
    """DVC stage `mnist`: verify the IDX files, write data/mnist/{train,val,test}.npz and their strokes."""
    from multidigit.params import load_params

    cfg = load_params(params)
    arrays = load_mnist_arrays(cfg.mnist)
    counts = write_splits(arrays, Path(out_dir), cfg.mnist.val_size, cfg.seed, trace=True)
    print(f"mnist: wrote {out_dir} " + ", ".join(f"{k}={v}" for k, v in counts.items()))
