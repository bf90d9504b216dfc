"""What a pipeline stage prints on the console: one headline line, and progress bars on long loops.

The headline names the stage as DVC does (`train@stage2`), says what it does and which files it reads and
writes, taken from the stage's entry in dvc.yaml, so the line cannot drift from the pipeline:

    ==> train@stage2: train one curriculum stage of the detector (models/stage1/detector.keras,
        data/canvases/stage2 -> models/stage2/detector.keras)

(on one line). A command that is no dvc.yaml stage (`multidigit preview`, `registry list`) prints none.
Progress bars show on a terminal only: logs, pipes and tests get the results, not carriage returns.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DVC_FILE = Path("dvc.yaml")
MIN_BAR_ITEMS = 20  # fewer items finish before a bar says anything (a request, a benchmark call)


def stage_name(command: str, stage: str | None = None) -> str:
    """DVC's name for a command run: `train` + `stage2` -> `train@stage2`."""
    return f"{command}@{stage}" if stage else command


def _paths(entries: list[Any] | None) -> list[str]:
    """dvc.yaml out/metrics/plots entries (a path, or {path: options}) as paths."""
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]


def _expand(text: str, key: str, item: Any) -> str:
    """Substitute a foreach stage's ${key}, ${item} and ${item.<field>}."""
    text = text.replace("${key}", key)
    if isinstance(item, dict):
        for field, value in item.items():
            text = text.replace(f"${{item.{field}}}", str(value))
        return text
    return text.replace("${item}", str(item))


def _stage_body(stages: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The stage `name` of dvc.yaml's `stages`, its foreach variables substituted; None if absent."""
    base, _, key = name.partition("@")
    entry = stages.get(base)
    if not isinstance(entry, dict):
        return None
    if "foreach" not in entry:
        return None if key else entry
    items = entry["foreach"]
    items = items if isinstance(items, dict) else {str(i): i for i in items}
    if key not in items:
        return None
    body = entry.get("do", {})
    fields = ("deps", "outs", "metrics", "plots")
    return {f: [_expand(p, key, items[key]) for p in _paths(body.get(f))] for f in fields if body.get(f)}


def stage_io(name: str, dvc_file: Path = DVC_FILE) -> tuple[list[str], list[str]] | None:
    """(inputs, outputs) of dvc.yaml stage `name`: data deps (code left out) and outs, metrics and plot
    folders; None when there is no such stage (or no dvc.yaml here)."""
    import yaml

    if not dvc_file.is_file():
        return None
    body = _stage_body(yaml.safe_load(dvc_file.read_text()).get("stages") or {}, name)
    if body is None:
        return None
    inputs = [p for p in _paths(body.get("deps")) if not p.endswith(".py") and "/" in p]
    outputs = _paths(body.get("outs")) + _paths(body.get("metrics"))
    for plot in _paths(body.get("plots")):  # a stage writes several plots into one folder
        folder = f"{Path(plot).parent}/"
        if folder not in outputs and not any(p.startswith(folder) for p in outputs):
            outputs.append(folder)
    return inputs, outputs


def headline(name: str, what: str, dvc_file: Path = DVC_FILE) -> str | None:
    """`==> name: what (inputs -> outputs)` for dvc.yaml stage `name`, None if dvc.yaml has no such stage."""
    io = stage_io(name, dvc_file)
    if io is None:
        return None
    inputs, outputs = io
    return f"==> {name}: {what} ({', '.join(inputs) or 'params'} -> {', '.join(outputs) or 'nothing'})"


def announce(command: str, stage: str | None, what: str) -> None:
    """Print the headline of `command` (at `stage`), when it is a dvc.yaml stage."""
    line = headline(stage_name(command, stage), what)
    if line:
        print(line, flush=True)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, with a progress bar on a terminal when there are at least MIN_BAR_ITEMS of them."""
    from tqdm import tqdm

    total = len(items) if total is None and hasattr(items, "__len__") else total
    small = total is not None and total < MIN_BAR_ITEMS
    # disable=None: tqdm turns itself off when stderr is not a terminal.
    return iter(tqdm(items, desc=desc, total=total, unit=unit, leave=False, disable=True if small else None))


def keras_verbose() -> int:
    """Keras `fit`'s verbose mode: its progress bar on a terminal, one line per epoch elsewhere.

    Keras' own "auto" draws the bar into pipes and logs too (it counts any POSIX system as a terminal),
    and the bar reads every step's metrics back from TensorFlow: stage 3's step took ~104 ms instead of
    ~92 ms on the 2-core machine with it (2026-12-06).
    """
    return 1 if sys.stdout.isatty() else 2
