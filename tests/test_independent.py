"""benchmarks/independent.py: the independent canvas set is deterministic, honest about its boxes and
digits, and the scoring seam gives perfect figures for perfect detections and worse ones otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import independent  # noqa: E402


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return independent.mnist_test_digits(mnist_dir)


@pytest.fixture(scope="module")
def small_set(digits):
    return independent.make_independent_set(*digits, count=60, seed=3)


def test_same_seed_same_bytes_other_seed_other_bytes(digits, small_set):
    again = independent.make_independent_set(*digits, count=60, seed=3)
    other = independent.make_independent_set(*digits, count=60, seed=4)
    assert again.digest() == small_set.digest()
    assert other.digest() != small_set.digest()


def test_boxes_are_tight_apart_and_hold_all_ink(small_set):
    n_digits = np.sum(small_set.labels >= 0, axis=1)
    assert n_digits.min() >= 1 and n_digits.max() <= 10 and len(set(n_digits)) > 5
    for image, boxes, labels in zip(small_set.images, small_set.boxes, small_set.labels, strict=True):
        inside = np.zeros(image.shape, bool)
        for x, y, w, h in boxes[labels >= 0].astype(int):
            patch = image[y : y + h, x : x + w]
            # tight: every edge row and column of the box holds ink
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
            assert not inside[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1].any()  # >= 2 px apart
            inside[y : y + h, x : x + w] = True
        assert not image[~inside].any()  # no ink outside the boxes


def test_digits_come_from_mnist_test_at_the_stated_heights(digits, small_set):
    heights = small_set.boxes[..., 3][small_set.labels >= 0]
    # the ink may lose a faint edge row to the dust clearing, so allow 2 px under the 15 px floor
    assert heights.min() >= independent.HEIGHT[0] - 2 and heights.max() <= independent.HEIGHT[1]
    assert heights.max() >= 35  # the large end is reached
    counts = np.bincount(small_set.labels[small_set.labels >= 0], minlength=10)
    assert (counts > 0).all()


def test_scoring_perfect_and_degraded_detections(small_set):
    keep = small_set.labels >= 0
    perfect = [
        {"boxes": b[k], "scores": np.ones(k.sum(), np.float32), "labels": lab[k].astype(np.int64)}
        for b, lab, k in zip(small_set.boxes, small_set.labels, keep, strict=True)
    ]
    m = independent.score_canvases(small_set.boxes, small_set.labels, perfect, perfect)
    assert m["metrics/mAP50-95"] == 1.0 and m["count/accuracy"] == 1.0 and m["canvas/accuracy"] == 1.0
    assert m["bucket/n1/count_accuracy"] == 1.0
    names = [name for name, _, _ in independent.HEIGHT_BUCKETS]
    assert all(m[f"height/{name}/recall"] == 1.0 for name in names)
    assert sum(m[f"height/{name}/digits"] for name in names) == keep.sum()
    # drop the first digit of every canvas and shift the rest by 2 px: count fails, mAP@.5:.95 falls
    worse = [
        {"boxes": d["boxes"][1:] + 2.0, "scores": d["scores"][1:], "labels": d["labels"][1:]} for d in perfect
    ]
    w = independent.score_canvases(small_set.boxes, small_set.labels, worse, worse)
    assert w["count/accuracy"] == 0.0 and w["recall"] < 1.0
    assert min(w[f"height/{name}/recall"] for name in names) < 1.0
    assert w["metrics/mAP50-95"] < m["metrics/mAP50-95"]


def test_a_named_detector_is_read_not_the_champion_export(tmp_path):
    """`--detector` on a models folder whose champion has a SavedModel reads that detector (at the
    champion's post-processing and threshold); the champion's export is read only when none is named."""
    version = tmp_path / "tfjs" / "v1"
    (version / "saved_model").mkdir(parents=True)
    (version / "manifest.json").write_text('{"files": {}, "thresholds": {"score": 0.4, "iou": 0.45}}')
    (tmp_path / "tfjs" / "champion.json").write_text('{"version": "v1"}')
    (tmp_path / "stage3").mkdir()
    (tmp_path / "stage3" / "detector.keras").write_bytes(b"champion")
    other = tmp_path / "other.keras"
    other.write_bytes(b"an arm")

    champion = independent.resolve_model(tmp_path, None, None, None)
    assert independent._has_artifact(champion) and champion.threshold == 0.4
    named = independent.resolve_model(tmp_path, None, other, 0.3)
    assert not independent._has_artifact(named)
    assert (named.detector, named.threshold, named.version_dir) == (other, 0.3, version)
    assert independent.manifest_nms(named).iou_threshold == 0.45
    # the results files say which detector was read when it is not the version's
    assert "detector" not in independent.model_record(champion)
    assert independent.model_record(named)["detector"] == independent.workspace_path(other)
    with pytest.raises(FileNotFoundError, match=r"--detector: .*missing\.keras not found"):
        independent.resolve_model(tmp_path, None, tmp_path / "missing.keras", None)
