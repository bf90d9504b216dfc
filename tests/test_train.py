"""multidigit/train.py, pretrain.py, data_pipeline.py: targets fed, a short run learns, stages resume."""

from __future__ import annotations

import csv
import os
import sys

import numpy as np
import pytest

from multidigit.canvas import read_canvases
from multidigit.params import validate_params

N_TRAIN, N_VAL = 320, 64


def _canvases(digits: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> dict:
    """n canvases with 1-2 MNIST digits each at random non-overlapping spots, tight xywh boxes."""
    images = np.zeros((n, 100, 100), np.uint8)
    boxes, out_labels = np.zeros((n, 2, 4), np.float32), np.full((n, 2), -1, np.int16)
    for i in range(n):
        for k, (x0, y0) in enumerate(
            [(rng.integers(0, 22), rng.integers(0, 72)), (rng.integers(50, 72), rng.integers(0, 72))]
        ):
            if k == 1 and rng.random() < 0.5:
                break
            j = rng.integers(len(digits))
            images[i, y0 : y0 + 28, x0 : x0 + 28] = digits[j]
            ys, xs = np.nonzero(digits[j])
            boxes[i, k] = [x0 + xs.min(), y0 + ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            out_labels[i, k] = labels[j]
    return {"images": images, "boxes": boxes, "labels": out_labels}


@pytest.fixture(scope="module")
def canvas_root(tmp_path_factory, mnist_dir):
    """data/canvases-style shards for stage1 (train/val) from real MNIST digits."""
    from multidigit import mnist
    from multidigit.params import MnistParams

    arrays = mnist.load_mnist_arrays(MnistParams(dir=str(mnist_dir), mirrors=["unused"]))
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("canvases")
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        (root / "stage1" / split).mkdir(parents=True)
        np.savez(
            root / "stage1" / split / "shard-00000.npz",
            **_canvases(arrays["train_images"], arrays["train_labels"], n, rng),
        )
    return root


@pytest.fixture()
def cfg(params_dict):
    # The loop is under test, so the model is the one its loss bounds were measured on: at width 8 from
    # scratch, three epochs take ReLU6 from 17.4 to 11.2 and SiLU (the default) only to 15.2.
    # No stem either: two pretrain epochs on 2,000 digits read 0.26-0.32 with it (0.40-0.46 without).
    params_dict["model"].update(width=8, activation="relu6", stem_filters=0)
    params_dict["train"].update(batch_size=32)
    params_dict["train"]["stages"]["stage1"].update(epochs=3, lr=0.01, init="scratch")
    return validate_params(params_dict)


def test_batches_encode_every_box(canvas_root):
    from multidigit.data_pipeline import batches

    canvases = read_canvases("stage1", "val", canvas_root)
    seen = 0
    for x, targets in batches(canvases, 16, stride=4, boxes_per_cell=1, rng=np.random.default_rng(0)):
        assert x.shape[1:] == (100, 100, 1) and x.dtype == np.float32 and x.max() <= 1.0
        seen += int(targets[..., 0].sum())
    assert seen == int((canvases.labels >= 0).sum())


@pytest.mark.slow
def test_short_training_lowers_the_loss(cfg, canvas_root, tmp_path):
    import keras

    from multidigit import train
    from multidigit.data_pipeline import make_dataset

    val = read_canvases("stage1", "val", canvas_root)
    keras.utils.set_random_seed(cfg.seed)  # the same seed train_stage uses for stage1's init
    fresh = train.initial_detector(cfg, "scratch", None)
    train.compile_detector(fresh, cfg, cfg.train.stages["stage1"], steps=10)
    dataset = make_dataset(val, 32, 4, 1, prefetch=2)
    before = fresh.evaluate(dataset, verbose=0, return_dict=True)["loss"]

    (tmp_path / "work").mkdir()
    result = train.train_stage(cfg, "stage1", tmp_path / "work", models_dir=tmp_path, canvas_root=canvas_root)
    train.compile_detector(result.detector, cfg, cfg.train.stages["stage1"], steps=10)
    after = result.detector.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert after < 0.8 * before  # measured: 17.4 -> 11.2 on 320 canvases, 3 epochs, width 8
    assert result.info["epochs_run"] == 3 and result.info["train_canvases"] == N_TRAIN

    info = train.write_stage(result, tmp_path / "work", tmp_path / "stage1", wall_seconds=1.0)
    history = (tmp_path / "stage1" / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 4
    assert (tmp_path / "stage1" / "learning_curves.png").stat().st_size > 0
    assert info["size_bytes"] == (tmp_path / "stage1" / "detector.keras").stat().st_size
    assert info["params"] > 0 and info["macs"] > 0


def test_the_fit_reads_only_the_first_val_canvases_it_is_given(params_dict, canvas_root, tmp_path):
    import keras

    from multidigit import train
    from multidigit.data_pipeline import make_dataset, subset

    params_dict["model"].update(width=8, activation="relu6")
    stage = params_dict["train"]["stages"]["stage1"]
    stage.update(epochs=1, lr=0.01, init="scratch", val_canvases=N_VAL // 4)
    cfg = validate_params(params_dict)
    (tmp_path / "work").mkdir()
    result = train.train_stage(cfg, "stage1", tmp_path / "work", models_dir=tmp_path, canvas_root=canvas_root)
    assert result.info["val_canvases"] == N_VAL // 4
    with open(tmp_path / "work" / train.HISTORY_FILE) as fh:
        logged = float(next(csv.DictReader(fh))["val_loss"])
    train.compile_detector(result.detector, cfg, cfg.train.stages["stage1"], steps=10)
    val = read_canvases("stage1", "val", canvas_root)

    def loss(canvases) -> float:
        dataset = make_dataset(canvases, 32, 4, 1, prefetch=2, neighbours=cfg.train.neighbour_cells)
        return result.detector.evaluate(dataset, verbose=0, return_dict=True)["loss"]

    # one epoch: the detector is that epoch's, so its loss on the first canvases is the logged val loss
    first, whole = loss(subset(val, N_VAL // 4)), loss(val)
    assert logged == pytest.approx(first, rel=1e-4)
    assert abs(whole - first) > 1e-2 * first  # and the whole split would have logged another
    keras.backend.clear_session()


@pytest.mark.slow
def test_mixed_precision_stage_trains_in_bfloat16_and_saves_float32(cfg, canvas_root, tmp_path, monkeypatch):
    import keras

    from multidigit import train
    from multidigit.data_pipeline import make_dataset

    seen, fit = [], train.fit_stage

    def spy(run_cfg, stage, detector, *args, **kwargs):
        seen.append(detector.get_layer("backbone").get_layer("down0_conv").compute_dtype)
        return fit(run_cfg, stage, detector, *args, **kwargs)

    monkeypatch.setattr(train, "fit_stage", spy)
    mixed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": "mixed_bfloat16"})})
    dataset = make_dataset(read_canvases("stage1", "val", canvas_root), 32, 4, 1, prefetch=2)
    keras.utils.set_random_seed(cfg.seed)
    untrained = train.initial_detector(cfg, "scratch", None)
    train.compile_detector(untrained, cfg, cfg.train.stages["stage1"], steps=10)
    before = untrained.evaluate(dataset, verbose=0, return_dict=True)["loss"]

    work = tmp_path / "work"
    work.mkdir()
    result = train.train_stage(mixed, "stage1", work, models_dir=tmp_path, canvas_root=canvas_root)
    assert seen == ["bfloat16"] and keras.mixed_precision.global_policy().name == "float32"
    train.write_stage(result, work, tmp_path / "stage1", wall_seconds=1.0)
    saved = keras.saving.load_model(tmp_path / "stage1" / "detector.keras", compile=False)
    layers = [*saved.layers, *saved.get_layer("backbone").layers]
    assert {layer.dtype_policy.name for layer in layers} == {"float32"}
    train.compile_detector(saved, cfg, cfg.train.stages["stage1"], steps=10)
    after = saved.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert after < 0.8 * before  # as the float32 test: a bfloat16 fit still learns


def test_stage_resumes_from_previous_detector(cfg, tmp_path):
    from multidigit import train
    from multidigit.model import build_detector

    previous = build_detector(cfg.model)
    previous.get_layer("predict").bias.assign(np.arange(15, dtype=np.float32))  # unlike a fresh init
    (tmp_path / "stage1").mkdir()
    previous.save(tmp_path / "stage1" / "detector.keras")
    stage2 = cfg.train.stages["stage2"]
    path = train.init_source("stage2", stage2, tmp_path)
    resumed = train.initial_detector(cfg, stage2.init, path)
    for a, b in zip(previous.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stage1_loads_pretrained_backbone(cfg, tmp_path):
    from multidigit import pretrain, train
    from multidigit.model import BACKBONE_NAME

    cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"source": "none"})})
    pretrain.run(cfg, tmp_path / "pretrain")
    stage1 = cfg.train.stages["stage1"].model_copy(update={"init": "pretrained"})
    path = train.init_source("stage1", stage1, tmp_path)
    import keras

    saved = keras.saving.load_model(path, compile=False)
    detector = train.initial_detector(cfg, "pretrained", path)
    for a, b in zip(saved.get_weights(), detector.get_layer(BACKBONE_NAME).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_init_source_errors(cfg, tmp_path):
    from multidigit import train

    stage1 = cfg.train.stages["stage1"]
    with pytest.raises(ValueError, match="no earlier stage"):
        train.init_source("stage1", stage1.model_copy(update={"init": "previous"}), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"stage2/detector\.keras.*dvc repro train@stage2"):
        train.init_source("stage3", cfg.train.stages["stage3"], tmp_path)
    assert train.init_source("stage1", stage1, tmp_path) is None  # scratch


def test_canvas_crops_are_centred(canvas_root):
    from multidigit.pretrain import PATCH_SIZE, canvas_crops, pad_digits

    c = read_canvases("stage1", "val", canvas_root)
    crops, labels = canvas_crops(c.images, c.boxes, c.labels)
    assert crops.shape == (int((c.labels >= 0).sum()), PATCH_SIZE, PATCH_SIZE)
    ys, xs = np.nonzero(crops[0])
    assert abs((xs.min() + xs.max()) / 2 - PATCH_SIZE / 2) <= 1.5
    assert abs((ys.min() + ys.max()) / 2 - PATCH_SIZE / 2) <= 1.5
    np.testing.assert_array_equal(labels[:1], c.labels[0, :1])
    padded = pad_digits(np.full((50, 28, 28), 255, np.uint8), np.random.default_rng(0))
    assert padded.shape == (50, PATCH_SIZE, PATCH_SIZE) and (padded.sum(axis=(1, 2)) == 255 * 28 * 28).all()


@pytest.mark.slow
@pytest.mark.parametrize("numerics", ["float32", "mixed_bfloat16"])
def test_pretrain_learns_digits(cfg, tmp_path, mnist_dir, numerics):
    from multidigit import mnist
    from multidigit.params import MnistParams
    from multidigit.pretrain import pad_digits, pretrain_backbone

    arrays = mnist.load_mnist_arrays(MnistParams(dir=str(mnist_dir), mirrors=["unused"]))
    rng = np.random.default_rng(0)
    x, y = arrays["train_images"], arrays["train_labels"]
    data = {
        "x_train": pad_digits(x[:2000], rng),
        "y_train": y[:2000],
        "x_val": pad_digits(x[-500:], rng),
        "y_val": y[-500:],
    }
    params = cfg.pretrain.model_copy(update={"epochs": 2, "lr": 0.005})
    backbone, info = pretrain_backbone(cfg.model, params, cfg.seed, data, numerics)
    assert info["val_accuracy"] > 0.3  # chance is 0.1; measured 0.52 (2000 digits, 2 epochs, width 8)
    assert {layer.dtype_policy.name for layer in backbone.layers} == {"float32"}  # what pretrain saves


# ---------------------------------------------------------------- train-time canvases (multidigit/fresh.py)
@pytest.fixture()
def fresh_cfg(params_dict):
    """Stage 3 with small chunks, a written share and fresh epochs."""
    params_dict["generate"]["shard_size"] = 8
    params_dict["train"]["stages"]["stage3"].update(epochs=3, written=0.25, fresh=True)
    return validate_params(params_dict)


@pytest.fixture(scope="module")
def train_digits(mnist_splits):
    from multidigit.mnist import read_split

    images, labels = read_split("train", mnist_splits)
    return images[:2000], labels[:2000]


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("images", "boxes", "labels"))


def test_fresh_epochs_are_deterministic_and_new(fresh_cfg, train_digits):
    from multidigit import fresh
    from multidigit.canvas import make_shard, shard_seed

    sizes = fresh.chunk_sizes(8, 8, 0.25)[0]
    assert sizes == (6, 2)
    one = fresh.epoch_chunk(fresh_cfg, "stage3", train_digits, 1, 0, sizes)
    assert len(one) == 8 and one.labels.shape[1] == 10
    assert (one.labels[6:] >= 0).sum(1).max() <= fresh_cfg.generate.drawn.digits[1]  # the written tail
    assert _same(one, fresh.epoch_chunk(fresh_cfg, "stage3", train_digits, 1, 0, sizes))
    assert not np.array_equal(
        one.images, fresh.epoch_chunk(fresh_cfg, "stage3", train_digits, 2, 0, sizes).images
    )
    assert not np.array_equal(
        one.images, fresh.epoch_chunk(fresh_cfg, "stage3", train_digits, 1, 1, sizes).images
    )
    gen = fresh_cfg.generate
    on_disk = make_shard(
        *train_digits, 6, gen, gen.stages["stage3"], shard_seed(fresh_cfg.seed, "stage3", "train", 0)
    )
    assert not np.array_equal(one.images[:6], on_disk.images)  # epoch 1 is not the shard file's canvases


def test_written_share_swaps_in_layouts_of_the_given_digits(fresh_cfg, train_digits):
    from multidigit import fresh
    from multidigit.canvas import Canvases

    images, labels = train_digits
    sevens = (images[labels == 7], labels[labels == 7])
    fixed = Canvases(np.zeros((16, 100, 100), np.uint8), np.zeros((16, 3, 4), np.float32),
                     np.full((16, 3), -1, np.int16))  # fmt: skip
    first = fresh.first_epoch(fresh_cfg, "stage3", fixed, sevens)
    assert len(first) == 16 and first.labels.shape[1] == 10  # padded to the stage's 10 slots
    assert first.images[:12].max() == 0 and (first.images[12:].reshape(4, -1).max(1) > 0).all()
    assert set(np.unique(first.labels[12:])) == {-1, 7}  # only the digits passed in
    boxes, valid = first.boxes[12:], first.labels[12:] >= 0
    assert (boxes[valid][:, 2:] > 0).all() and (boxes[valid][:, :2] + boxes[valid][:, 2:] <= 100).all()
    with pytest.raises(ValueError, match="written"):
        fresh.first_epoch(fresh_cfg, "stage3", fixed, None)


def test_stage_digits_are_the_train_split_only(fresh_cfg, mnist_splits):
    from multidigit import train
    from multidigit.mnist import read_split

    images, labels = train.stage_digits(fresh_cfg.train.stages["stage3"], mnist_splits)
    assert np.array_equal(images, read_split("train", mnist_splits)[0])
    assert np.array_equal(labels, read_split("train", mnist_splits)[1])
    assert train.stage_digits(fresh_cfg.train.stages["stage1"], mnist_splits) is None


def test_fresh_dataset_reads_each_epoch_once_in_order(fresh_cfg, train_digits):
    from multidigit import fresh
    from multidigit.data_pipeline import batches, training_dataset

    first = fresh.epoch_chunk(fresh_cfg, "stage3", train_digits, 0, 0, (14, 6))  # any 20 canvases
    passes = []
    for _ in range(2):  # the same seed gives the same batches
        feed = fresh.FreshFeed(fresh_cfg, "stage3", train_digits, len(first), epochs=3)
        dataset, steps = training_dataset(first, feed, 16, 4, 1, prefetch=2, seed=5, epochs=3)
        xs = [x.numpy() for x, _ in dataset]  # the 3 passes end to end, then the dataset ends
        passes.append([xs[i : i + steps] for i in range(0, len(xs), steps)])
        feed.close()
    assert steps == 2 and len(passes[0]) == 3
    assert [len(p) for p in passes[0]] == [2, 2, 2]  # ceil(20 / 16) batches per pass, chunks of 8 or not
    assert [len(b) for b in passes[0][1]] == [16, 4]
    expected = [x for x, _ in batches(first, 16, 4, 1, np.random.default_rng(5))]
    assert all(np.array_equal(a, b) for a, b in zip(passes[0][0], expected, strict=True))  # pass 0: `first`
    for a, b in zip(passes[0], passes[1], strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    pass1 = np.sort(np.concatenate(passes[0][1]).reshape(20, -1).sum(1))
    chunks = [fresh.epoch_chunk(fresh_cfg, "stage3", train_digits, 1, i, s) for i, s in enumerate(feed.sizes)]
    made = np.sort(np.concatenate([c.images for c in chunks]).reshape(20, -1).sum(1) / 255.0)
    assert np.allclose(pass1, made, atol=1e-3)  # pass 1 holds exactly epoch 1's generated canvases


def test_a_closed_feed_ends_its_epochs_instead_of_waiting(fresh_cfg, train_digits):
    from multidigit import fresh

    # the input pipeline reads ahead past an early stop; that read must end, not wait forever
    feed = fresh.FreshFeed(fresh_cfg, "stage3", train_digits, 20, epochs=2)
    feed.close()
    assert list(feed.chunks(1)) == []


@pytest.mark.slow
def test_fit_stage_trains_on_fresh_epochs(fresh_cfg, train_digits, tmp_path):
    import keras

    from multidigit import fresh, train

    cfg = fresh_cfg.model_copy(update={"model": fresh_cfg.model.model_copy(update={"width": 8})})
    data = fresh.epoch_chunk(cfg, "stage3", train_digits, 0, 0, (24, 8))
    keras.utils.set_random_seed(cfg.seed)
    detector = train.initial_detector(cfg, "scratch", None)
    epochs = train.fit_stage(cfg, "stage3", detector, data, data, tmp_path, verbose=0, digits=train_digits)
    assert epochs == 3
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 4


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
def test_producer_thread_runs_niced_and_the_trainer_keeps_its_priority():
    import threading

    from multidigit import fresh

    seen = {}

    def producer():
        fresh.lower_priority(fresh.PRODUCER_NICE)
        seen["producer"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=producer)
    thread.start()
    thread.join()
    assert seen["producer"] == min(before + fresh.PRODUCER_NICE, 19)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
