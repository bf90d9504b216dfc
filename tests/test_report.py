"""reports/summary.md and the README results block are rebuilt from the metrics and benchmark files, never
typed by hand: every stage, class, bucket and drawn-split bucket, dashes where absent."""

from __future__ import annotations

import json

import pytest

from multidigit.evaluation import report


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
        {"canvases_per_s_1_process": 276.8, "canvases_per_s_all_cores": 412.3},
    )
    _write(
        tmp_path / "benchmarks/results/pipeline.json",
        {
            "make_run_to_serving_seconds": 938.4,
            "make_run_stage_overhead": {"median_overhead_s": 5.31},
            "date": "2026-12-02",
        },
    )
    _write(tmp_path / "reports/ablation.json", {"budget": "1 epoch", "C": {"class/accuracy": 0.51}})
    return tmp_path


def test_results_block_carries_the_files_figures(outputs):
    block = report.render_results(outputs)
    assert "| stage3 | 0.988 | 0.881 | 0.995 | – | – | – | 412 |" in block
    assert "| stage1 | – | – | – | – | – | – | – |" in block
    assert "| 7 | 0.991 | – | 0.970 |" in block
    assert "| C: from scratch | – | – | 0.510 | about 50% |" in block
    assert "| generator, stage 3, 1 process | 277 canvases/s |" in block
    assert "| generator, stage 3, all cores | 412 canvases/s |" in block
    assert "| `make run`, fresh clone to serving | 938 s (2026-12-02) |" in block
    assert "| stage overhead through the stack, median | 5.3 s (2026-12-02) |" in block
    assert "| generation through Prefect, 2 vs 1 workers | –× |" in block  # no file: no date either
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


def test_summary_tabulates_stages_classes_buckets_and_drawn(tmp_path):
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
    stage3 = {"drawn/mAP50": 0.9712, "drawn/sequence_accuracy": 0.81, "drawn/canvases": 500.0}
    stage3 |= {"drawn/brush_4-8/recall": 0.93, "drawn/brush_4-8/canvases": 120.0}
    (metrics_dir / "stage3.json").write_text(json.dumps(stage3))
    out = report.write_summary(metrics_dir, tmp_path / "reports" / "summary.md")
    text = out.read_text()
    stage_rows = [line for line in text.splitlines() if line.startswith("| stage")]
    assert len(stage_rows) == 4  # header + stage1..3
    assert stage_rows[1].startswith("| stage1 | 0.951 | 0.700 | – |")
    assert stage_rows[3].startswith("| stage3 | – | – |")
    assert "| 3 | 0.880 / 0.610 / 0.900 | – / – / – | – / – / – |" in text
    assert "| 1 | 0.950 / 0.900 / 100 |" in text
    assert "| all | 0.971 | – | – | – | – | 0.810 | 500 |" in text
    assert "| brush_4-8 | – | 0.930 | – | – | – | – | 120 |" in text
    assert "speed" not in text and "ms/canvas" not in text  # timings are benchmarks, not metrics
    # header + separator + rows: 3 stages, 10 classes, 5 buckets, drawn all + 4 brush + 3 size buckets
    assert sum(line.startswith("| ") for line in text.splitlines()) == (2 + 3) + (2 + 10) + (2 + 5) + (2 + 8)


def test_the_drawn_split_as_the_page_reads_it_comes_first_when_evaluated_so(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stage3 = {"drawn/sequence_accuracy": 0.81, "drawn/canvases": 500.0}
    stage3 |= {"drawn_page/sequence_accuracy": 0.86, "drawn_page/canvases": 500.0, "drawn_page/recall": 0.97}
    (metrics_dir / "stage3.json").write_text(json.dumps(stage3))
    text = report.write_summary(metrics_dir, tmp_path / "summary.md").read_text()
    page, drawn = text.index("as the page reads it"), text.index("read as drawn")
    assert page < drawn
    assert "| all | – | 0.970 | – | – | – | 0.860 | 500 |" in text[page:drawn]
    assert "| all | – | – | – | – | – | 0.810 | 500 |" in text[drawn:]
    (metrics_dir / "stage3.json").write_text(json.dumps({"drawn/canvases": 500.0}))
    assert "as the page reads it" not in report.write_summary(metrics_dir, tmp_path / "s.md").read_text()


def test_summary_names_a_broken_metrics_file(tmp_path):
    (tmp_path / "stage2.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"stage2\.json: not valid JSON"):
        report.read_stage_metrics(tmp_path)


def test_inference_timings_come_from_the_benchmark_file(outputs):
    _write(outputs / "benchmarks/results/inference.json", {"ms_batch1": 3.456, "canvases_per_s_b256": 812.3})
    block = report.render_results(outputs)
    assert "| Python detector + NMS, batch 1, median | 3.46 ms |" in block
    assert "| Python detector + NMS, batch 256 | 812 canvases/s |" in block


def test_first_reading_row_comes_from_the_benchmark_file(outputs):
    assert (
        "| the page's first reading, median (without the warm-up) | – ms (– ms) |"
        in report.render_results(outputs)
    )
    first = {
        "warm-up (default)": {"first_reading_ms_median": 36.24},
        "no warm-up": {"first_reading_ms_median": 82.8},
    }
    _write(outputs / "benchmarks/results/first_reading.json", first)
    block = report.render_results(outputs)
    assert "| the page's first reading, median (without the warm-up) | 36.2 ms (82.8 ms) |" in block


def test_export_table_shows_a_refused_quantization_and_a_backend_that_did_not_start(tmp_path):
    _write(
        tmp_path / "browser.json",
        {
            "quantizations": {
                "float16": {
                    "size_bytes": 2048,
                    "map50_95_cost": 0.0001,
                    "browser": {"wasm": {"p50_ms": 11.7, "p95_ms": 16.1}, "cpu": {"error": "SyntaxError"}},
                },
                "uint8": {"error": "parity: uint8 TF.js max_abs_diff_boxes_px 62 > tolerance 2.0"},
            }
        },
    )
    rows = report.export_rows(tmp_path)
    assert rows == [
        ["float16", "2", "0.0001", "11.7 / 16.1", "–", "–"],
        ["uint8", "–", "export refused", "–", "–", "–"],
    ]
