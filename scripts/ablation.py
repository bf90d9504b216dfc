"""Transfer-learning ablation A/B/C with `dvc exp run -S pretrain.source=...`, on a reduced budget.

A = backbone pretrained on digit crops of synthetic canvases, B = on plain MNIST, C = from scratch.
Each variant runs as a DVC experiment in a throwaway workspace (so this checkout's outputs stay as they
are) up to `evaluate@stage1`: pretrain, train@stage1 and the stage-1 test metrics. Writes
reports/ablation.json, which `make report` puts in the README.

    python scripts/ablation.py [--canvases 3000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multidigit.atomic import save_json
from scripts.smoke import ROOT, make_workspace, workspace_env

VARIANTS = (("A", "synthetic"), ("B", "mnist"), ("C", "none"))
TARGET = "evaluate@stage1"
KEYS = ("metrics/mAP50", "metrics/mAP50-95", "class/accuracy", "canvas/accuracy")


def reduced_params(workspace: Path, canvases: int, epochs: int) -> None:
    """Shrink stage 1 to the ablation budget and open its gate (the point is to compare, not to pass)."""
    path = workspace / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["generate"]["stages"]["stage1"]["canvases"]["train"] = canvases
    params["train"]["stages"]["stage1"]["epochs"] = epochs
    params["evaluate"]["gates"]["stage1"] = {"map50": 0.0, "map50_95": 0.0}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd: list[str], cwd: Path) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, env=workspace_env(), check=True)


def run_variant(workspace: Path, key: str, source: str) -> dict[str, float]:
    """One `dvc exp run` with pretrain.source set; returns the stage-1 test figures."""
    start = time.perf_counter()
    run(["dvc", "exp", "run", "-n", f"ablation-{key}", "-S", f"pretrain.source={source}", TARGET], workspace)
    metrics = json.loads((workspace / "metrics" / "stage1.json").read_text())
    figures = {k: metrics[k] for k in KEYS if k in metrics}
    figures["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(f"{key} ({source}): {figures}", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canvases", type=int, default=3000, help="stage-1 train canvases")
    parser.add_argument("--epochs", type=int, default=1, help="stage-1 epochs")
    parser.add_argument("--out", default=str(ROOT / "reports" / "ablation.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
        workspace = make_workspace(Path(tmp) / "repo", smoke=False)
        reduced_params(workspace, args.canvases, args.epochs)
        run(["git", "add", "-A"], workspace)
        run(["git", "commit", "-qm", "ablation baseline"], workspace)
        results = {key: run_variant(workspace, key, source) for key, source in VARIANTS}
    budget = (
        f"stage-1 test split after pretrain + {args.epochs} epoch(s) on {args.canvases} stage-1 canvases; "
        f"A pretrains on the {args.canvases} digit crops of those canvases, B on pretrain.limit MNIST digits"
    )
    save_json(args.out, {"budget": budget, **results})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
