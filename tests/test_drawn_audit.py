"""benchmarks/drawn_audit.py without training its reader: the detector's outcomes and the ceiling are
counted as documented (`drawn_page.drawn_sources`, which names each drawn digit's MNIST test digit, is
tested in test_drawn_page.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import drawn_audit  # noqa: E402


def test_outcomes_tell_right_misread_and_missed():
    truth = np.array([[10, 10, 10, 20], [40, 10, 10, 20], [70, 10, 10, 20]], np.float64)
    listed = {"boxes": np.array([[10, 10, 10, 20], [41, 10, 10, 20], [10, 60, 10, 20]]), "labels": [3, 5, 1]}
    assert drawn_audit.outcomes(truth, [3, 1, 7], listed) == [("right", 3), ("misread", 5), ("missed", -1)]


def test_the_ceiling_counts_every_legible_digit_right():
    rows = [
        ("legible", "right", 1, 1),
        ("legible", "misread", 7, 4),
        ("legible", "missed", 2, -1),
        ("re-stroking changed it", "misread", 3, 8),
        ("odd either way", "right", 9, 9),
    ]
    report = drawn_audit.tabulate(rows)
    assert report["digits"] == 5 and report["recall"] == 0.4
    assert report["ceiling_recall"] == 0.8  # the 3 legible digits right, the 2 others as they are
    assert report["by_reader_verdict"]["legible"] == {"digits": 3, "right": 1, "misread": 1, "missed": 1}
    assert report["legible_misreads"] == {"7->4": 1}


def test_the_sequence_ceiling_needs_only_the_odd_digits_read_right():
    canvases = [
        (True, [("legible", "right"), ("odd either way", "right")]),
        (False, [("legible", "misread"), ("re-stroking changed it", "right")]),  # fixable: ceiling reads it
        (False, [("legible", "right"), ("odd either way", "misread")]),  # not fixable by the detector
        (False, [("legible", "right")]),  # every digit right but an extra box listed: fixable
    ]
    assert drawn_audit.sequences(canvases) == {"sequence": 0.25, "ceiling_sequence": 0.75}
