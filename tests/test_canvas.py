"""multidigit/canvas.py, multidigit/augment.py and multidigit/drawn.py: determinism, tight boxes, overlap
limits, counts, class balance, split sources, re-sampling, re-stroking, the drawn split, shard files,
manifest and readers."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from multidigit import augment, canvas, drawn, stroke_cache, strokes
from multidigit.mnist import read_split
from multidigit.params import ParamsError, validate_params
from tests.conftest import ROOT

# Class shares of generated digits must match the MNIST split's within this many share points
# (absolute); with ~4000 digits one standard deviation is about 0.005.
CLASS_SHARE_TOLERANCE = 0.025


def small_params(params_dict: dict, per_split: int = 40, shard_size: int = 20):
    """The repo params with every stage cut to `per_split` canvases per split."""
    params_dict["generate"]["shard_size"] = shard_size
    for stage in params_dict["generate"]["stages"].values():
        stage["canvases"] = {"train": per_split, "val": per_split // 2, "test": per_split // 2}
    return validate_params(params_dict)


def restroked_crops(*args) -> list[np.ndarray]:
    """`augment.restroked_packed`'s crops as arrays."""
    return augment.unpack_crops(*augment.restroked_packed(*args))


@pytest.fixture(scope="module")
def train_digits(mnist_splits):
    return read_split("train", mnist_splits)


@pytest.fixture(scope="module")
def cfg():
    return validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


def make(cfg, digits, stage: str, n: int, index: int = 0) -> canvas.Shard:
    seed = canvas.shard_seed(cfg.seed, stage, "train", index)
    return canvas.make_shard(*digits, n, cfg.generate, cfg.generate.stages[stage], seed)


def boxes_of(shard: canvas.Shard, i: int) -> np.ndarray:
    return shard.boxes[i][shard.labels[i] >= 0].astype(int)


def intersection(a: np.ndarray, b: np.ndarray) -> int:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def box_mask(box: np.ndarray, size: int = 100) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    x, y, w, h = box
    mask[y : y + h, x : x + w] = True
    return mask


# ---------------------------------------------------------------- determinism
def test_same_seed_same_bytes_and_other_shards_differ(cfg, train_digits):
    a, b = make(cfg, train_digits, "stage3", 30), make(cfg, train_digits, "stage3", 30)
    c = make(cfg, train_digits, "stage3", 30, index=1)
    for key in ("images", "boxes", "labels"):
        assert getattr(a, key).tobytes() == getattr(b, key).tobytes()
    assert not np.array_equal(a.images, c.images)


def test_keras_augmentation_is_seeded(train_digits, cfg):
    digits = train_digits[0][:64]
    first = augment.augment_digits(augment.build_augmenter(cfg.generate.augment, (1, 2, 3)), digits)
    again = augment.augment_digits(augment.build_augmenter(cfg.generate.augment, (1, 2, 3)), digits)
    other = augment.augment_digits(augment.build_augmenter(cfg.generate.augment, (4, 5, 6)), digits)
    assert first.tobytes() == again.tobytes()
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, digits.astype(np.float32))  # it did transform the digits


def test_shard_augmenter_draws_what_a_new_augmenter_draws(cfg):
    # make_shard re-seeds one cached augmenter per thread and draws through its traced graph; every draw
    # must equal a newly built augmenter's eager draws, whatever shards came before in that thread.
    params = cfg.generate.augment
    for seeds in ((1, 2, 3), (4, 5, 6), (1, 2, 3)):
        cached, new = augment.shard_augmenter(params, seeds), augment.build_augmenter(params, seeds)
        assert hasattr(cached, "graph_draws") and not hasattr(new, "graph_draws")
        for n in (500, 7, 1, 500):
            drawn, fresh = augment.random_transforms(cached, n), augment.random_transforms(new, n)
            assert drawn.tobytes() == fresh.tobytes()
    assert augment.shard_augmenter(params, (9, 9, 9)) is cached  # built once per thread and params


def test_compiled_resampling_equals_tensorflows_kernel(train_digits, cfg):
    # warp_digits resamples with a compiled copy of TensorFlow's ImageProjectiveTransformV3 (bilinear,
    # fill 0); shard bytes depend on it giving the kernel's float32 results exactly, at every scale.
    import keras

    digits = train_digits[0][:48]
    transforms = augment.random_transforms(augment.build_augmenter(cfg.generate.augment, (7, 8, 9)), 48)
    for scales in (np.ones(48), np.random.default_rng(2).uniform(0.6, 3.2, 48)):
        ours = augment.warp_digits(digits, transforms, scales)
        pad = (ours.shape[1] - 28) // 2
        frame = np.zeros((48, ours.shape[1], ours.shape[2], 1), np.float32)
        frame[:, pad : pad + 28, pad : pad + 28, 0] = digits
        flat = augment._frame_transforms(transforms, scales, pad)
        theirs = keras.ops.image.affine_transform(frame, flat, "bilinear", "constant", 0.0)
        assert ours.tobytes() == np.asarray(theirs)[..., 0].tobytes()


def test_scaled_crops_equal_the_whole_frames_cropped_tight(train_digits, cfg):
    # scaled_crops resamples each digit only over the output window that can sample its ink; the crops
    # must be those of the whole frames (checked against TensorFlow above), rounded, dust zeroed, cropped.
    rng = np.random.default_rng(4)
    wild = cfg.generate.augment.model_copy(update={"rotate_deg": 180.0, "zoom": 0.3, "translate": 0.2})
    for seeds, dtype in (((1, 2, 3), np.uint8), ((4, 5, 6), np.float32)):
        digits = train_digits[0][rng.integers(0, len(train_digits[0]), 120)].astype(dtype)
        digits[:3] = 0  # empty digits crop to (0, 0)
        for d in digits[3:40]:  # solid blocks: ink in the corners of its box, where the window is tightest
            d[:] = 0
            (r0, r1), (c0, c1) = (
                np.sort(rng.choice(29, 2, replace=False)),
                np.sort(rng.choice(29, 2, replace=False)),
            )
            d[r0:r1, c0:c1] = 255
        transforms = augment.random_transforms(augment.build_augmenter(wild, seeds), len(digits))
        scales = rng.uniform(0.3, 4.0, len(digits))
        pixels = np.clip(np.rint(augment.warp_digits(digits, transforms, scales)), 0, 255).astype(np.uint8)
        pixels[pixels < augment.DUST_LEVEL] = 0
        crops = augment.scaled_crops(digits, scales, transforms)
        for crop, image, (x0, y0, x1, y1) in zip(crops, pixels, augment.tight_bounds(pixels), strict=True):
            assert crop.tobytes() == image[y0:y1, x0:x1].tobytes() and crop.shape == (y1 - y0, x1 - x0)
        assert sum(c.size == 0 for c in crops) >= 3
        # both ways of reading are checked: from the copy in a zero border, and with bounds checks where a
        # read could land outside it (big shifts, zooms out, ink at the edge)
        frames, flat, pad, frame = augment._warp_args(digits, transforms, scales)
        inside = [
            augment._reads_inside(flat[b], pad, augment._ink_window(frames[b], flat[b], pad, frame), 28, 28)
            for b in range(len(frames))
        ]
        assert 10 <= sum(inside) <= len(inside) - 10


def test_one_worker_and_two_workers_write_identical_shards(params_dict, mnist_splits, tmp_path):
    cfg = small_params(params_dict, per_split=40, shard_size=20)
    specs = canvas.plan_shards(cfg.generate, "stage2")
    serial = [canvas.generate_shard(cfg, s, tmp_path / "one", mnist_splits) for s in specs]
    with ThreadPoolExecutor(max_workers=2) as pool:  # reversed order, two at once
        parallel = list(
            pool.map(lambda s: canvas.generate_shard(cfg, s, tmp_path / "two", mnist_splits), specs[::-1])
        )
    assert len(specs) == 4  # 2 train + 1 val + 1 test shards
    for spec in specs:
        one = (tmp_path / "one" / spec.relpath).read_bytes()
        assert one == (tmp_path / "two" / spec.relpath).read_bytes(), spec
    assert sorted(r["sha256"] for r in serial) == sorted(r["sha256"] for r in parallel)


# ---------------------------------------------------------------- geometry
@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_every_box_is_tight_and_counts_within_range(cfg, train_digits, stage):
    shard = make(cfg, train_digits, stage, 60)
    lo, hi = cfg.generate.stages[stage].digits
    counts = (shard.labels >= 0).sum(axis=1)
    assert counts.min() >= lo and counts.max() <= hi
    assert np.all(shard.boxes[shard.labels < 0] == 0)
    covered = np.zeros_like(shard.images, dtype=bool)
    for i, image in enumerate(shard.images):
        for x, y, w, h in boxes_of(shard, i):
            assert x >= 0 and y >= 0 and x + w <= 100 and y + h <= 100
            patch = image[y : y + h, x : x + w] > 0
            # each edge row/column of the box holds a non-zero pixel
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
            covered[i] |= box_mask((x, y, w, h))
    assert not np.any(shard.images[~covered])  # no ink outside every box


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_boxes_never_intersect_without_overlap(cfg, train_digits, stage):
    shard = make(cfg, train_digits, stage, 80)
    for i in range(len(shard.images)):
        boxes = boxes_of(shard, i)
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                assert intersection(boxes[a], boxes[b]) == 0
        # no overlap: each box's ink is exactly its own digit, so its box is the tight box of that ink
        for x, y, w, h in boxes:
            bounds = augment.tight_bounds(shard.images[i][None, y : y + h, x : x + w])[0]
            assert tuple(bounds) == (0, 0, w, h)


def test_stage3_overlap_within_limit_and_scales_vary(cfg, train_digits):
    shard = make(cfg, train_digits, "stage3", 150)
    limit = cfg.generate.stages["stage3"].max_overlap
    worst = 0.0
    for i in range(len(shard.images)):
        masks = [box_mask(b) for b in boxes_of(shard, i)]
        for j, mask in enumerate(masks):
            others = np.logical_or.reduce([m for k, m in enumerate(masks) if k != j] or [np.zeros_like(mask)])
            worst = max(worst, (mask & others).sum() / mask.sum())
    assert 0.0 < worst <= limit  # overlap happens, and never beyond the limit
    heights = shard.boxes[..., 3][shard.labels >= 0]
    assert heights.min() < 16 and heights.max() > 35  # scale 0.6-1.8 of a ~20 px digit


def _covered(masks: list[np.ndarray], a: int) -> int:
    """Pixels of box `a` under the union of the other boxes."""
    others = [m for k, m in enumerate(masks) if k != a]
    return int((masks[a] & np.logical_or.reduce(others)).sum()) if others else 0


def _first_fit_reference(sizes, counts, side, max_overlap, attempts, rng):
    """`place_boxes`'s rule with whole-canvas masks: per canvas, boxes largest first (stable); each takes
    the first of its `attempts` drawn corners at which neither it nor any placed box has more than
    `max_overlap` of its area under the others; a canvas stops drawing at its first box without one."""
    corners, fits, start = np.zeros((len(sizes), 2), np.int64), np.zeros(len(counts), bool), 0
    for j, count in enumerate(counts):
        one = sizes[start : start + count]
        if one.min() == 0 or one.max() > side:
            start += count
            continue
        masks, fits[j] = [], True
        for i in np.argsort(-one[:, 0] * one[:, 1], kind="stable"):
            w, h = one[i]
            xs, ys = rng.integers(0, side - w + 1, attempts), rng.integers(0, side - h + 1, attempts)
            for x, y in zip(xs, ys, strict=True):
                trial = [*masks, box_mask((x, y, w, h), side)]
                if all(_covered(trial, a) <= max_overlap * trial[a].sum() + 1e-9 for a in range(len(trial))):
                    masks, corners[start + i] = trial, (x, y)
                    break
            else:
                fits[j] = False
                break
        start += count
    return corners, fits


@pytest.mark.parametrize("max_overlap", [0.0, 0.2])
def test_compiled_placement_equals_the_first_fit_rule_on_whole_masks(max_overlap):
    # sizes crowded enough that some boxes skip candidates, some build the summed-area table, some fail
    draw = np.random.default_rng(5)
    counts = draw.integers(1, 11, 120)
    sizes = draw.integers(8, 45, (counts.sum(), 2))
    sizes[3] = (0, 10)  # an empty digit: its canvas is skipped without a draw
    got = canvas.place_boxes(sizes, counts, 100, max_overlap, 50, np.random.default_rng(9))
    want = _first_fit_reference(sizes, counts, 100, max_overlap, 50, np.random.default_rng(9))
    assert 0 < got[1].sum() < len(counts)
    np.testing.assert_array_equal(got[1], want[1])
    placed = np.repeat(want[1], counts)
    np.testing.assert_array_equal(got[0][placed], want[0][placed])


def test_failed_placements_are_resampled_never_short(cfg, train_digits):
    # Ten digits of up to the stage's largest scale with no overlap allowed: some canvases cannot be laid
    # out on the first draw, whatever the tuned stage-3 params (its re-stroked crops are tighter and fit).
    crowded = cfg.generate.stages["stage3"].model_copy(update={"digits": (10, 10), "max_overlap": 0.0})
    seed = canvas.shard_seed(cfg.seed, "stage3", "train", 0)
    shard = canvas.make_shard(*train_digits, 200, cfg.generate, crowded, seed)
    assert shard.resampled > 0
    assert ((shard.labels >= 0).sum(axis=1) >= 1).all()
    assert shard.images.reshape(len(shard.images), -1).max(axis=1).min() > 0


def test_scaled_crops_are_tight_at_every_scale(train_digits):
    digits = train_digits[0][:50].astype(np.float32)
    scales = np.linspace(0.6, 1.8, 50)
    crops = augment.scaled_crops(digits, scales)
    heights = [c.shape[0] for c in crops]
    assert heights[-1] > 1.8 * heights[0] * 0.8  # the big ones really are bigger
    for crop in crops:
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


# ---------------------------------------------------------------- re-stroking
def ink_width(crop: np.ndarray) -> float:
    """Mean stroke width in pixels: ink area over skeleton length."""
    ink = crop > 127
    return ink.sum() / max(strokes.thin(ink).sum(), 1)


def test_restroke_width_follows_the_brush_not_the_digit_size(cfg, train_digits):
    digits, ids = train_digits[0], np.arange(40)
    fixed = cfg.generate.augment.model_copy(update={"brush": (12.0, 12.0, 12.0), "width_jitter": 0.0})
    widths = {}
    for scale in (1.0, 2.5):
        scales = np.full(len(ids), scale)
        redrawn = restroked_crops(digits, ids, None, scales, fixed, np.random.default_rng(0))
        zoomed = augment.scaled_crops(digits[ids], scales)
        widths[scale] = (np.mean([ink_width(c) for c in redrawn]), np.mean([ink_width(c) for c in zoomed]))
    (small_r, small_z), (big_r, big_z) = widths[1.0], widths[2.5]
    assert 0.85 < big_r / small_r < 1.15  # 12 buffer px = 3 canvas px at either size
    assert 2.9 < small_r < 3.6 and big_r == pytest.approx(3.0, abs=0.5)
    assert big_z / small_z > 1.8  # a zoomed MNIST digit's strokes grow with it
    thick = cfg.generate.augment.model_copy(update={"brush": (24.0, 24.0, 24.0), "width_jitter": 0.0})
    scales = np.full(len(ids), 2.5)
    big_brush = restroked_crops(digits, ids, None, scales, thick, np.random.default_rng(0))
    assert np.mean([ink_width(c) for c in big_brush]) > 1.7 * big_r  # ... and follows the brush


def test_restroked_digit_follows_its_keras_transform_like_the_resampled_one(cfg, train_digits):
    # A Keras matrix maps an output pixel to the input pixel it samples; re-stroking moves the strokes by
    # its inverse. Sampling x at 2x squeezes a digit to half its width, in both paths.
    digits, ids = train_digits[0], np.arange(30)
    squeeze = np.tile(np.diag([2.0, 1.0, 1.0]), (len(ids), 1, 1))
    squeeze[:, 0, 2] = -13.5  # about the digit's centre column
    thin_brush = cfg.generate.augment.model_copy(update={"brush": (4.0, 4.0, 4.0), "point_jitter": 0.0})
    scales = np.full(len(ids), 2.0)
    sizes = {}
    for name, transforms in (("plain", None), ("squeezed", squeeze)):
        crops = restroked_crops(digits, ids, transforms, scales, thin_brush, np.random.default_rng(0))
        resampled = augment.scaled_crops(digits[ids], scales, transforms)
        sizes[name] = np.array([c.shape for c in crops], float), np.array([c.shape for c in resampled], float)
    (plain_r, plain_k), (squeezed_r, squeezed_k) = sizes["plain"], sizes["squeezed"]
    wide = plain_r[:, 1] > 20  # not the 1s, whose width is mostly brush
    assert 0.4 < np.median(squeezed_r[wide, 1] / plain_r[wide, 1]) < 0.65
    assert np.median(squeezed_k[wide, 1] / plain_k[wide, 1]) == pytest.approx(
        np.median(squeezed_r[wide, 1] / plain_r[wide, 1]), abs=0.12
    )
    assert np.allclose(squeezed_r[:, 0], plain_r[:, 0], atol=3)  # heights stay


def test_restroked_patch_equals_the_pages_render_of_the_same_strokes(train_digits):
    # A re-stroked digit is painted on a small block-aligned patch, not the page's 400 x 400 buffer; its
    # ink must be the bytes render_strokes + reduce_drawing give for the same strokes on the page.
    rng = np.random.default_rng(3)
    for digit in train_digits[0][:25]:
        scale, width = rng.uniform(0.6, 2.6), rng.uniform(4, 24)
        offset = rng.uniform(16, 400 - 16 - 4 * 28 * scale, 2)  # anywhere on the page, off the block grid
        lines = [line * 4 * scale + offset for line in strokes.digit_strokes(digit)]
        widths = width * rng.uniform(0.85, 1.15, len(lines))
        patch = augment.stroke_patch(lines, widths)
        page = strokes.reduce_drawing(strokes.render_strokes(lines, widths))
        (px0, py0, px1, py1), (qx0, qy0, qx1, qy1) = (
            augment.tight_bounds(patch[None])[0],
            augment.tight_bounds(page[None])[0],
        )
        assert np.array_equal(patch[py0:py1, px0:px1], page[qy0:qy1, qx0:qx1])
        assert page.sum(dtype=np.int64) == patch.sum(dtype=np.int64)  # no ink elsewhere on the page


def test_compiled_ink_bounds_equal_tight_bounds():
    # restroked_packed crops with a compiled twin of tight_bounds (numpy's per-call cost on one small patch
    # is most of its time): the two must agree, empty patches and one-pixel ink included.
    rng = np.random.default_rng(5)
    patches = [np.zeros((7, 9), np.uint8), np.pad(np.full((1, 1), 9, np.uint8), ((3, 2), (0, 4)))]
    for _ in range(300):
        h, w = rng.integers(1, 40, 2)
        patches.append(((rng.random((h, w)) < rng.uniform(0, 0.05)) * rng.integers(1, 256)).astype(np.uint8))
    for patch in patches:
        assert augment.ink_bounds(np.ascontiguousarray(patch)) == tuple(augment.tight_bounds(patch[None])[0])


def test_restroked_stage_keeps_tight_boxes_and_its_bytes_are_seeded(cfg, train_digits):
    stage = cfg.generate.stages["stage3"].model_copy(update={"restroke": 1.0})

    def shard_of(stage):  # a fresh SeedSequence each time: spawning children advances it
        seed = canvas.shard_seed(cfg.seed, "stage3", "train", 0)
        return canvas.make_shard(*train_digits, 40, cfg.generate, stage, seed)

    shard, again = shard_of(stage), shard_of(stage)
    assert shard.images.tobytes() == again.images.tobytes() and shard.boxes.tobytes() == again.boxes.tobytes()
    plain = shard_of(stage.model_copy(update={"restroke": 0.0}))
    assert not np.array_equal(shard.images, plain.images)
    for i, image in enumerate(shard.images):
        covered = np.zeros((100, 100), bool)
        for x, y, w, h in boxes_of(shard, i):
            patch = image[y : y + h, x : x + w] > 0
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
            covered |= box_mask((x, y, w, h))
        assert not image[~covered].any()


# ---------------------------------------------------------------- the drawn split
@pytest.fixture(scope="module")
def drawn_dir(mnist_splits, tmp_path_factory) -> Path:
    """A stage-3 run with a small drawn split, written by canvas.main."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = small_params(params, per_split=20, shard_size=30)
    gen = cfg.model_dump(mode="json")
    gen["generate"]["stages"]["stage3"]["canvases"]["drawn"] = 60
    out = tmp_path_factory.mktemp("drawn")
    (out / "params.yaml").write_text(yaml.safe_dump(gen))
    canvas.main(out / "params.yaml", "stage3", out_root=out / "canvases", mnist_dir=mnist_splits)
    return out


def test_drawn_split_replays_from_its_strokes_with_tight_boxes(drawn_dir, cfg):
    data = canvas.read_canvases("stage3", "drawn", drawn_dir / "canvases")
    replay = canvas.read_strokes("stage3", "drawn", drawn_dir / "canvases")
    assert len(data) == len(replay) == 60
    lo, hi = cfg.generate.drawn.digits
    counts = (data.labels >= 0).sum(axis=1)
    assert counts.min() >= lo and counts.max() <= hi and len(set(counts)) > 3
    brushes = np.array([w for w, _ in replay])
    assert brushes.min() >= 4 and brushes.max() <= 24 and np.all(brushes == np.rint(brushes))
    for i, (brush, lines) in enumerate(replay):  # the page, replaying these strokes, sends these bytes
        rendered = strokes.reduce_drawing(strokes.render_strokes(lines, brush))
        assert np.array_equal(rendered, data.images[i])
        covered = np.zeros((100, 100), bool)
        for x, y, w, h in data.boxes[i][data.labels[i] >= 0].astype(int):
            patch = data.images[i][y : y + h, x : x + w] > 0
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
            covered |= box_mask((x, y, w, h))
        assert not data.images[i][~covered].any()
    heights = data.boxes[..., 3][data.labels >= 0]
    assert heights.max() > 40 and np.median(heights) > 15


def test_drawn_split_draws_mnist_test_digits_only(drawn_dir, mnist_splits):
    test_images, test_labels = read_split("test", mnist_splits)
    stage_dir = drawn_dir / "canvases" / "stage3" / "drawn"
    for path in sorted(stage_dir.glob("shard-*.npz")):
        with np.load(path) as f:
            source, labels, digit = f["source"], f["labels"], f["stroke_digit"]
            points, offsets, ranges = f["stroke_points"], f["stroke_offsets"], f["canvas_strokes"]
        assert np.array_equal(labels >= 0, source >= 0)
        assert np.array_equal(test_labels[source[source >= 0]], labels[labels >= 0])
        for i in range(len(labels)):  # each digit's strokes are its test digit's strokes, scaled and moved
            for slot in range(int((labels[i] >= 0).sum())):
                mine = [
                    points[offsets[s] : offsets[s + 1]]
                    for s in range(ranges[i], ranges[i + 1])
                    if digit[s] == slot
                ]
                ref = strokes.digit_strokes(test_images[source[i, slot]])
                assert [len(a) for a in mine] == [len(b) for b in ref]
                a, b = np.concatenate(mine), np.concatenate(ref)
                scale = np.ptp(a[:, 1]) / np.ptp(b[:, 1])
                assert np.allclose((a - a.min(0)) / scale, b - b.min(0), atol=1e-6)


def test_drawn_split_is_deterministic_and_leaves_other_splits_alone(drawn_dir, mnist_splits, tmp_path):
    manifest = json.loads((drawn_dir / "canvases" / "stage3" / "manifest.json").read_text())
    again = canvas.main(drawn_dir / "params.yaml", "stage3", out_root=tmp_path, mnist_dir=mnist_splits)
    assert again["splits"] == manifest["splits"]  # every shard's sha256 alike
    assert manifest["splits"]["drawn"]["canvases"] == 60 and len(manifest["splits"]["drawn"]["shards"]) == 2
    assert (drawn_dir / "canvases" / "stage3" / "test" / "shard-00000.npz").is_file()
    with pytest.raises(FileNotFoundError, match="no strokes"):
        canvas.read_strokes("stage3", "test", drawn_dir / "canvases")


def test_drawn_split_brush_is_its_own_law_not_trainings(cfg, mnist_splits):
    test_digits = read_split("test", mnist_splits)
    seed = canvas.shard_seed(cfg.seed, "stage3", "drawn", 0)

    def drawn_with(drawn_brush=None, train_brush=None):
        gen = cfg.generate
        if drawn_brush:
            gen = gen.model_copy(update={"drawn": gen.drawn.model_copy(update={"brush": drawn_brush})})
        if train_brush:
            gen = gen.model_copy(update={"augment": gen.augment.model_copy(update={"brush": train_brush})})
        return canvas.make_drawn_shard(*test_digits, 12, gen, "stage3", seed)

    base = drawn_with()
    assert np.array_equal(
        drawn_with(train_brush=(2.0, 12.0, 30.0)).images, base.images
    )  # training's law moves nothing
    thick = drawn_with(drawn_brush=(20.0, 20.0, 20.0))
    assert np.all(thick.extra["brush"] == 20.0) and not np.array_equal(thick.images, base.images)


def test_a_flag_rises_from_the_left_to_the_top_of_the_one():
    one = [np.array([[14.0, 4.0], [13.0, 24.0]])]  # a bare 1, top at (14, 4), 20 px tall
    flagged = drawn.with_flag(one, np.random.default_rng(0))
    (start, top), stem = flagged[0], flagged[1]
    assert np.array_equal(top, [14.0, 4.0]) and stem is one[0]  # written first, ending at the top
    dx, dy = top - start
    length, angle = np.hypot(dx, dy), np.degrees(np.arctan2(-dy, dx))  # y down: rising means dy < 0
    assert drawn.FLAG_LENGTH[0] * 20 <= length <= drawn.FLAG_LENGTH[1] * 20
    assert drawn.FLAG_ANGLE_DEG[0] <= angle <= drawn.FLAG_ANGLE_DEG[1]


def test_training_layouts_flag_ones_only_and_the_drawn_split_never(cfg, train_digits, mnist_splits):
    table = stroke_cache.for_split(train_digits[0])
    rng = np.random.default_rng(3)
    arrays = drawn.make_drawn(*train_digits, 30, cfg.generate.drawn, (10, 10, 10), 6, rng, flag_ones=1.0)
    counts = np.zeros(arrays["source"].shape, np.int64)  # strokes per digit slot, per canvas
    for c, (a, b) in enumerate(itertools.pairwise(arrays["canvas_strokes"])):
        np.add.at(counts[c], arrays["stroke_digit"][a:b], 1)
    used = arrays["source"] >= 0
    traced = np.array([len(lines) or 1 for lines in table.lines(arrays["source"][used])])  # no ink: a dot
    ones = arrays["labels"][used] == 1
    assert ones.sum() > 5 and np.array_equal(counts[used], traced + ones)  # one more stroke: the flag
    stages = {**cfg.train.stages, "stage3": cfg.train.stages["stage3"].model_copy(update={"flag_ones": 1.0})}
    flagged = cfg.model_copy(update={"train": cfg.train.model_copy(update={"stages": stages})})
    seed = canvas.shard_seed(cfg.seed, "stage3", "drawn", 0)
    test_digits = read_split("test", mnist_splits)
    split = [canvas.make_drawn_shard(*test_digits, 12, c.generate, "stage3", seed) for c in (cfg, flagged)]
    assert np.array_equal(split[0].images, split[1].images)  # the drawn split's 1s stay MNIST's


# ---------------------------------------------------------------- sampling
def test_class_balance_matches_mnist(cfg, train_digits):
    shard = make(cfg, train_digits, "stage2", 1000)
    labels = shard.labels[shard.labels >= 0]
    assert len(labels) > 3500
    generated = np.bincount(labels, minlength=10) / len(labels)
    source = np.bincount(train_digits[1], minlength=10) / len(train_digits[1])
    assert np.abs(generated - source).max() <= CLASS_SHARE_TOLERANCE


def test_each_split_draws_only_from_its_own_mnist_split(params_dict, mnist_splits, tmp_path):
    # a fake MNIST folder whose splits hold one class each: 1 (train), 2 (val), 3 (test)
    fake = tmp_path / "mnist"
    fake.mkdir()
    for split, cls in (("train", 1), ("val", 2), ("test", 3)):
        images, labels = read_split(split, mnist_splits)
        keep = labels == cls
        np.savez(fake / f"{split}.npz", images=images[keep], labels=labels[keep], index=np.flatnonzero(keep))
    cfg = small_params(params_dict, per_split=20, shard_size=20)
    for spec in canvas.plan_shards(cfg.generate, "stage2"):
        result = canvas.generate_shard(cfg, spec, tmp_path / "out", fake)
        expected = {"train": 1, "val": 2, "test": 3}[spec.split]
        assert result["classes"][expected] == result["digits"] > 0


# ---------------------------------------------------------------- files
def test_main_writes_shards_manifest_and_reader_concatenates(params_dict, mnist_splits, tmp_path):
    cfg = small_params(params_dict, per_split=50, shard_size=20)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    manifest = canvas.main(params_file, "stage3", out_root=tmp_path / "canvases", mnist_dir=mnist_splits)
    stage_dir = tmp_path / "canvases" / "stage3"
    assert json.loads((stage_dir / "manifest.json").read_text()) == manifest
    train = manifest["splits"]["train"]
    assert [s["canvases"] for s in train["shards"]] == [20, 20, 10]
    for split in ("train", "val", "test"):
        for shard in manifest["splits"][split]["shards"]:
            assert hashlib.sha256((stage_dir / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    data = canvas.read_canvases("stage3", "train", tmp_path / "canvases")
    assert len(data) == 50 and data.images.dtype == np.uint8 and data.images.shape == (50, 100, 100)
    assert data.boxes.dtype == np.float32 and data.boxes.shape == (50, 10, 4)
    assert data.labels.dtype == np.int16 and data.labels.shape == (50, 10)
    assert int((data.labels >= 0).sum()) == train["digits"] == sum(train["classes"])
    assert sum(train["digit_counts"]) == 50
    assert np.bincount((data.labels >= 0).sum(1), minlength=11).tolist() == train["digit_counts"]


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="stage: 'stage9'"):
        canvas.read_canvases("stage9", "train", tmp_path)
    with pytest.raises(ValueError, match="split: 'dev'"):
        canvas.read_canvases("stage1", "dev", tmp_path)
    with pytest.raises(FileNotFoundError, match="generate@stage2"):
        canvas.read_canvases("stage2", "train", tmp_path)


# ---------------------------------------------------------------- params
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda g: g["stages"]["stage2"].update(digits=[5, 3]),
            "generate.stages.stage2.digits: min 5 > max 3",
        ),
        (
            lambda g: g["stages"]["stage3"].update(digits=[1, 40]),
            "generate.stages.stage3.digits: max 40 cannot fit",
        ),
        (lambda g: g["stages"]["stage1"].update(scale=[4.0, 4.0]), "generate.stages.stage1.scale"),
        (lambda g: g["stages"]["stage3"].update(max_overlap=1.5), "generate.stages.stage3.max_overlap"),
        (lambda g: g.update(canvas_size=64), "generate.canvas_size"),
        (lambda g: g["augment"].update(rotate_deg=90), "generate.augment.rotate_deg"),
        (lambda g: g.update(task_runner="ray"), "generate.task_runner"),
    ],
)
def test_bad_generator_params_are_refused(params_dict, edit, message):
    edit(params_dict["generate"])
    with pytest.raises(ParamsError) as info:
        validate_params(params_dict)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_shard_paths_follow_the_contract(cfg):
    specs = canvas.plan_shards(cfg.generate, "stage1")
    assert specs[0].relpath == "train/shard-00000.npz"
    train = cfg.generate.stages["stage1"].canvases.train
    assert sum(s.canvases for s in specs if s.split == "train") == train
    assert Path(specs[-1].relpath).parent.name == "test"


# A child that makes a drawn shard (its strokes too) and a chunk of train-time written layouts, printing its
# active numpy SIMD targets and the sha256 of what it made.
_DISPATCH_CHILD = """
import hashlib, json, sys
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__
from multidigit import canvas, fresh
from multidigit.mnist import read_split
from multidigit.params import load_params
cfg = load_params(sys.argv[1])
test, train = read_split("test", sys.argv[2]), read_split("train", sys.argv[2])
seed = canvas.shard_seed(cfg.seed, "stage3", "drawn", 0)
drawn = canvas.make_drawn_shard(*test, 40, cfg.generate, "stage3", seed)
written = fresh.written_canvases(cfg, "stage3", train, 1, 0, 40)
extra = [drawn.extra[key] for key in sorted(drawn.extra)]  # the stroke points, to the last bit
digest = hashlib.sha256()
made = (drawn.images, drawn.boxes, drawn.labels, *extra, written.images, written.boxes, written.labels)
for array in made:
    digest.update(np.ascontiguousarray(array).tobytes())
active = sorted(k for k, v in __cpu_features__.items() if v)
print(json.dumps({"sha256": digest.hexdigest(), "features": active}))
"""


def test_drawn_canvases_do_not_depend_on_the_cpus_simd(mnist_splits):
    # numpy picks SIMD kernels per CPU, and some (float64 tan with AVX-512) differ from libm in the last bits:
    # an np.tan in the layout moved the drawn split's bytes between machine types. Run once as the CPU
    # allows and once with every SIMD target numpy can dispatch to switched off.
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    params = ROOT / "params.yaml"
    simd = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    assert simd, "this CPU offers numpy no SIMD target to switch off"

    def child(env: dict) -> dict:
        command = [sys.executable, "-c", _DISPATCH_CHILD, str(params), str(mnist_splits)]
        out = subprocess.run(
            command, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    native, plain = child({}), child({"NPY_DISABLE_CPU_FEATURES": " ".join(simd)})
    assert set(simd) <= set(native["features"]) and not set(simd) & set(plain["features"])
    assert native["sha256"] == plain["sha256"]
