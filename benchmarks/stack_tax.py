"""What the idle stack costs a training stage: the Keras training step beside a real Prefect server and two
warm workers that poll it, against the same step with the workers stopped, in alternating pairs.

    python benchmarks/stack_tax.py [--pairs 3] [--steps 100]

Each warm worker polls the server with a POST the server answers with database work. Two policies are
measured: the old one (every 0.5 s, always) and the default (`flows/warm.py`: 0.5 s within ACTIVE_S of a
run of its own starting or ending, else IDLE_QUERY_S), after the workers have been idle for longer than
ACTIVE_S, as they are while another worker's stage trains. Stopping the workers (SIGSTOP) leaves the server
with nothing to answer. Per policy it reports training canvases/s polling and stopped (the mean over the
pairs, each pair run back to back, so the machine's drift cancels) and the server's CPU share in each
state. A loopback server on a free port in a temporary state folder: a running `make stack` is not
touched. Writes benchmarks/results/stack_tax.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train_speed import random_batch  # noqa: E402
from flows import deployments, warm  # noqa: E402
from multidigit.atomic import save_json  # noqa: E402
from multidigit.params import load_params  # noqa: E402
from services.liveserver import free_port  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "stack_tax.json"
POLICIES = {"always 0.5 s (before)": ["--idle-query-seconds", "0.5"], "adaptive (default)": []}
WORKERS = 2
BATCH = 32  # canvases per training step, train.batch_size's default
TICK_HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_HZ


def training_step():
    """One stage-3 training step of the default detector on one fixed batch of BATCH random canvases."""
    from multidigit.model import build_detector
    from multidigit.train import compile_detector

    cfg = load_params(ROOT / "params.yaml")
    detector = build_detector(cfg.model)
    compile_detector(detector, cfg, cfg.train.stages["stage3"], steps=100_000)
    x, y = random_batch(cfg, BATCH)
    for _ in range(10):  # trace and warm up
        detector.train_on_batch(x, y)
    return lambda: detector.train_on_batch(x, y)


def measure(step, steps: int, server: int) -> tuple[float, float]:
    """(training canvases/s, server CPU share of one core) over `steps` steps."""
    cpu, start = cpu_seconds(server), time.perf_counter()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - start
    return steps * BATCH / wall, (cpu_seconds(server) - cpu) / wall


def wait_polling(logs: list[Path], timeout_s: float = 300.0) -> None:
    """Until every worker has printed that it polls (its imports are done, its idle clock started)."""
    deadline = time.monotonic() + timeout_s
    while not all(log.is_file() and "polling pool" in log.read_text() for log in logs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not polling after {timeout_s:.0f} s; see {logs[0].parent}")
        time.sleep(0.5)


def policy_pairs(step, workers: list[int], server: int, pairs: int, steps: int) -> dict:
    """Alternate polling / stopped `pairs` times; the workers end running."""
    runs: dict[str, list[tuple[float, float]]] = {"polling": [], "stopped": []}
    for _ in range(pairs):
        for state, sig in (("polling", signal.SIGCONT), ("stopped", signal.SIGSTOP)):
            for pid in workers:
                os.kill(pid, sig)
            time.sleep(1.0)
            runs[state].append(measure(step, steps, server))
    for pid in workers:
        os.kill(pid, signal.SIGCONT)
    out = {}
    for state, rows in runs.items():
        rate, share = np.array(rows).T
        out[state] = {
            "train_canvases_per_s": round(float(rate.mean()), 1),
            "per_run": [round(float(r), 1) for r in rate],
            "server_cpu_share": round(float(share.mean()), 3),
        }
    out["polling_vs_stopped"] = round(
        out["polling"]["train_canvases_per_s"] / out["stopped"]["train_canvases_per_s"], 3
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="training steps per measurement")
    args = parser.parse_args()
    step = training_step()
    result: dict = {"workers": WORKERS, "active_s": warm.ACTIVE_S, "idle_query_s": warm.IDLE_QUERY_S}
    with tempfile.TemporaryDirectory(prefix="stack-tax-") as tmp:
        state = Path(tmp)
        try:
            env = deployments.start_server(state, free_port(), ROOT)
            deployments.apply_deployments(ROOT, env)
            server = int((state / "server.pid").read_text())
            for k, (name, extra) in enumerate(POLICIES.items()):
                ids = range(k * WORKERS + 1, (k + 1) * WORKERS + 1)
                argvs = {i: deployments.worker_argv(i, 2) + extra for i in ids}
                pids = [deployments.spawn(f"worker-{i}", a, state, env, ROOT) for i, a in argvs.items()]
                wait_polling([state / f"worker-{i}.log" for i in ids])
                time.sleep(warm.ACTIVE_S + 2)  # idle, as while another worker's stage trains
                result[name] = policy_pairs(step, pids, server, args.pairs, args.steps)
                print(name, result[name], flush=True)
                for pid in pids:
                    deployments.stop_process(pid)
        finally:
            deployments.down(state)
    result.update(cpu_count=os.cpu_count(), machine=platform.machine(), date=time.strftime("%Y-%m-%d"))
    save_json(RESULTS, result)
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
