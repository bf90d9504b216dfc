"""reports/summary.md: every stage's headline metrics and every class's AP and F1, from metrics/*.json.

Regenerated whole each time (the `report` stage calls `write_summary`); a stage without a metrics file
shows as a dash, so the table has a stable shape.
"""

from __future__ import annotations

import json
from pathlib import Path

from multidigit.atomic import atomic_path
from multidigit.constants import CLASS_NAMES, METRICS_DIR, REPORTS_DIR, STAGES

SUMMARY_FILE = REPORTS_DIR / "summary.md"
# (column title, metrics key, format)
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
    ("ms/canvas b1", "speed/ms_batch1", ".2f"),
    ("canvases/s b256", "speed/canvases_per_s_b256", ".0f"),
)
BUCKETS = ("1", "2-5", "6-10", "no-overlap", "overlap")


def read_stage_metrics(metrics_dir: str | Path = METRICS_DIR) -> dict[str, dict[str, float]]:
    """stage -> its metrics dict, for every metrics/<stage>.json that exists."""
    metrics_dir = Path(metrics_dir)
    out = {}
    for stage in STAGES:
        path = metrics_dir / f"{stage}.json"
        if path.is_file():
            try:
                out[stage] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return out


def _cell(metrics: dict[str, float] | None, key: str, fmt: str) -> str:
    value = None if metrics is None else metrics.get(key)
    return "–" if value is None else format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_summary(by_stage: dict[str, dict[str, float]]) -> str:
    """The markdown of the summary: a stage table, a per-class table, a bucket table.

    Args:
        by_stage: stage -> metrics (missing stages show dashes).
    Returns:
        The markdown text.
    """
    lines = ["# Evaluation summary", "", "Test split of each stage; P/R/F1 and accuracies at the operating"]
    lines += ["score threshold chosen on val (max F1). Regenerated from `metrics/*.json`.", ""]
    stage_rows = [[s] + [_cell(by_stage.get(s), k, f) for _, k, f in STAGE_COLUMNS] for s in STAGES]
    lines += _table(["stage"] + [t for t, _, _ in STAGE_COLUMNS], stage_rows)
    lines += ["", "## Per class (AP50 / AP50-95 / F1)", ""]
    class_rows = [
        [c]
        + [
            " / ".join(_cell(by_stage.get(s), f"{k}/{c}", ".3f") for k in ("ap50", "ap", "f1"))
            for s in STAGES
        ]
        for c in CLASS_NAMES
    ]
    lines += _table(["class", *STAGES], class_rows)
    lines += ["", "## Buckets (mAP50 / canvas accuracy / canvases)", ""]
    bucket_rows = [
        [b]
        + [
            " / ".join(
                _cell(by_stage.get(s), f"bucket/{b}/{k}", f)
                for k, f in (("mAP50", ".3f"), ("canvas_accuracy", ".3f"), ("canvases", ".0f"))
            )
            for s in STAGES
        ]
        for b in BUCKETS
    ]
    lines += _table(["digits / overlap", *STAGES], bucket_rows)
    return "\n".join(lines) + "\n"


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
