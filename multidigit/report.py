"""`multidigit report`: regenerate reports/summary.md and the README's results block from what the
pipeline and the benchmarks wrote. No figure is typed by hand: a missing source shows as a dash.

Sources: metrics/<stage>.json (evaluate), models/<stage>/train_info.json and
models/pretrain/pretrain_info.json (training), benchmarks/results/*.json (benchmarks),
reports/ablation.json (scripts/ablation.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from multidigit.atomic import atomic_path
from multidigit.constants import METRICS_DIR, MODELS_DIR, REPORTS_DIR, STAGES
from multidigit.summary import read_stage_metrics, write_summary

README = Path("README.md")
RESULTS = Path("benchmarks/results")
ABLATION_FILE = REPORTS_DIR / "ablation.json"
START, END = "<!-- results:start -->", "<!-- results:end -->"
# Class accuracy the seed study reported for A (synthetic pretraining), B (MNIST), C (scratch).
SEED_STUDY = {"A": "96%", "B": "92%", "C": "about 50%"}
BACKENDS = ("wasm", "webgl", "cpu")
ABLATION_ROWS = (("A", "synthetic crops"), ("B", "plain MNIST"), ("C", "from scratch"))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _fmt(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def stage_rows(metrics: dict[str, dict[str, float]], models_dir: Path) -> list[list[str]]:
    """One row per stage: test mAP, accuracies, threshold, training wall time."""
    rows = []
    for stage in STAGES:
        m = metrics.get(stage, {})
        info = _read_json(models_dir / stage / "train_info.json")
        rows.append(
            [
                stage,
                _fmt(m.get("metrics/mAP50"), ".3f"),
                _fmt(m.get("metrics/mAP50-95"), ".3f"),
                _fmt(m.get("class/accuracy"), ".3f"),
                _fmt(m.get("count/accuracy"), ".3f"),
                _fmt(m.get("canvas/accuracy"), ".3f"),
                _fmt(m.get("operating/score_threshold"), ".3f"),
                _fmt(info.get("wall_seconds"), ".0f"),
            ]
        )
    return rows


def class_rows(stage3: dict[str, float]) -> list[list[str]]:
    """Stage-3 per-class AP50, AP50-95 and F1."""
    return [
        [str(c)] + [_fmt(stage3.get(f"{key}/{c}"), ".3f") for key in ("ap50", "ap", "f1")] for c in range(10)
    ]


def ablation_rows(ablation: dict[str, Any]) -> list[list[str]]:
    """A/B/C transfer-learning ablation beside the seed study's class accuracy."""
    rows = []
    for key, label in ABLATION_ROWS:
        r = ablation.get(key, {})
        rows.append(
            [
                f"{key}: {label}",
                _fmt(r.get("metrics/mAP50"), ".3f"),
                _fmt(r.get("metrics/mAP50-95"), ".3f"),
                _fmt(r.get("class/accuracy"), ".3f"),
                SEED_STUDY[key],
            ]
        )
    return rows


def system_rows(results_dir: Path, models_dir: Path) -> list[list[str]]:
    """Throughput, sizes and latencies from the benchmarks and training records."""
    gen = _read_json(results_dir / "generator.json")
    fan = _read_json(results_dir / "generate_workers.json")
    browser = _read_json(results_dir / "browser.json")
    load = _read_json(results_dir / "load.json")
    info = _read_json(models_dir / "stage3" / "train_info.json")
    pre = _read_json(models_dir / "pretrain" / "pretrain_info.json")
    pipeline = _read_json(results_dir / "pipeline.json")
    rows = [
        ["whole `dvc repro`, fresh workspace", f"{_fmt(pipeline.get('dvc_repro_wall_seconds'), '.0f')} s"],
        ["generator, 1 process", f"{_fmt(gen.get('canvases_per_s_1_process'), '.0f')} canvases/s"],
        ["generator vs naive per-canvas loop", f"{_fmt(gen.get('speedup_vs_naive_1_process'), '.0f')}×"],
        ["generation through Prefect, 2 vs 1 workers", f"{_fmt(fan.get('speedup_2_vs_1'), '.2f')}×"],
        ["pretrain wall time", f"{_fmt(pre.get('wall_seconds'), '.0f')} s"],
        ["detector parameters", _fmt(info.get("params"), ",.0f")],
        ["multiply-adds per canvas", f"{_fmt(info['macs'] / 1e6 if 'macs' in info else None, '.1f')} M"],
        ["Python TF, batch 1, p50", f"{_fmt(browser.get('python_tf_batch1', {}).get('p50_ms'), '.2f')} ms"],
    ]
    rows.append(
        [
            f"service load, {_fmt(load.get('requests'), ',')} requests",
            f"{_fmt(load.get('errors'), 'd')} errors, p50 {_fmt(load.get('p50_ms'), '.1f')} ms, "
            f"p99 {_fmt(load.get('p99_ms'), '.1f')} ms",
        ]
    )
    return rows


def export_rows(results_dir: Path) -> list[list[str]]:
    """Per quantization: TF.js size, mAP cost, and Chromium p50 / p95 per backend."""
    browser = _read_json(results_dir / "browser.json")
    rows = []
    for quant, q in sorted(browser.get("quantizations", {}).items()):
        timings = q.get("browser", {})
        latency = [
            f"{timings[b]['p50_ms']:.1f} / {timings[b]['p95_ms']:.1f}" if b in timings else "–"
            for b in BACKENDS
        ]
        size = q["size_bytes"] / 1024 if "size_bytes" in q else None
        rows.append([quant, _fmt(size, ".0f"), _fmt(q.get("map50_95_cost"), ".4f"), *latency])
    return rows


def render_results(root: Path = Path()) -> str:
    """The README's results block (markdown, without the markers)."""
    metrics = read_stage_metrics(root / METRICS_DIR)
    models_dir = root / MODELS_DIR
    lines = ["Regenerated by `make report` from `metrics/*.json` (as `dvc metrics show` prints them),"]
    lines += ["training records and `benchmarks/results/`; full tables in `reports/summary.md`.", ""]
    header = ["stage", "mAP50", "mAP50-95", "class acc", "count acc", "canvas acc", "score thr", "train s"]
    lines += _table(header, stage_rows(metrics, models_dir))
    lines += ["", "Stage 3, per class:", ""]
    lines += _table(["class", "AP50", "AP50-95", "F1"], class_rows(metrics.get("stage3", {})))
    ablation = _read_json(root / ABLATION_FILE)
    budget = ablation.get("budget", "not run yet: `python scripts/ablation.py`")
    lines += ["", f"Transfer-learning ablation ({budget}):", ""]
    header = ["backbone init", "mAP50", "mAP50-95", "class acc", "seed study class acc"]
    lines += _table(header, ablation_rows(ablation))
    lines += ["", "TF.js export, latency in headless Chromium (ms per canvas, p50 / p95):", ""]
    header = ["quantization", "size KB", "mAP50-95 cost", *(f"{b} p50 / p95" for b in BACKENDS)]
    lines += _table(header, export_rows(root / RESULTS))
    lines += ["", "System:", ""]
    lines += _table(["figure", "value"], system_rows(root / RESULTS, models_dir))
    return "\n".join(lines)


def update_readme(readme: Path, block: str) -> None:
    """Replace the text between the results markers in `readme`, atomically."""
    text = readme.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme}: no '{START}' ... '{END}' markers to fill")
    with atomic_path(readme) as tmp:
        tmp.write_text(pattern.sub(lambda _: f"{START}\n{block}\n{END}", text))


def main(params: str | Path = "params.yaml") -> None:
    """Regenerate reports/summary.md and the README results block from the current outputs."""
    summary = write_summary(METRICS_DIR)
    update_readme(README, render_results())
    print(f"report: wrote {summary} and the results block of {README}")
