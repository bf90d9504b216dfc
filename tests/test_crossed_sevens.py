"""benchmarks/crossed_sevens.py: the bar crosses a 7's stem where it says; a crossed drawing is its plain twin
plus one bar per 7 and nothing else; the spacings move digits apart or together and nothing more."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import crossed_sevens as cs  # noqa: E402
import drawn_page  # noqa: E402

from multidigit.evaluation.drawn import read_digits  # noqa: E402

# a 7 as a pen writes it (y down): the top from the left, then the stem down to the left
SEVEN = [np.array([[0.0, 0.0], [10.0, 0.0], [4.0, 20.0]])]


@pytest.fixture(scope="module")
def mnist_test_split():
    return cs.independent.mnist_test_digits()


@pytest.fixture(scope="module")
def pairs(mnist_test_split):
    return {name: cs.drawing_pairs(40, 3, gap, mnist_test_split) for name, gap in cs.SPACINGS.items()}


def _width(drawing) -> float:
    return float(np.ptp(np.concatenate(drawing.all_strokes())[:, 0]))


def test_stem_is_where_the_strokes_cross_the_height():
    assert cs.stem_x(SEVEN, 10.0) == pytest.approx(7.0)
    assert cs.stem_x(SEVEN, 20.0) == pytest.approx(4.0)  # the end of a stroke counts
    # a crossing nearer the ink's middle wins over one at its edge
    assert cs.stem_x([*SEVEN, np.array([[0.0, 5.0], [0.0, 15.0]])], 10.0) == pytest.approx(7.0)


def test_the_bar_crosses_the_stem_at_its_height_length_and_turn():
    for seed in range(200):
        bar = cs.crossbar(SEVEN, np.random.default_rng(seed))
        middle = bar[len(bar) // 2]
        assert 0.42 * 20 - 1 <= middle[1] <= 0.65 * 20 + 1  # its height, the bow aside
        ends = bar[-1] - bar[0]
        assert 0.3 * 20 - 1e-9 <= np.hypot(*ends) <= 0.6 * 20 + 1e-9
        assert abs(np.degrees(np.arctan2(ends[1], ends[0]))) <= cs.BAR_TURN_DEG + 1e-9
        stem = cs.stem_x(SEVEN, middle[1])
        assert bar[:, 0].min() < stem < bar[:, 0].max()  # it reaches both sides of the stem


def test_a_crossed_drawing_is_its_plain_twin_with_one_bar_per_seven(pairs):
    sevens = 0
    for plain, crossed in pairs["spaced"]:
        assert plain.labels == crossed.labels and plain.brush == crossed.brush
        for label, lines, more in zip(plain.labels, plain.strokes, crossed.strokes, strict=True):
            assert len(more) == len(lines) + (label == 7)
            assert all(np.array_equal(a, b) for a, b in zip(lines, more, strict=False))
            sevens += label == 7
    assert sevens > 20  # about half the digits


def test_spacings_move_the_digits_and_nothing_else(pairs):
    spaced, close = pairs["spaced"], pairs["close"]
    closer = 0
    for (plain, _), (near, _) in zip(spaced, close, strict=True):
        assert plain.labels == near.labels and plain.brush == near.brush
        _, boxes, labels = drawn_page.truth_at(near, near.brush)
        assert read_digits(boxes, labels) == tuple(near.labels)  # close, still left to right
        if len(plain.labels) > 1:
            closer += _width(near) < _width(plain)
    assert closer == sum(len(p.labels) > 1 for p, _ in spaced)


def test_drawings_lie_on_the_canvas_inside_the_margin(pairs):
    for plain, crossed in pairs["spaced"] + pairs["close"]:
        for drawing in (plain, crossed):
            _, boxes, _ = drawn_page.truth_at(drawing, drawing.brush)
            assert boxes[:, :2].min() >= cs.MARGIN - 1
            assert (boxes[:, :2] + boxes[:, 2:]).max() <= 100 - cs.MARGIN + 1
