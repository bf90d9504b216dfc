"""Wall time of a whole `dvc repro` on the default params, from a fresh copy of this checkout.

    python benchmarks/pipeline.py

The copy holds what a clone would (scripts/smoke.py's workspace, default params), so every stage runs:
mnist, generation, pretraining, the three training stages, evaluation and export. Writes
benchmarks/results/pipeline.json with the total, each training stage's own record and the stage-3 metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidigit.atomic import save_json  # noqa: E402
from scripts.smoke import make_workspace, workspace_env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pipeline.json"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        workspace = make_workspace(Path(tmp) / "repo", smoke=False)
        start = time.perf_counter()
        run = subprocess.run(["dvc", "repro"], cwd=workspace, env=workspace_env())
        wall = time.perf_counter() - start
        if run.returncode != 0:
            print(f"dvc repro failed after {wall:.0f} s", file=sys.stderr)
            return run.returncode
        stages = {
            name: json.loads((workspace / "models" / name / info).read_text()).get("wall_seconds")
            for name, info in (
                ("pretrain", "pretrain_info.json"),
                *((s, "train_info.json") for s in ("stage1", "stage2", "stage3")),
            )
        }
        metrics = json.loads((workspace / "metrics" / "stage3.json").read_text())
    result = {
        "dvc_repro_wall_seconds": round(wall, 1),
        "training_wall_seconds": stages,
        "stage3_mAP50": metrics.get("metrics/mAP50"),
        "stage3_mAP50-95": metrics.get("metrics/mAP50-95"),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    save_json(RESULTS, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
