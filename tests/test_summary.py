"""reports/summary.md regenerated from metrics/*.json: every stage and class, dashes where absent."""

from __future__ import annotations

import json

import pytest

from multidigit import summary


def test_summary_tabulates_stages_classes_and_buckets(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stage1 = {"metrics/mAP50": 0.9512, "metrics/mAP50-95": 0.7, "f1/all": 0.93, "ap50/3": 0.88, "ap/3": 0.61}
    stage1 |= {
        "f1/3": 0.9,
        "bucket/1/mAP50": 0.95,
        "bucket/1/canvas_accuracy": 0.9,
        "bucket/1/canvases": 100.0,
    }
    (metrics_dir / "stage1.json").write_text(json.dumps(stage1))
    out = summary.write_summary(metrics_dir, tmp_path / "reports" / "summary.md")
    text = out.read_text()
    stage_rows = [line for line in text.splitlines() if line.startswith("| stage")]
    assert len(stage_rows) == 4  # header + stage1..3
    assert stage_rows[1].startswith("| stage1 | 0.951 | 0.700 | – |")
    assert stage_rows[3].startswith("| stage3 | – | – |")
    assert "| 3 | 0.880 / 0.610 / 0.900 | – / – / – | – / – / – |" in text
    assert "| 1 | 0.950 / 0.900 / 100 |" in text
    # header + separator + rows: 3 stages, 10 classes, 5 buckets
    assert sum(line.startswith("| ") for line in text.splitlines()) == (2 + 3) + (2 + 10) + (2 + 5)


def test_summary_names_a_broken_metrics_file(tmp_path):
    (tmp_path / "stage2.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"stage2\.json: not valid JSON"):
        summary.read_stage_metrics(tmp_path)
