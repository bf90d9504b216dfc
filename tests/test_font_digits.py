"""benchmarks/font_digits.py: the glyph file holds one-line digits of every font with its notice; drawings are
deterministic, lie on the canvas with each digit's ink apart and read in the order they were written; and
the confusion summary counts what it should."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import drawn_page  # noqa: E402
import font_digits as fd  # noqa: E402

from multidigit.evaluation.drawn import read_digits  # noqa: E402


@pytest.fixture(scope="module")
def glyphs():
    return fd.load_glyphs()


@pytest.fixture(scope="module")
def drawings(glyphs):
    return fd.font_drawings(90, seed=5, glyphs=glyphs)


def test_glyph_file_holds_ten_one_line_digits_per_font_with_its_notice(glyphs):
    import json

    data = json.loads(fd.GLYPHS.read_text())
    assert sorted(glyphs) == sorted(fd.FONTS)
    for name, digits in glyphs.items():
        assert len(digits) == 10
        for lines in digits:
            assert lines and all(line.ndim == 2 and line.shape[1] == 2 and len(line) >= 2 for line in lines)
        notice = data["fonts"][name]["notice"]
        assert "Open Font License" in notice or "Hershey" in notice


def test_svg_paths_flip_y_and_refuse_curves():
    assert fd._svg_path("M 1 2 L 3 4 5 6 M 7 8 L 9 10") == [[[1, -2], [3, -4], [5, -6]], [[7, -8], [9, -10]]]
    with pytest.raises(ValueError, match="command 'C'"):
        fd._svg_path("M 0 0 C 1 1 2 2 3 3")


def test_same_seed_same_drawings_other_seed_other(glyphs, drawings):
    again = fd.font_drawings(90, seed=5, glyphs=glyphs)
    other = fd.font_drawings(90, seed=6, glyphs=glyphs)
    same = [np.concatenate(d.all_strokes()) for _, d in again]
    assert all(
        np.array_equal(a, np.concatenate(d.all_strokes())) for a, (_, d) in zip(same, drawings, strict=True)
    )
    assert not np.array_equal(np.concatenate(other[0][1].all_strokes()), same[0])


def test_every_font_draws_and_brushes_come_from_the_slider(drawings):
    fonts = [font for font, _ in drawings]
    assert sorted(set(fonts)) == sorted(fd.FONTS)
    brushes = np.array([d.brush for _, d in drawings])
    assert brushes.min() >= fd.SLIDER[0] and brushes.max() <= fd.SLIDER[1]
    assert np.all(brushes == np.round(brushes)) and 0.2 < np.mean(brushes == fd.DEFAULT_BRUSH) < 0.7
    counts = [len(d.labels) for _, d in drawings]
    assert min(counts) == 1 and max(counts) == 6


def test_digits_lie_on_the_canvas_apart_and_read_in_written_order(drawings):
    heights = []
    for _, drawing in drawings:
        image, boxes, labels = drawn_page.truth_at(drawing, drawing.brush)
        x0, y0 = boxes[:, 0], boxes[:, 1]
        x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
        assert x0.min() >= fd.MARGIN - 1 and y0.min() >= fd.MARGIN - 1
        assert x1.max() <= 100 - fd.MARGIN + 1 and y1.max() <= 100 - fd.MARGIN + 1
        inside = np.zeros(image.shape, bool)
        for x, y, w, h in boxes.astype(int):
            assert not inside[y : y + h, x : x + w].any()  # no two digits' boxes overlap
            inside[y : y + h, x : x + w] = True
        assert not image[~inside].any()  # all ink in the boxes
        assert read_digits(boxes, labels) == tuple(drawing.labels)  # the page reads what was written
        heights += list(boxes[:, 3])
    assert min(heights) >= fd.HEIGHT[0] * 0.8 and max(heights) <= fd.HEIGHT[1] * 1.15
    assert max(heights) > 40  # the large end is reached


def test_confusions_count_misreads_misses_and_extras(drawings):
    truths = [drawn_page.truth_at(d, d.brush) for _, d in drawings[:12]]
    boxes, labels = [t[1] for t in truths], [t[2] for t in truths]
    perfect = [
        {"boxes": b, "scores": np.ones(len(lab), np.float32), "labels": lab}
        for b, lab in zip(boxes, labels, strict=True)
    ]
    clean = fd.confusions(boxes, labels, perfect)
    assert clean["misreads"] == {} and clean["extra_boxes"] == 0
    assert all(
        r == 1.0 for c, r in clean["recall_by_digit"].items() if np.any(np.concatenate(labels) == int(c))
    )
    wrong = [dict(d) for d in perfect]
    true = int(labels[0][0])
    wrong[0] = {**perfect[0], "labels": np.concatenate([[(true + 1) % 10], labels[0][1:]])}
    extra_box = np.array([[0, 0, 2, 2]], np.float32)
    wrong[1] = {
        key: np.concatenate([v, extra])
        for (key, v), extra in zip(
            perfect[1].items(), (extra_box, np.ones(1, np.float32), np.zeros(1, np.int64)), strict=True
        )
    }
    dropped = {key: v[1:] for key, v in perfect[2].items()}
    wrong[2] = dropped
    got = fd.confusions(boxes, labels, wrong)
    assert got["misreads"][f"{true}->{(true + 1) % 10}"] == 1
    assert got["misreads"][f"{int(labels[2][0])}->none"] == 1
    assert got["extra_boxes"] == 1


def test_the_page_replay_takes_font_drawings_into_their_own_results_file():
    args = drawn_page.parse_args(["--fonts", "--canvases", "3"])
    assert args.out == drawn_page.FONTS_RESULTS
    got = drawn_page.chosen_drawings(args)
    assert [d.labels for d in got] == [d.labels for _, d in fd.font_drawings(3, seed=0)]
    assert drawn_page.parse_args([]).out == drawn_page.RESULTS
    # the page reads the champion export: a named detector is scored in Python only
    assert drawn_page.parse_args(["--python-only", "--detector", "x.keras"]).detector == Path("x.keras")
    for clash in (["--fonts", "--synthetic"], ["--fonts", "--python-only"], ["--detector", "x.keras"]):
        with pytest.raises(SystemExit):
            drawn_page.parse_args(clash)
