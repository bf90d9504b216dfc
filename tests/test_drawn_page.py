"""benchmarks/drawn_page.py without a browser: the replayed drawings are the drawn split's (same pixels,
same boxes, strokes grouped by digit), and the page figures fall when the listed digits are wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import drawn_page  # noqa: E402


def test_replay_gives_the_split_canvases_and_boxes(drawn_root):
    drawings = drawn_page.drawn_split(40, drawn_root)
    assert len(drawings) == 40
    for canvas in drawings:
        image, boxes, labels = drawn_page.truth_at(canvas, canvas.brush)
        assert np.array_equal(image, canvas.image)
        assert np.array_equal(boxes, canvas.boxes) and labels.tolist() == canvas.labels
        assert all(len(digit) > 0 for digit in canvas.strokes)  # every digit got its strokes


def test_sources_name_the_mnist_test_digits_of_each_canvas(drawn_root, mnist_splits):
    from multidigit.mnist import read_split

    _, test_labels = read_split("test", mnist_splits)
    drawings = drawn_page.drawn_split(60, drawn_root)
    sources = drawn_page.drawn_sources(drawn_root, len(drawings))
    assert sources.shape[0] == 60
    for canvas, slots in zip(drawings, sources, strict=True):
        used = slots[slots >= 0]
        assert test_labels[used].tolist() == canvas.labels  # same digits, same order as the truth boxes


def test_truth_boxes_follow_the_brush(drawn_root):
    canvas = drawn_page.drawn_split(1, drawn_root)[0]
    _, thin, _ = drawn_page.truth_at(canvas, 4.0)
    _, thick, _ = drawn_page.truth_at(canvas, 24.0)
    assert np.all(thick[:, 2:] > thin[:, 2:])  # 20 buffer px more brush = ~5 canvas px wider and taller


def test_scores_fall_with_wrong_or_reordered_digits():
    boxes = [np.array([[10, 10, 10, 20], [40, 10, 10, 20]], np.float32)]
    labels = [np.array([3, 1])]

    def dets(b, lab):
        return [
            {
                "boxes": np.asarray(b, np.float32),
                "scores": np.ones(len(lab), np.float32),
                "labels": np.array(lab),
            }
        ]

    right = drawn_page.score_listed(boxes, labels, dets(boxes[0], [3, 1]))
    assert right == {"recall": 1.0, "precision": 1.0, "sequence_accuracy": 1.0}
    swapped = drawn_page.score_listed(boxes, labels, dets(boxes[0][::-1], [3, 1]))
    assert swapped["sequence_accuracy"] == 0.0 and swapped["recall"] == 0.0
    extra = drawn_page.score_listed(boxes, labels, dets(np.r_[boxes[0], [[70, 10, 10, 20]]], [3, 1, 7]))
    assert extra["recall"] == 1.0 and extra["precision"] < 1.0 and extra["sequence_accuracy"] == 0.0


def test_synthetic_drawings_stay_on_the_canvas(mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    for canvas in drawn_page.synthetic_drawn(20, seed=1):
        points = np.concatenate(canvas.all_strokes())
        assert points.min() >= 0 and points.max() <= drawn_page.BUFFER
        assert 1 <= len(canvas.labels) <= 6
