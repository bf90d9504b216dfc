"""The README results block is rebuilt from the metrics and benchmark files, never typed by hand."""

from __future__ import annotations

import json

import pytest

from multidigit import report


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture()
def outputs(tmp_path):
    _write(
        tmp_path / "metrics/stage3.json",
        {
            "metrics/mAP50": 0.98765,
            "metrics/mAP50-95": 0.8811,
            "ap50/7": 0.9912,
            "f1/7": 0.97,
            "class/accuracy": 0.995,
        },
    )
    _write(
        tmp_path / "models/stage3/train_info.json", {"wall_seconds": 412.4, "params": 126479, "macs": 78.68e6}
    )
    _write(
        tmp_path / "benchmarks/results/generator.json",
        {"canvases_per_s_1_process": 276.8, "speedup_vs_naive_1_process": 65.7},
    )
    _write(tmp_path / "reports/ablation.json", {"budget": "1 epoch", "C": {"class/accuracy": 0.51}})
    return tmp_path


def test_results_block_carries_the_files_figures(outputs):
    block = report.render_results(outputs)
    assert "| stage3 | 0.988 | 0.881 | 0.995 | – | – | – | 412 |" in block
    assert "| stage1 | – | – | – | – | – | – | – |" in block
    assert "| 7 | 0.991 | – | 0.970 |" in block
    assert "| C: from scratch | – | – | 0.510 | about 50% |" in block
    assert "| generator, 1 process | 277 canvases/s |" in block
    assert "| detector parameters | 126,479 |" in block
    assert "Transfer-learning ablation (1 epoch)" in block


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold figures\n{report.END}\noutro\n")
    report.update_readme(readme, "new figures")
    assert readme.read_text() == f"intro\n{report.START}\nnew figures\n{report.END}\noutro\n"


def test_update_readme_without_markers_fails_clearly(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="no '<!-- results:start -->'"):
        report.update_readme(readme, "x")
    assert readme.read_text() == "no markers here\n"
