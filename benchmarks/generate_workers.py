"""Generation wall time through the Prefect stack with 1 worker, then 2: does fanning shards out pay?

    python benchmarks/generate_workers.py [--canvases 2000] [--shard-size 100] [--stage stage3]

In a throwaway copy of the repo (its own PREFECT_HOME, a server on a free loopback port) it applies the
deployments, then for each worker count starts that many `prefect worker start` processes and times
`python -m flows run generate --stage S` in deployment mode (the generate run fans its shards out as
`generate-batch` runs, flows/fanout.py). Shard sha256s of every run must equal those of the in-process
`multidigit generate`. Results: benchmarks/results/generate_workers.json. Each worker runs at most 2 flow
runs at once, one of which may be the waiting generate run itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows import deployments  # noqa: E402
from scripts.smoke import make_workspace, workspace_env  # noqa: E402
from services.liveserver import free_port  # noqa: E402

HOOK = "fanout.run_shard_batches("


def shard_hashes(repo: Path, stage: str) -> dict[str, str]:
    manifest = json.loads((repo / "data" / "canvases" / stage / "manifest.json").read_text())
    return {s["file"]: s["sha256"] for split in manifest["splits"].values() for s in split["shards"]}


def prepare(dest: Path, stage: str, canvases: int, shard_size: int) -> Path:
    """A repo copy with `canvases` train canvases for `stage` and MNIST splits copied in."""
    repo = make_workspace(dest, smoke=False)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["generate"]["shard_size"] = shard_size
    params["generate"]["stages"][stage]["canvases"] = {
        "train": canvases,
        "val": shard_size,
        "test": shard_size,
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "data" / "mnist", repo / "data" / "mnist")
    return repo


def wire_hook(repo: Path) -> bool:
    """Make the copy's generate flow call the fan-out hook if it does not yet; True when patched."""
    path = repo / "flows" / "generate.py"
    source = path.read_text()
    if HOOK in source:
        return False
    call = "    results = shards(cfg, stage, out_dir)\n"
    if call not in source:
        sys.exit("flows/generate.py: cannot find where to call flows.fanout.run_shard_batches")
    hooked = (
        "    from flows import fanout\n\n"
        "    results = fanout.run_shard_batches(params, stage, str(out_dir))\n"
        "    if results is None:\n    " + call
    )
    path.write_text(source.replace(call, hooked))
    return True


def timed_run(repo: Path, env: dict[str, str], stage: str) -> float:
    shutil.rmtree(repo / "data" / "canvases", ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flows", "run", "generate", "--stage", stage], cwd=repo, env=env
    )
    if done.returncode != 0:
        sys.exit(f"generate through the stack failed (exit {done.returncode})")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canvases", type=int, default=2000, help="train canvases (val, test: one shard)")
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--stage", default="stage3")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    repo = prepare(tmp / "repo", args.stage, args.canvases, args.shard_size)
    base = workspace_env()
    start = time.perf_counter()
    subprocess.run(["multidigit", "generate", "--stage", args.stage], cwd=repo, env=base, check=True)
    in_process = time.perf_counter() - start
    reference = shard_hashes(repo, args.stage)
    state = tmp / "state"
    results = {"stage": args.stage, "shards": len(reference), "in_process_s": round(in_process, 1)}
    results["hook_patched_into_copy"] = wire_hook(repo)
    try:
        env = deployments.start_server(state, free_port(), repo, base)
        deployments.apply_deployments(repo, env)
        for count in (1, 2):
            pids = deployments.start_workers(count, state, env, repo)
            time.sleep(15)  # let every worker register as ONLINE so the batch count sees it
            results[f"workers_{count}_s"] = round(timed_run(repo, env, args.stage), 1)
            assert shard_hashes(repo, args.stage) == reference, "fanned-out shards differ from in-process"
            for p in pids:
                deployments.stop_process(p)
            for pidfile in state.glob("worker-*.pid"):
                pidfile.unlink()
    finally:
        deployments.down(state)
    results["speedup_2_vs_1"] = round(results["workers_1_s"] / results["workers_2_s"], 2)
    results["cpu_cores"] = os.cpu_count()
    results["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
    results["date"] = time.strftime("%Y-%m-%d")
    out = ROOT / "benchmarks" / "results" / "generate_workers.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
