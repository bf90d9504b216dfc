"""MNIST stage: digest checks, atomic writes, a deterministic disjoint validation split."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import numpy as np
import pytest

from multidigit import mnist
from multidigit.atomic import atomic_path, save_npz
from multidigit.params import load_params
from tests.conftest import ROOT, pipeline_env


@pytest.fixture(scope="module")
def arrays(mnist_dir):
    params = load_params(ROOT / "params.yaml").mnist.model_copy(update={"dir": str(mnist_dir)})
    return mnist.load_mnist_arrays(params)


def test_shapes_and_label_counts(arrays):
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert arrays["test_images"].shape == (10000, 28, 28)
    assert np.bincount(arrays["test_labels"]).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_corrupted_byte_is_rejected_by_digest(mnist_dir, tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress((mnist_dir / name).read_bytes()))
    raw[100] ^= 0x01
    with pytest.raises(mnist.DigestError) as info:
        mnist.verified_bytes(name, gzip.compress(bytes(raw)))
    message = str(info.value)
    assert name in message
    assert mnist.MNIST_FILES[name] in message  # expected digest
    assert "got " in message and len(message.split("got ")[1]) == 64  # actual digest


def test_corrupted_folder_fails_the_stage(mnist_dir, tmp_path):
    bad = tmp_path / "mnist"
    shutil.copytree(mnist_dir, bad)
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01nonsense"))
    params = load_params(ROOT / "params.yaml").mnist.model_copy(update={"dir": str(bad)})
    with pytest.raises(mnist.DigestError, match=r"train-labels-idx1-ubyte\.gz: sha256 mismatch"):
        mnist.load_mnist_arrays(params)


def test_failed_write_leaves_no_output(tmp_path):
    target = tmp_path / "out" / "arrays.npz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of a file")
        raise RuntimeError("disk full")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_failed_write_keeps_the_previous_output(tmp_path):
    target = tmp_path / "arrays.npz"
    save_npz(target, x=np.arange(3))
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    with np.load(target) as f:
        assert f["x"].tolist() == [0, 1, 2]


def test_val_split_is_disjoint_and_deterministic(arrays):
    images, labels = arrays["train_images"], arrays["train_labels"]
    train_a, val_a = mnist.split_train_val(images, labels, 5000, seed=7)
    train_b, val_b = mnist.split_train_val(images, labels, 5000, seed=7)
    assert np.array_equal(train_a, train_b) and np.array_equal(val_a, val_b)
    assert len(val_a) == 5000 and len(train_a) == 55000
    assert not set(train_a.tolist()) & set(val_a.tolist())
    _, val_other = mnist.split_train_val(images, labels, 5000, seed=8)
    assert not np.array_equal(val_a, val_other)


def test_written_splits_round_trip(arrays, tmp_path):
    counts = mnist.write_splits(arrays, tmp_path / "mnist", val_size=1000, seed=3)
    assert counts == {"train": 59000, "val": 1000, "test": 10000}
    images, labels = mnist.read_split("test", tmp_path / "mnist")
    assert np.array_equal(images, arrays["test_images"])
    assert np.array_equal(labels, arrays["test_labels"])


@pytest.mark.slow
def test_mnist_stage_runs_through_dvc_repro(repo_copy, mnist_dir):
    env = pipeline_env(mnist_dir)
    run = subprocess.run(["dvc", "repro", "mnist"], cwd=repo_copy, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr + run.stdout
    for split, n in (("train", 55000), ("val", 5000), ("test", 10000)):
        with np.load(repo_copy / "data" / "mnist" / f"{split}.npz") as f:
            assert len(f["labels"]) == n
    status = subprocess.run(
        ["dvc", "status", "mnist"], cwd=repo_copy, env=env, capture_output=True, text=True
    )
    assert status.returncode == 0
    assert "up to date" in status.stdout.lower() or status.stdout.strip() == ""
