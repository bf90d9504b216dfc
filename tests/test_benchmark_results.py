"""benchmarks/results/*.json: what the benchmark scripts record is free of the recording machine's paths.

A result names files relative to the repo (`models/stage3/detector.keras`), so a result committed from
one machine reads the same on another and leaks no home or work folder. URL paths such as `/js/app.js`
are fine: a string is flagged when it is absolute and its first folder exists on this machine's root.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT

RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def machine_paths(value, where: str = "") -> list[str]:
    """'key.path: /abs/...' for every string in a JSON value that is an absolute path on this machine."""
    if isinstance(value, dict):
        return [hit for key, item in value.items() for hit in machine_paths(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [hit for i, item in enumerate(value) for hit in machine_paths(item, f"{where}[{i}]")]
    parts = Path(value).parts if isinstance(value, str) and value.startswith("/") else ()
    return [f"{where.lstrip('.')}: {value}"] if len(parts) > 1 and Path("/", parts[1]).is_dir() else []


def test_the_check_flags_machine_paths_and_not_urls():
    doc = {"detector": str(ROOT / "models" / "x.keras"), "paths": ["/js/app.js", "/api/model"], "n": 3}
    assert machine_paths(doc) == [f"detector: {ROOT / 'models' / 'x.keras'}"]


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_results_hold_no_machine_paths(path):
    found = machine_paths(json.loads(path.read_text()))
    assert not found, f"{path.name}: record paths relative to the repo: {'; '.join(found)}"
