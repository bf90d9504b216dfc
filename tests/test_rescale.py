"""multidigit/rescale.py: the page's second look, on real strokes rendered by the page's brush.

That the page plans, scales and maps back as Python does is checked in Chromium by tests/test_page_e2e.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from multidigit import rescale, strokes
from multidigit.augment import ink_bounds
from multidigit.params import ExportParams

READ = 12.0
SIDE = 400


def _digit(x: float, y: float, h: float) -> list[np.ndarray]:
    """A '7'-like pair of strokes, h buffer px tall, its top-left at (x, y)."""
    bar = np.array([[x + 0.1 * h, y + 0.5 * h], [x + 0.5 * h, y + 0.5 * h]])
    return [np.array([[x, y], [x + 0.6 * h, y], [x + 0.2 * h, y + h]]), bar]


def _tight_box(lines: list[np.ndarray]) -> np.ndarray:
    """xywh (canvas px) of the strokes' ink at the read brush, as the truth of the drawn split is boxed."""
    x0, y0, x1, y1 = ink_bounds(strokes.reduce_drawing(strokes.render_strokes(lines, READ, SIDE)))
    return np.array([x0, y0, x1 - x0, y1 - y0], np.float64)


def test_inside_the_band_or_with_nothing_listed_the_first_reading_stands():
    lines = _digit(100, 100, 120)
    assert rescale.plan_rescale(lines, [30.0], 30.0, (24.0, 38.0), READ) is None
    assert rescale.plan_rescale(lines, [24.0, 38.0], 30.0, (24.0, 38.0), READ) is None  # median 31
    assert rescale.plan_rescale(lines, [], 30.0, (24.0, 38.0), READ) is None
    assert rescale.plan_rescale([], [50.0], 30.0, (24.0, 38.0), READ) is None


@pytest.mark.parametrize(("height", "listed"), [(200.0, 52.0), (64.0, 17.0)])
def test_a_plan_brings_the_median_height_to_the_target_and_keeps_the_ink_on_the_canvas(height, listed):
    lines = _digit(150, 80, height) + _digit(150 + 0.8 * height, 80, height)
    plan = rescale.plan_rescale(lines, [listed, listed + 2], 30.0, (24.0, 38.0), READ)
    assert plan is not None
    assert plan.scale == pytest.approx(30.0 / (listed + 1), abs=rescale.STEP)
    assert plan.scale / rescale.STEP == int(plan.scale / rescale.STEP)  # a multiple of the step
    moved = np.concatenate(rescale.scaled_lines(lines, plan))
    reach = rescale.MARGIN * 4 + READ / 2
    assert moved.min() >= reach - 1e-9 and moved.max() <= SIDE - reach + 1e-9


def test_a_spread_drawing_grows_only_as_far_as_the_canvas_allows():
    lines = _digit(10, 150, 60) + _digit(320, 150, 60)  # small digits far apart
    plan = rescale.plan_rescale(lines, [16.0, 16.0], 30.0, (24.0, 38.0), READ)
    assert plan is None or plan.scale < 30.0 / 16.0
    close = _digit(150, 150, 60) + _digit(200, 150, 60)
    grown = rescale.plan_rescale(close, [16.0, 16.0], 30.0, (24.0, 38.0), READ)
    assert grown is not None and grown.scale == pytest.approx(30.0 / 16.0, abs=rescale.STEP)


def _buffer_box(lines: list[np.ndarray]) -> np.ndarray:
    """xywh (canvas px, in quarter pixels) of the strokes' ink on the page's buffer at the read brush."""
    x0, y0, x1, y1 = ink_bounds(strokes.render_strokes(lines, READ, SIDE))
    return np.array([x0, y0, x1 - x0, y1 - y0], np.float64) / 4


@pytest.mark.parametrize(("y", "height", "listed"), [(60.0, 260.0, 66.0), (200.0, 70.0, 18.0)])
def test_boxes_found_on_the_scaled_drawing_map_back_onto_the_drawing(y, height, listed):
    """The tight box of the scaled ink, mapped back, is the tight box of the drawing's own ink at the read
    brush (the ink's reach is the brush's, not the scaled brush's), to within a buffer pixel of either."""
    lines = _digit(60, y, height)
    plan = rescale.plan_rescale(lines, [listed], 30.0, (24.0, 38.0), READ)
    assert plan is not None and abs(plan.scale - 1) > 0.4
    scaled_box = _buffer_box(rescale.scaled_lines(lines, plan))
    back = rescale.boxes_back(scaled_box[None], plan, READ)[0]
    np.testing.assert_allclose(back, _buffer_box(lines), atol=0.5 / min(plan.scale, 1.0))


def test_read_drawings_reads_again_only_where_planned_and_returns_boxes_on_the_drawing():
    small = _digit(180, 180, 40)  # ~13 canvas px tall: read again, larger
    usual = _digit(150, 120, 120)  # ~33 canvas px: read once
    calls = []

    def detect(images):  # one box per canvas: the tight box of its ink, as a perfect detector would give
        calls.append(len(images))
        out = []
        for img in images:
            x0, y0, x1, y1 = ink_bounds(img)
            out.append({"boxes": np.array([[x0, y0, x1 - x0, y1 - y0]], np.float32),
                        "labels": np.array([7]), "scores": np.array([0.9], np.float32),
                        "shown": np.array([True])})  # fmt: skip
        return out

    drawings = [(small, [READ, READ]), (usual, [READ, READ])]
    images, dets, plans = rescale.read_drawings(detect, drawings, READ, (30.0, (24.0, 38.0)))
    assert calls == [2, 1] and plans[0] is not None and plans[1] is None
    assert images.shape == (2, 100, 100)
    for (lines, _), d in zip(drawings, dets, strict=True):
        np.testing.assert_allclose(d["boxes"][0], _tight_box(lines), atol=1.0)
    _, _, plans = rescale.read_drawings(detect, drawings, READ, None)
    assert plans == [None, None] and calls[-1] == 2


def test_the_second_look_needs_a_read_brush_and_an_ordered_band():
    with pytest.raises(ValueError, match="read_height"):
        ExportParams(read_brush=None)
    assert ExportParams(read_brush=None, read_height=None).read_height is None
    with pytest.raises(ValueError, match="read_band"):
        ExportParams(read_band=(38.0, 24.0))
