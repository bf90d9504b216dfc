"""`multidigit report`: regenerate reports/summary.md and the README's results block from what the
pipeline and the benchmarks wrote. No figure is typed by hand: a missing source shows as a dash.

Sources: metrics/<stage>.json (evaluate), models/<stage>/train_info.json and
models/pretrain/pretrain_info.json (training), benchmarks/results/*.json (benchmarks, inference timings
included), reports/ablation.json (scripts/ablation.py). The summary is regenerated whole each time, a
stage without a metrics file shows as dashes, so its tables keep a stable shape.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from multidigit.atomic import atomic_path
from multidigit.constants import CLASS_NAMES, METRICS_DIR, MODELS_DIR, REPORTS_DIR, STAGES
from multidigit.evaluation.drawn import BRUSH_BUCKETS, PAGE_PREFIX, PREFIX, SIZE_BUCKETS

SUMMARY_FILE = REPORTS_DIR / "summary.md"
README = Path("README.md")
RESULTS = Path("benchmarks/results")
ABLATION_FILE = REPORTS_DIR / "ablation.json"
START, END = "<!-- results:start -->", "<!-- results:end -->"
# Class accuracy the seed study reported for A (synthetic pretraining), B (MNIST), C (scratch).
SEED_STUDY = {"A": "96%", "B": "92%", "C": "about 50%"}
BACKENDS = ("wasm", "webgl", "cpu")
ABLATION_ROWS = (("A", "synthetic crops"), ("B", "plain MNIST"), ("C", "from scratch"))
# (column title, metrics key, format) of the summary's stage table
STAGE_COLUMNS = (
    ("mAP50", "metrics/mAP50", ".3f"),
    ("mAP50-95", "metrics/mAP50-95", ".3f"),
    ("AR100", "metrics/AR100", ".3f"),
    ("P", "precision/all", ".3f"),
    ("R", "recall/all", ".3f"),
    ("F1", "f1/all", ".3f"),
    ("score thr", "operating/score_threshold", ".3f"),
    ("count acc", "count/accuracy", ".3f"),
    ("canvas acc", "canvas/accuracy", ".3f"),
    ("mean IoU", "iou/mean", ".3f"),
)
BUCKETS = ("1", "2-5", "6-10", "no-overlap", "overlap")
# (column title, figure under drawn/ or drawn/<bucket>/, format) of the drawn tables
DRAWN_COLUMNS = (
    ("mAP50", "mAP50", ".3f"),
    ("recall", "recall", ".3f"),
    ("precision", "precision", ".3f"),
    ("count acc", "count_accuracy", ".3f"),
    ("canvas acc", "canvas_accuracy", ".3f"),
    ("sequence acc", "sequence_accuracy", ".3f"),
    ("canvases", "canvases", ".0f"),
)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _fmt(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _dated(text: str, source: dict[str, Any]) -> str:
    """A figure from a benchmark that is rerun rarely (a fresh-clone `make run`, the stack's tax), with the
    day it was measured: beside the current champion's figures it may be days and a detector older."""
    return f"{text} ({source.get('date', 'undated')})" if source else text


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table as lines: header, separator, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# ---------------------------------------------------------------- reports/summary.md
def read_stage_metrics(metrics_dir: str | Path = METRICS_DIR) -> dict[str, dict[str, float]]:
    """stage -> its metrics dict, for every metrics/<stage>.json that exists."""
    return {s: m for s in STAGES if (m := _read_json(Path(metrics_dir) / f"{s}.json"))}


def drawn_rows(metrics: dict[str, float], prefix: str = PREFIX) -> list[list[str]]:
    """The drawn split overall, then per brush-width and per size bucket (a stage-3 metrics dict), read as
    drawn (`drawn/...`) or, with `prefix` "drawn_page", as the page reads it."""
    names = ["all"] + [name for name, _, _ in BRUSH_BUCKETS + SIZE_BUCKETS]
    rows = []
    for name in names:
        base = prefix if name == "all" else f"{prefix}/{name}"
        key = {"canvases": f"{prefix}/canvases"} if name == "all" else {}
        rows.append([name] + [_fmt(metrics.get(key.get(k, f"{base}/{k}")), f) for _, k, f in DRAWN_COLUMNS])
    return rows


def render_summary(by_stage: dict[str, dict[str, float]]) -> str:
    """The markdown of the summary: stage, per-class, bucket and drawn-split tables.

    Args:
        by_stage: stage -> metrics (missing stages show dashes).
    Returns:
        The markdown text.
    """
    lines = ["# Evaluation summary", "", "Test split of each stage; P/R/F1 and accuracies at the operating"]
    lines += [
        "score threshold chosen on val (where the most canvases are read exactly), on what the page shows.",
        "From `metrics/*.json`.",
        "",
    ]
    stage_rows = [[s] + [_fmt(by_stage.get(s, {}).get(k), f) for _, k, f in STAGE_COLUMNS] for s in STAGES]
    lines += markdown_table(["stage"] + [t for t, _, _ in STAGE_COLUMNS], stage_rows)
    lines += ["", "## Per class (AP50 / AP50-95 / F1)", ""]

    def cell(stage: str, keys: list[str], fmts: list[str]) -> str:
        return " / ".join(_fmt(by_stage.get(stage, {}).get(k), f) for k, f in zip(keys, fmts, strict=True))

    per_class = [[f"{k}/{c}" for k in ("ap50", "ap", "f1")] for c in CLASS_NAMES]
    class_rows = [
        [c] + [cell(s, keys, [".3f"] * 3) for s in STAGES]
        for c, keys in zip(CLASS_NAMES, per_class, strict=True)
    ]
    lines += markdown_table(["class", *STAGES], class_rows)
    lines += ["", "## Buckets (mAP50 / canvas accuracy / canvases)", ""]
    fmts = [".3f", ".3f", ".0f"]
    per_bucket = [[f"bucket/{b}/{k}" for k in ("mAP50", "canvas_accuracy", "canvases")] for b in BUCKETS]
    bucket_rows = [
        [b] + [cell(s, keys, fmts) for s in STAGES] for b, keys in zip(BUCKETS, per_bucket, strict=True)
    ]
    lines += markdown_table(["digits / overlap", *STAGES], bucket_rows)
    lines += drawn_tables(by_stage.get("stage3", {}), "##")
    return "\n".join(lines) + "\n"


def drawn_tables(metrics: dict[str, float], heading: str = "") -> list[str]:
    """The drawn split's tables: as the page reads it (when evaluated so), then read as drawn."""
    header = ["drawn", *(t for t, _, _ in DRAWN_COLUMNS)]
    lines = []
    if any(k.startswith(PAGE_PREFIX + "/") for k in metrics):
        title = "Stage 3, drawn split as the page reads it (brush in buffer px, size = median digit height):"
        lines += ["", f"{heading} {title}".strip(), ""]
        lines += markdown_table(header, drawn_rows(metrics, PAGE_PREFIX))
    title = "Stage 3, drawn split read as drawn (the detector's own figures, which the drawn gate checks):"
    lines += ["", f"{heading} {title}".strip(), ""]
    return lines + markdown_table(header, drawn_rows(metrics))


def write_summary(metrics_dir: str | Path = METRICS_DIR, out: str | Path = SUMMARY_FILE) -> Path:
    """Regenerate the summary markdown from the metrics files, atomically.

    Args:
        metrics_dir: folder of <stage>.json files.
        out: the markdown file to write.
    Returns:
        The path written.
    """
    text = render_summary(read_stage_metrics(metrics_dir))
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return Path(out)


# ---------------------------------------------------------------- the README results block


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
    speed = _read_json(results_dir / "inference.json")
    taxes = _read_json(results_dir / "stack_tax.json")
    tax = taxes.get("adaptive (default)", {})
    first = _read_json(results_dir / "first_reading.json")
    warm, cold = first.get("warm-up (default)", {}), first.get("no warm-up", {})
    serving = pipeline.get("make_run_to_serving_seconds")
    rows = [
        ["`make run`, fresh clone to serving", _dated(f"{_fmt(serving, '.0f')} s", pipeline)],
        [
            "stage overhead through the stack, median",
            _dated(
                f"{_fmt(pipeline.get('make_run_stage_overhead', {}).get('median_overhead_s'), '.1f')} s",
                pipeline,
            ),
        ],
        [
            "training step beside the idle stack, vs workers stopped",
            _dated(f"{_fmt(tax.get('polling_vs_stopped'), '.2f')}×", taxes),
        ],
        ["generator, stage 3, 1 process", f"{_fmt(gen.get('canvases_per_s_1_process'), '.0f')} canvases/s"],
        ["generator, stage 3, all cores", f"{_fmt(gen.get('canvases_per_s_all_cores'), '.0f')} canvases/s"],
        [
            "generation through Prefect, 2 vs 1 workers",
            _dated(f"{_fmt(fan.get('speedup_2_vs_1'), '.2f')}×", fan),
        ],
        ["pretrain wall time", f"{_fmt(pre.get('wall_seconds'), '.0f')} s"],
        ["detector parameters", _fmt(info.get("params"), ",.0f")],
        ["multiply-adds per canvas", f"{_fmt(info['macs'] / 1e6 if 'macs' in info else None, '.1f')} M"],
        ["Python TF, batch 1, p50", f"{_fmt(browser.get('python_tf_batch1', {}).get('p50_ms'), '.2f')} ms"],
        ["Python detector + NMS, batch 1, median", f"{_fmt(speed.get('ms_batch1'), '.2f')} ms"],
        ["Python detector + NMS, batch 256", f"{_fmt(speed.get('canvases_per_s_b256'), '.0f')} canvases/s"],
        [
            "the page's first reading, median (without the warm-up)",
            f"{_fmt(warm.get('first_reading_ms_median'), '.1f')} ms "
            f"({_fmt(cold.get('first_reading_ms_median'), '.1f')} ms)",
        ],
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
        timed = [timings.get(b, {}) for b in BACKENDS]  # a backend that failed to start has no times
        latency = [f"{t['p50_ms']:.1f} / {t['p95_ms']:.1f}" if "p50_ms" in t else "–" for t in timed]
        size = q["size_bytes"] / 1024 if "size_bytes" in q else None
        cost = "export refused" if "error" in q else _fmt(q.get("map50_95_cost"), ".4f")
        rows.append([quant, _fmt(size, ".0f"), cost, *latency])
    return rows


def render_results(root: Path = Path()) -> str:
    """The README's results block (markdown, without the markers)."""
    metrics = read_stage_metrics(root / METRICS_DIR)
    models_dir = root / MODELS_DIR
    lines = ["Regenerated by `make report` from `metrics/*.json` (as `dvc metrics show` prints them),"]
    lines += ["training records and `benchmarks/results/`; full tables in `reports/summary.md`.", ""]
    header = ["stage", "mAP50", "mAP50-95", "class acc", "count acc", "canvas acc", "score thr", "train s"]
    lines += markdown_table(header, stage_rows(metrics, models_dir))
    lines += ["", "Stage 3, per class:", ""]
    lines += markdown_table(["class", "AP50", "AP50-95", "F1"], class_rows(metrics.get("stage3", {})))
    lines += drawn_tables(metrics.get("stage3", {}))
    ablation = _read_json(root / ABLATION_FILE)
    budget = ablation.get("budget", "not run yet: `python scripts/ablation.py`")
    lines += ["", f"Transfer-learning ablation ({budget}):", ""]
    header = ["backbone init", "mAP50", "mAP50-95", "class acc", "seed study class acc"]
    lines += markdown_table(header, ablation_rows(ablation))
    lines += ["", "TF.js export, latency in headless Chromium (ms per canvas, p50 / p95):", ""]
    header = ["quantization", "size KB", "mAP50-95 cost", *(f"{b} p50 / p95" for b in BACKENDS)]
    lines += markdown_table(header, export_rows(root / RESULTS))
    lines += ["", "System:", ""]
    lines += markdown_table(["figure", "value"], system_rows(root / RESULTS, models_dir))
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
