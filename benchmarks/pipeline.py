"""Per-stage start-up overhead of the Prefect stages, through the stack vs in-process, from fresh copies.

    python benchmarks/pipeline.py            # default params (the lead's full run)
    python benchmarks/pipeline.py --smoke    # params.smoke.yaml (minutes)
    python benchmarks/pipeline.py --from-log make-run.log --repo DIR   # a finished `make run`, no rerun

For each mode a fresh copy of this checkout (scripts/smoke.py's workspace) runs `multidigit mnist`, then
every Prefect-backed stage's own dvc.yaml command in pipeline order, each timed: that is the stage's wall
time. Its own work is the span of its Prefect task runs (first task start to last task end, nested and
fanned-out runs included), read from the Prefect database afterwards: the stack's `.stack/home` in
deployment mode (the stack comes up before the clock starts, as `make run` does before `dvc repro`), the
ephemeral server's PREFECT_HOME in-process. Overhead = wall - work: imports, Prefect server and engine,
hand-offs. Writes benchmarks/results/pipeline.json: per stage and median for each mode, the totals, and
(full params) the training records and stage-3 metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidigit.atomic import save_json  # noqa: E402
from scripts.smoke import make_workspace, workspace_env  # noqa: E402
from services.liveserver import free_port  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pipeline.json"
STAGES = [
    *(f"generate@stage{i}" for i in (1, 2, 3)),
    "pretrain",
    *(f"train@stage{i}" for i in (1, 2, 3)),
    *(f"evaluate@stage{i}" for i in (1, 2, 3)),
    "export",
]


def stage_commands(repo: Path) -> dict[str, str]:
    """Each Prefect stage's command as DVC resolves it (foreach expanded)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return {s.name: s.cmd for s in dvc_repo.index.stages if s.name in STAGES}


def work_seconds(db: Path, start: float, end: float) -> float:
    """Span of the task runs that started within [start, end] (epoch seconds), from a Prefect sqlite db."""
    with sqlite3.connect(db) as conn:
        query = "SELECT start_time, end_time FROM task_run WHERE start_time IS NOT NULL"
        rows = conn.execute(query).fetchall()
    spans = [(parse(a), parse(b)) for a, b in rows if b]
    inside = [(a, b) for a, b in spans if start <= a <= end]
    return max(b for _, b in inside) - min(a for a, _ in inside) if inside else 0.0


def parse(stamp: str) -> float:
    """A Prefect sqlite timestamp (UTC) as epoch seconds."""
    parsed = datetime.fromisoformat(stamp)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: the stage command's own cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_stages(repo: Path, env: dict[str, str]) -> dict[str, tuple[float, float, float]]:
    """Run every Prefect stage's command in order; {stage: (start, end, wall s, command CPU s)}."""
    subprocess.run(["multidigit", "mnist"], cwd=repo, env=env, check=True, capture_output=True)
    timed = {}
    for name, cmd in sorted(stage_commands(repo).items(), key=lambda kv: STAGES.index(kv[0])):
        cpu, start = children_cpu(), time.time()
        done = subprocess.run(shlex.split(cmd), cwd=repo, env=env, capture_output=True, text=True)
        end = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{(done.stdout + done.stderr)[-3000:]}")
        timed[name] = (start, end, end - start, children_cpu() - cpu)
        print(f"{name}: {end - start:.1f} s", flush=True)
    return timed


def measure(mode: str, smoke: bool, tmp: Path) -> tuple[dict, Path]:
    """Run the stages in a fresh copy in `mode`; returns the per-stage record and the workspace."""
    repo = make_workspace(tmp / mode / "repo", smoke=smoke)
    env = {**workspace_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PREFECT_API_URL", None)
    if mode == "deployment":
        stack = [sys.executable, "-m", "flows.deployments", "up", "--port", str(free_port())]
        subprocess.run([*stack, "--mlflow-port", "0"], cwd=repo, env=env, check=True)
        db = repo / ".stack" / "home" / "prefect.db"
    else:
        env["PREFECT_HOME"] = str(repo / ".bench-prefect-home")  # the ephemeral servers' database
        db = repo / ".bench-prefect-home" / "prefect.db"
    try:
        timed = run_stages(repo, env)
    finally:
        if mode == "deployment":
            subprocess.run([sys.executable, "-m", "flows.deployments", "down"], cwd=repo, env=env)
    stages = {}
    for name, (start, end, wall, cpu) in timed.items():
        work = work_seconds(db, start, end)
        # command_cpu_s: in deployment mode the trigger's own cost (imports), the work runs on a worker
        stages[name] = {"wall_s": round(wall, 1), "work_s": round(work, 1), "command_cpu_s": round(cpu, 1)}
        stages[name]["overhead_s"] = round(wall - work, 1)
    overheads = [s["overhead_s"] for s in stages.values()]
    record = {
        "stages": stages,
        "median_overhead_s": round(statistics.median(overheads), 1),
        "total_wall_s": round(sum(s["wall_s"] for s in stages.values()), 1),
    }
    return record, repo


def from_make_run(log: Path, repo: Path) -> dict:
    """Per-stage overhead of a finished `make run` (its output in `log`, its workspace `repo`): a stage's
    wall time runs from the previous stage's flow-run `Completed` line to its own (DVC hashing and the
    trigger's start-up included), its work is the span of its task runs in the stack's database. The first
    Prefect stage has no previous line and is left out."""
    day = datetime.fromtimestamp(log.stat().st_mtime, UTC).date()
    stage, ends = None, {}
    for line in log.read_text().splitlines():
        if line.startswith("Running stage '"):
            stage = line.split("'")[1]
        elif stage in STAGES and line.endswith("in state 'Completed'"):
            clock = datetime.strptime(line.split(" | ")[0], "%H:%M:%S.%f").time()
            ends[stage] = datetime.combine(day, clock, UTC).timestamp()
    db, stages, previous = repo / ".stack" / "home" / "prefect.db", {}, None
    for name in STAGES:
        if name in ends and previous is not None:
            wall, work = ends[name] - previous, work_seconds(db, previous, ends[name])
            stages[name] = {"wall_s": round(wall, 1), "work_s": round(work, 1)}
            stages[name]["overhead_s"] = round(wall - work, 1)
        previous = ends.get(name, previous)
    overheads = [s["overhead_s"] for s in stages.values()]
    median = round(statistics.median(overheads), 1) if overheads else None
    return {"stages": stages, "median_overhead_s": median}


def training_record(repo: Path) -> dict:
    """Each training stage's own wall seconds and the stage-3 metrics of a full run."""
    stages = ("stage1", "stage2", "stage3")
    infos = (("pretrain", "pretrain_info.json"), *((s, "train_info.json") for s in stages))
    metrics = json.loads((repo / "metrics" / "stage3.json").read_text())
    return {
        "training_wall_seconds": {
            name: json.loads((repo / "models" / name / info).read_text()).get("wall_seconds")
            for name, info in infos
        },
        "stage3_mAP50": metrics.get("metrics/mAP50"),
        "stage3_mAP50-95": metrics.get("metrics/mAP50-95"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="params.smoke.yaml instead of params.yaml")
    parser.add_argument("--modes", nargs="+", default=["deployment", "in-process"])
    parser.add_argument("--from-log", type=Path, help="the output of a finished `make run` (no rerun)")
    parser.add_argument("--repo", type=Path, help="with --from-log: that run's workspace")
    parser.add_argument("--to-serving-s", type=float, help="with --from-log: `make run` to serving, s")
    args = parser.parse_args(argv)
    if args.from_log:
        result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        # a rerun's figure (below), not this log's: kept, it would sit beside a newer make run as if current
        result.pop("dvc_repro_wall_seconds", None)
        result["make_run_stage_overhead"] = from_make_run(args.from_log, args.repo)
        result["make_run_to_serving_seconds"] = args.to_serving_s
        result["date"] = datetime.fromtimestamp(args.from_log.stat().st_mtime, UTC).date().isoformat()
        result |= training_record(args.repo)
        save_json(RESULTS, result)
        print(json.dumps(result["make_run_stage_overhead"], indent=2))
        return 0
    overhead = {"params": "smoke" if args.smoke else "full", "load_average_1min_at_start": os.getloadavg()[0]}
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        for mode in args.modes:
            try:
                overhead[mode], repo = measure(mode, args.smoke, Path(tmp))
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"{mode}: {exc}", file=sys.stderr)
                return 1
            if mode == "deployment" and not args.smoke:  # what `make run` rebuilds, on the stack
                result.update(dvc_repro_wall_seconds=overhead[mode]["total_wall_s"], **training_record(repo))
                result["date"] = datetime.now(UTC).date().isoformat()
            # saved after each mode: the in-process pass is the slow one
            overhead |= {"cpu_count": os.cpu_count(), "load_average_1min_at_end": os.getloadavg()[0]}
            result[f"stage_overhead_{overhead['params']}"] = overhead
            save_json(RESULTS, result)
    print(json.dumps(overhead, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
