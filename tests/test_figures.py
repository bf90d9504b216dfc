"""Evaluation figures (multidigit/evaluation/figures.py): each writes one readable PNG or CSV, atomically,
from plain arrays, including the edge cases a real split can produce (no canvas to show, a class
without ground truth)."""

from __future__ import annotations

import numpy as np

from multidigit.evaluation import figures
from tests.test_coco import A, B, dets, ground_truth

PNG = b"\x89PNG\r\n\x1a\n"


def test_canvas_grid_with_captions_and_an_empty_selection(tmp_path):
    boxes, labels = ground_truth([[(3, A)], [(7, B)]])
    images = np.zeros((2, 100, 100), np.uint8)
    shown = [dets((3, A, 0.9)), dets()]
    figures.plot_canvases(images, boxes, labels, shown, [1, 0], tmp_path / "grid.png", "t", ["one", "two"])
    figures.plot_canvases(images, boxes, labels, shown, [], tmp_path / "none.png", "no canvas was wrong")
    for name in ("grid.png", "none.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "none.png"]  # no temporary left


def test_pr_and_confusion_plots_skip_classes_without_ground_truth(tmp_path):
    recall = np.linspace(0, 1, 101)
    precision = np.full((10, 101), -1.0)  # -1: COCO's mark of a class without ground truth
    precision[3] = np.linspace(1, 0.5, 101)
    ap50 = np.full(10, np.nan)
    ap50[3] = 0.8
    figures.plot_pr_curves(recall, precision, ap50, tmp_path / "pr.png", "pr")
    cm = np.zeros((11, 11), np.int64)
    cm[3, 3], cm[3, 10], cm[10, 5] = 8, 1, 2
    figures.plot_confusion(cm, tmp_path / "cm.png", "cm")
    assert (tmp_path / "pr.png").read_bytes()[:8] == PNG and (tmp_path / "cm.png").read_bytes()[:8] == PNG


def test_curve_csv_rounds_floats_and_keeps_columns(tmp_path):
    figures.write_curve_csv(tmp_path / "c.csv", {"threshold": np.array([0.5, 0.25]), "f1": [1 / 3, 2]})
    assert (tmp_path / "c.csv").read_text().splitlines() == ["threshold,f1", "0.5,0.333333", "0.25,2"]
