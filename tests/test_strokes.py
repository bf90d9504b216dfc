"""multidigit/strokes.py: thinning, tracing, simplification, the round brush and the one reduction.

The brush's byte equality with the page (web/js/drawing.js) is checked in Chromium by
tests/test_page_e2e.py; here the brush is checked against its own definition.
"""

from __future__ import annotations

import itertools
import math
import sys

import numba
import numpy as np
import pytest

from multidigit import strokes
from multidigit.mnist import read_split
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import restroke_fidelity  # the 28-px tracer and the redraw the fidelity benchmark uses


@pytest.fixture(scope="module")
def test_digits(mnist_splits):
    return read_split("test", mnist_splits)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points p (N, 2) to segment a -> b, written independently of the brush."""
    ab = b - a
    n2 = float(ab @ ab)
    t = np.zeros(len(p)) if n2 == 0 else np.clip((p - a) @ ab / n2, 0, 1)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def test_thinning_leaves_a_one_pixel_skeleton_inside_the_ink_and_batches_agree(test_digits):
    digits = test_digits[0][:40]
    batch = strokes.thin(digits > strokes.INK_LEVEL)
    for digit, skeleton in zip(digits, batch, strict=True):
        assert np.array_equal(skeleton, strokes.thin(digit > strokes.INK_LEVEL))
        assert skeleton.any() and not (skeleton & (digit <= strokes.INK_LEVEL)).any()
        # one pixel wide: no 2 x 2 block is all skeleton
        blocks = skeleton[:-1, :-1] & skeleton[1:, :-1] & skeleton[:-1, 1:] & skeleton[1:, 1:]
        assert not blocks.any()


def test_traced_strokes_cover_the_skeleton_with_few_points(test_digits):
    total_points = total_pixels = 0
    f = strokes.UPSAMPLE
    for digit in test_digits[0][:60]:
        # the skeleton the tracer walks: of the digit upsampled f x, in digit pixels
        skeleton = strokes.thin(strokes.trace_masks(digit[None])[0])
        lines = strokes.digit_strokes(digit)
        rows, cols = np.nonzero(skeleton)
        centres = np.stack([cols + 0.5, rows + 0.5], axis=1) / f
        dist = np.full(len(centres), np.inf)
        for line in lines:
            assert line.dtype == np.float64 and line.shape[1] == 2
            pairs = itertools.pairwise(line) if len(line) > 1 else [(line[0], line[0])]
            for a, b in pairs:
                dist = np.minimum(dist, _segment_distance(centres, a, b))
        assert dist.max() < 0.5  # every skeleton pixel lies within half a digit pixel of a pen stroke
        total_points += sum(len(line) for line in lines)
        total_pixels += len(centres)
    assert total_points < 0.1 * total_pixels  # smoothing + Douglas-Peucker: cheap to render


def _ink_recall(digit: np.ndarray, lines: list[np.ndarray]) -> float:
    """Share of the digit's ink pixels that its strokes, drawn 3 digit px wide, cover."""
    return float((restroke_fidelity.redraw(lines, 12.0)[digit > strokes.INK_LEVEL] > 0).mean())


def test_tracing_at_4x_keeps_the_loops_and_arms_that_28_px_tracing_loses(test_digits):
    # At 28 px a thick digit's loop fills in and thinning erodes short arms, so its strokes miss parts of
    # the digit (a 6 redrawn as a hook, a 3 as a bare arc); traced at 4x they cover nearly all of its ink.
    digits = test_digits[0][:300]
    coarse = np.array([_ink_recall(d, restroke_fidelity.strokes_at_28_px(d)) for d in digits])
    fine = np.array([_ink_recall(d, strokes.digit_strokes(d)) for d in digits])
    assert fine.mean() > 0.96 and (fine < 0.8).mean() < 0.03
    assert fine.mean() > coarse.mean() + 0.02 and (fine < 0.8).sum() < (coarse < 0.8).sum() / 2


def test_a_filled_loop_is_traced_as_a_ring_and_a_fat_bar_as_a_line():
    # A 9 whose head the pen filled in: thinned as it is, the head is a dot and the redraw reads as a 1.
    yy, xx = np.mgrid[:28, :28] + 0.5  # pixel centres
    from_head = np.hypot(yy - 9, xx - 14)
    nine = np.where(from_head <= 5.5, 255, 0).astype(np.uint8)
    nine[9:25, 17:20] = 255  # the stem
    redrawn = restroke_fidelity.redraw(strokes.digit_strokes(nine), 10.0)
    assert redrawn[8:11, 13:16].max() == 0  # the head is a ring: its centre stays empty
    on_ring = np.abs(from_head - 3.5) < 0.6
    assert (redrawn[on_ring] > 0).mean() > 0.9  # ... drawn all the way round
    # A bar as thick (6 px) stays one open stroke down its middle: cutting its core would redraw a thin 0.
    bar = np.zeros((28, 28), np.uint8)
    bar[4:24, 11:17] = 255
    lines = strokes.digit_strokes(bar)
    assert len(lines) == 1 and np.abs(lines[0][:, 0] - 14).max() < 0.5
    assert not np.allclose(lines[0][0], lines[0][-1])


def test_batch_tracing_equals_one_digit_at_a_time(test_digits):
    digits = test_digits[0][:20]
    for digit, (points, offsets) in zip(digits, strokes.trace_digits(digits), strict=True):
        lines = strokes.digit_strokes(digit)
        assert [len(line) for line in lines] == np.diff(offsets).tolist()
        assert np.array_equal(np.concatenate(lines), points)


def test_simplify_keeps_corners_and_drops_collinear_points():
    line = np.array([[0, 0], [1, 0.1], [2, 0], [3, 0], [3, 1], [3, 2]], np.float64)
    assert np.array_equal(strokes.simplify(line, 0.3), [[0, 0], [3, 0], [3, 2]])
    loop = np.array([[0, 0], [2, 0], [2, 2], [0, 0]], np.float64)  # closes on itself
    assert len(strokes.simplify(loop, 0.3)) >= 3


def test_brush_follows_its_definition():
    rng = np.random.default_rng(0)
    for width in (4.0, 10.0, 17.5, 24.0):
        a, b = rng.uniform(20, 80, 2), rng.uniform(20, 80, 2)
        image = strokes.render_strokes([np.stack([a, b])], width, side=100)
        ys, xs = np.mgrid[0:100, 0:100]
        centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
        cover = np.clip(width / 2 + 0.5 - _segment_distance(centres, a, b), 0, 1)
        expected = np.floor(cover * 255 + 0.5).reshape(100, 100)
        # an independent formula may round an exact .5 the other way; the brush itself is exact
        assert np.abs(image.astype(int) - expected).max() <= 1
        assert (image == expected).mean() > 0.999


def _brush_reference(side: int, a, b, width: float) -> np.ndarray:
    """The module docstring's brush, pixel by pixel in Python floats (IEEE float64, nothing fused)."""
    out = np.zeros((side, side), np.uint8)
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    len2 = dx * dx + dy * dy
    for y in range(side):
        for x in range(side):
            rx, ry = x + 0.5 - ax, y + 0.5 - ay
            t = min(max((rx * dx + ry * dy) / len2, 0.0), 1.0) if len2 > 0 else 0.0
            ex, ey = rx - t * dx, ry - t * dy
            cover = min(max(width / 2 + 0.5 - math.sqrt(ex * ex + ey * ey), 0.0), 1.0)
            out[y, x] = math.floor(cover * 255 + 0.5)
    return out


def test_brush_equals_its_formula_byte_for_byte():
    # The brush paints only each row's span of the segment's capsule and fills its core with 255 without
    # the arithmetic; every pixel must still get the formula's byte: dots, thin and thick brushes, long
    # diagonals, (near-)axis-parallel segments, ends on half pixels and off the buffer.
    rng = np.random.default_rng(1)
    for i in range(150):
        a = rng.uniform(-5, 45, 2)
        b = a if i % 4 == 0 else rng.uniform(-5, 45, 2)  # a dot now and then
        if i % 5 == 1:
            b[i % 2] = a[i % 2] + rng.choice([0.0, 1e-12])  # vertical or horizontal
        if i % 7 == 2:
            a, b = np.round(a * 2) / 2, np.round(b * 2) / 2
        width = float(rng.choice([rng.uniform(0.0, 2.5), rng.uniform(0.5, 30), rng.integers(1, 30)]))
        image = strokes.render_strokes([np.stack([a, b])], width, side=40)
        assert np.array_equal(image, _brush_reference(40, a, b, width)), (a, b, width)


def test_segments_off_the_buffer_and_strided_buffers_get_the_formula_s_bytes():
    # Segments wholly left, right, above or below the buffer must paint nothing and touch nothing else
    # (the brush evaluates a segment's pixels in a scratch array sized by its box clipped to the buffer);
    # a strided view (the any-layout kernel) gets the bytes a contiguous buffer gets.
    rng = np.random.default_rng(2)
    for _ in range(60):
        a, b = rng.uniform(-60, 100, 2), rng.uniform(-60, 100, 2)
        width = float(rng.uniform(0.5, 30))
        expected = _brush_reference(40, a, b, width)
        assert np.array_equal(strokes.render_strokes([np.stack([a, b])], width, side=40), expected), (a, b)
        wide = np.zeros((40, 80), np.uint8)
        strokes.paint_strokes(wide[:, ::2], [np.stack([a, b])], [width])
        assert np.array_equal(wide[:, ::2], expected) and not wide[:, 1::2].any(), (a, b, width)


def test_the_compiled_brush_fuses_no_multiply_add():
    # A fused a * b + c rounds once instead of twice, which would move some bytes away from the page's.
    # The cached kernel cannot be inspected, so the same source is compiled again for the same signature.
    signature = strokes._paint_polylines.signatures[0]
    kernel = numba.njit(signature)(strokes._paint_polylines.py_func)
    asm = kernel.inspect_asm(signature).lower()
    assert "mul" in asm  # the float64 multiplies are there (x86 vmulsd, arm fmul) ...
    assert not any(op in asm for op in ("fmadd", "fmsub", "fnmadd", "fnmsub"))  # ... none fused


def test_a_dot_is_a_disc_and_strokes_combine_by_max():
    dot = strokes.render_strokes([np.array([[50.0, 50.0]])], 10, side=100)
    ys, xs = np.nonzero(dot)
    assert dot[49, 49] == 255 and abs(xs.mean() - 49.5) < 1e-9 and abs(ys.mean() - 49.5) < 1e-9
    assert (xs.min(), xs.max()) == (45, 54)  # centres nearer than width / 2 + 0.5 = 5.5 get ink
    line = [np.array([[20.0, 30.0], [80.0, 60.0]])]
    both = strokes.render_strokes([*line, np.array([[50.0, 50.0]])], [6, 10], side=100)
    assert np.array_equal(both, np.maximum(strokes.render_strokes(line, 6, side=100), dot))


def _edges(canvas: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) of a canvas's ink."""
    ys, xs = np.nonzero(canvas)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def _xywh(edges: np.ndarray) -> np.ndarray:
    return np.concatenate([edges[..., :2], edges[..., 2:] - edges[..., :2]], -1)


@pytest.mark.parametrize("drawn", [4.0, 10.0, 24.0])
def test_a_box_tight_on_the_read_ink_widens_to_the_ink_drawn(test_digits, drawn):
    """The page reads strokes at one width and shows them at the slider's: `widen_boxes` moves a box tight
    on the read canvas onto the drawn canvas's ink, each edge within 0.75 px (both boxes are whole pixels
    of the reduced canvases), where the read box's edges are up to 2 px off at brush 24."""
    images, _ = test_digits
    read, widened, unmoved = 12.0, [], []
    for digit in images[:40]:
        lines = [s * 6 + 50 for s in strokes.digit_strokes(digit)]  # a digit ~36 canvas px tall
        widths = [drawn] * len(lines)
        read_edges = _edges(strokes.reduce_drawing(strokes.render_strokes(lines, read)))
        drawn_edges = _edges(strokes.reduce_drawing(strokes.render_strokes(lines, widths)))
        box = strokes.widen_boxes(_xywh(read_edges)[None], lines, widths, read)[0]
        widened.append(np.abs(np.r_[box[:2], box[:2] + box[2:]] - drawn_edges))
        unmoved.append(np.abs(read_edges - drawn_edges))
    assert np.max(widened) <= 0.75 and np.mean(widened) <= 0.5, np.max(widened)
    if drawn != 10.0:  # at 10 the move is a quarter pixel, under the whole-pixel rounding
        assert np.mean(widened) < np.mean(unmoved)


def test_widening_moves_only_boxes_holding_strokes_and_stays_on_the_canvas():
    box = np.array([[20.0, 20.0, 10.0, 10.0]])
    far = [np.array([[390.0, 390.0]])]  # buffer px: a stroke outside the box moves nothing
    assert np.array_equal(strokes.widen_boxes(box, far, [24.0], 12.0), box)
    near = [np.array([[100.0, 100.0], [110.0, 110.0]])]  # inside (buffer 80..120): out by (24 - 12) / 8
    assert strokes.widen_boxes(box, near, [24.0], 12.0).tolist() == [[18.5, 18.5, 13.0, 13.0]]
    edge = strokes.widen_boxes(np.array([[0.0, 1.0, 10.0, 98.0]]), [np.array([[8.0, 8.0]])], [40.0], 12.0)
    assert edge.tolist() == [[0.0, 0.0, 13.5, 100.0]]  # clipped to the canvas


def test_reduce_drawing_rounds_half_up_and_refuses_other_sizes():
    drawing = np.zeros((400, 400), np.uint8)
    drawing[:4, :4] = [[255] * 4, [255] * 4, [0] * 4, [0] * 4]  # mean 127.5 -> 128
    drawing[4:8, :4] = 1  # mean 1
    drawing[8:12, :4] = [[1] * 4, [1] * 4, [0] * 4, [0] * 4]  # mean 0.5 -> 1
    canvas = strokes.reduce_drawing(drawing)
    assert canvas.shape == (100, 100) and (canvas[0, 0], canvas[1, 0], canvas[2, 0]) == (128, 1, 1)
    for shape in ((400, 399), (150, 150), (900, 900)):
        with pytest.raises(ValueError, match="need a square grey image of side 100"):
            strokes.reduce_drawing(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("factor", range(1, strokes.MAX_FACTOR + 1))
def test_block_reduction_equals_the_integer_mean_for_every_factor_and_layout(factor):
    # The compiled reduction sums in uint16 (8 x 8 blocks of 255 reach 16,320) and has its own 4 x 4 loop;
    # both must equal the plain integer mean, rounded half up, on noise, full blocks and strided views.
    rng = np.random.default_rng(factor)
    noise = rng.integers(0, 256, (factor * 23, factor * 31), dtype=np.uint8)
    full = np.full((factor * 5, factor * 7), 255, np.uint8)
    view = np.full((factor * 6, factor * 9 + 3), 255, np.uint8)[:, 3:]  # not C-contiguous
    view[::2] = rng.integers(0, 256, view[::2].shape, dtype=np.uint8)
    for image in (noise, full, view, np.frombuffer(noise.tobytes(), np.uint8).reshape(noise.shape)):
        h, w = image.shape[0] // factor, image.shape[1] // factor
        sums = image.astype(np.int64).reshape(h, factor, w, factor).sum(axis=(1, 3))
        expected = (sums + factor * factor // 2) // (factor * factor)
        assert np.array_equal(strokes.reduce_blocks(image, factor), expected)


def _zhang_suen_reference(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen written out rule by rule on one (H, W) image: the definition `thin` must equal."""
    img = np.pad(mask.astype(np.uint8), 1)
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            p = [np.roll(img, (-dy, -dx), (0, 1)) for dy, dx in strokes.NEIGHBOURS]  # p[0] = up, clockwise
            count = sum(p)
            transitions = sum((p[i] == 0) & (p[(i + 1) % 8] == 1) for i in range(8))
            if step == 0:
                side = (p[0] * p[2] * p[4] == 0) & (p[2] * p[4] * p[6] == 0)
            else:
                side = (p[0] * p[2] * p[6] == 0) & (p[0] * p[4] * p[6] == 0)
            remove = (img == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                img[remove] = 0
                changed = True
    return img[1:-1, 1:-1].astype(bool)


def test_thinning_equals_the_zhang_suen_rules_on_digits_and_noise(test_digits):
    noise = np.random.default_rng(0).random((30, 28, 28)) < 0.45
    masks = np.concatenate([test_digits[0][:30] > strokes.INK_LEVEL, noise])
    batch = strokes.thin(masks)
    for mask, skeleton in zip(masks, batch, strict=True):
        assert np.array_equal(skeleton, _zhang_suen_reference(mask))


def test_a_splits_strokes_file_gives_the_traced_strokes_and_refuses_other_digits(test_digits, tmp_path):
    from multidigit import mnist, stroke_cache
    from multidigit.atomic import save_npz

    images, labels = test_digits[0][:300], test_digits[1][:300]
    split = tmp_path / "test.npz"
    save_npz(split, images=images, labels=labels, index=np.arange(300))
    stroke_cache.write_strokes(images, mnist.strokes_path(split))
    loaded, _ = mnist.read_split("test", tmp_path)
    table = stroke_cache.for_split(loaded)
    assert table.source == mnist.strokes_path(split)  # attached, read on first use
    ids = np.array([5, 0, 299, 5])
    for (points, offsets), (ref_points, ref_offsets) in zip(
        table.arrays(ids), strokes.trace_digits(images[ids]), strict=True
    ):
        assert np.array_equal(points, ref_points) and np.array_equal(offsets, ref_offsets)
    assert table.source is None  # loaded, never traced here
    ids = np.random.default_rng(0).integers(0, 300, 500)
    assert all(  # the file's packed gather equals packing the traced digits
        np.array_equal(a, b)
        for a, b in zip(
            table.packed(ids), stroke_cache.pack(strokes.trace_digits(images[ids])).values(), strict=True
        )
    )
    points, offsets, digits = table.packed(np.zeros(0, np.int64))  # a re-sample round may redraw none
    assert points.shape == (0, 2) and offsets.tolist() == [0] and digits.tolist() == [0]

    stroke_cache.write_strokes(images[::-1].copy(), mnist.strokes_path(split))  # a stale file
    stale, _ = mnist.read_split("test", tmp_path)
    stale_error = r"test-strokes\.npz: traced from other digits than its split; run `dvc repro mnist`"
    with pytest.raises(ValueError, match=stale_error):
        stroke_cache.for_split(stale).arrays(ids)
