"""benchmarks/stage3_audit.py without training its reader: each digit's crop, recorded while a shard is
made, is the digit the canvas holds (the canvas composes again from the crops at the shard's boxes), through
re-sampled rounds too; and a crop is normalised the way MNIST holds its digits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import stage3_audit  # noqa: E402

from multidigit import canvas  # noqa: E402
from multidigit.mnist import read_split  # noqa: E402
from multidigit.params import validate_params  # noqa: E402


@pytest.fixture(scope="module")
def cfg():
    return validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


def test_recorded_crops_compose_every_canvas_again(cfg, mnist_splits):
    digits, labels = read_split("test", mnist_splits)
    # Crowded and without overlap, so some canvases fail placement and are drawn again in later rounds.
    crowded = cfg.generate.stages["stage3"].model_copy(update={"digits": (8, 10), "max_overlap": 0.0})

    def seed():  # a fresh SeedSequence each time: spawning children moves it on
        return canvas.shard_seed(cfg.seed, "stage3", "test", 0)

    with stage3_audit.recording() as rounds:
        shard = canvas.make_shard(digits, labels, 60, cfg.generate, crowded, seed())
    plain = canvas.make_shard(digits, labels, 60, cfg.generate, crowded, seed())
    np.testing.assert_array_equal(shard.images, plain.images)  # recording changes nothing
    assert shard.resampled > 0 and len(rounds) > 1
    slots = stage3_audit.crops_by_slot(rounds, 60)
    for i in range(60):
        real = shard.labels[i] >= 0
        crops = [slots[(i, place)] for place in range(int(real.sum()))]
        boxes = shard.boxes[i][real].astype(int)
        assert [c.shape[::-1] for c, _ in crops] == [tuple(b[2:]) for b in boxes]
        assert [int(labels[row]) for _, row in crops] == shard.labels[i][real].tolist()
        again = canvas.compose_canvas([c for c, _ in crops], boxes[:, :2], cfg.generate.canvas_size)
        np.testing.assert_array_equal(again, shard.images[i])
    assert len(slots) == int((shard.labels >= 0).sum())


def test_crops_are_normalised_as_mnist_holds_digits():
    crop = np.zeros((60, 20), np.uint8)
    crop[5:55, 8:12] = 255  # a tall thin 1
    out = stage3_audit.mnist_normalised(crop)
    rows = np.flatnonzero(out.any(1))
    assert out.shape == (28, 28) and rows[-1] - rows[0] + 1 == 20
    cy, cx = (np.indices(out.shape) * out).reshape(2, -1).sum(1) / out.sum()
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
