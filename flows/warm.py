"""The stack's warm worker: polls the process work pool and runs each flow run in a fork of itself.

`prefect worker start` and `flow.serve()` start every flow run in a fresh interpreter (`python -m
prefect.engine`, or a multiprocessing *spawn* child), so every run of a TensorFlow stage paid the
imports again (18-40 s on a loaded 2-core machine). This worker imports Prefect, the flow modules,
TensorFlow, Keras and MLflow once, before it touches the API (no threads, no event loop yet), then for
each scheduled run of the pool claims it (Pending, as Prefect's workers do), forks, and the child runs
it with Prefect's own engine calls (`load_flow_run`, `run_flow`, `handle_engine_signals`), exactly as
`python -m prefect.engine` would, in the run's `working_dir` with its `env`. A fork starts from the
imported modules but no state of any earlier run, so outputs equal those of a fresh process.

    python -m flows.warm --pool multidigit-process --name warm-1 --limit 2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PRELOAD = (
    "tensorflow",
    "keras",
    "mlflow",
    "multidigit.train",
    "multidigit.pretrain",
    "multidigit.evaluation.stage",
    "multidigit.export",
    "multidigit.canvas",
    "multidigit.preview",
)
HEARTBEAT_S = 10.0  # worker heartbeat: the UI shows it online, fanout counts it
# Polling. Every poll is a POST the server answers with database work: two workers at 0.5 s kept the
# loopback server at 12.5% of a core (2% without them), and TensorFlow's two-thread training step beside
# it ran at 0.92 of its speed (benchmarks/stack_tax.py; adaptive: 3.4% and 0.97). A worker polls every
# `query_s` while it is active (a run of its own started or ended within ACTIVE_S: the worker that ran
# stage N picks stage N + 1 up at once), else every IDLE_QUERY_S, so a 13-minute training stage is not
# taxed by the pickup speed of the next one.
ACTIVE_S = 30.0
IDLE_QUERY_S = 5.0
TICK_S = 0.25  # between polls: reap finished runs and notice SIGTERM this often (no API call)
CODE_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("multidigit", "flows")  # the project's code a flow run executes


def code_snapshot() -> dict[str, int]:
    """mtime of every loaded module of this project: an edit makes the warm copies stale."""
    files = (getattr(m, "__file__", None) for m in list(sys.modules.values()))
    paths = {Path(f).resolve() for f in files if f}
    ours = [p for p in paths if p.is_relative_to(CODE_ROOT) and p.relative_to(CODE_ROOT).parts[0] in PACKAGES]
    return {str(p): p.stat().st_mtime_ns for p in ours if p.exists()}


def is_stale(snapshot: dict[str, int]) -> bool:
    """True when a project module changed on disk since it was imported here."""
    for path, mtime in snapshot.items():
        try:
            if Path(path).stat().st_mtime_ns != mtime:
                return True
        except FileNotFoundError:
            return True
    return False


def preload(flow_targets: list[str]) -> None:
    """Import the flow modules and the heavy libraries the stages use, once, in the parent."""
    import prefect.engine
    import prefect.flow_engine  # noqa: F401

    for target in [*(t.split(":")[0] for t in flow_targets), *PRELOAD]:
        importlib.import_module(target)


def run_child(flow_run_id: Any, entrypoint: str, variables: dict[str, Any]) -> None:
    """In the forked child: run one flow run with Prefect's engine and exit with its code."""
    os.setsid()  # its own session, like a worker's flow-run process; `down` kills descendants too
    code = 1
    try:
        os.chdir(variables.get("working_dir") or os.getcwd())
        os.environ.update({k: str(v) for k, v in (variables.get("env") or {}).items()})
        os.environ["PREFECT__FLOW_RUN_ID"] = str(flow_run_id)
        from prefect.engine import handle_engine_signals
        from prefect.flow_engine import flow_run_logger, load_flow_run, run_flow
        from prefect.flows import load_flow_from_entrypoint

        with handle_engine_signals(flow_run_id):
            flow_run = load_flow_run(flow_run_id=flow_run_id)
            flow = load_flow_from_entrypoint(entrypoint)
            run_flow(flow, flow_run=flow_run, error_logger=flow_run_logger(flow_run=flow_run))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        code = 1
    finally:
        flush_logs()
        os._exit(code)


def flush_logs() -> None:
    """Send the child's buffered run logs to the API before os._exit skips the atexit drain."""
    import contextlib

    from prefect.logging.handlers import APILogHandler

    with contextlib.suppress(Exception):
        APILogHandler.flush()


class WarmWorker:
    """One worker of `pool`: at most `limit` forked flow runs at a time."""

    def __init__(
        self,
        pool: str,
        name: str,
        limit: int,
        query_s: float,
        alive: Path | None = None,
        idle_query_s: float = IDLE_QUERY_S,
    ) -> None:
        self.pool, self.name, self.limit, self.query_s, self.alive = pool, name, limit, query_s, alive
        self.idle_query_s = max(idle_query_s, query_s)
        self.active_at = time.monotonic()  # a new worker is active: a run may be waiting for it already
        self.children: dict[int, Any] = {}  # pid -> flow run id
        self.entrypoints: dict[Any, tuple[str, dict]] = {}  # deployment id -> (entrypoint, job variables)
        self.stopping = False
        self.snapshot = code_snapshot()

    def deployment(self, client: Any, deployment_id: Any) -> tuple[str, dict]:
        if deployment_id not in self.entrypoints:
            found = client.read_deployment(deployment_id)
            self.entrypoints[deployment_id] = (found.entrypoint, dict(found.job_variables or {}))
        return self.entrypoints[deployment_id]

    def claim(self, client: Any, flow_run: Any) -> bool:
        """Move a scheduled run to Pending; False when another worker got it first."""
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.states import Pending

        try:
            return client.set_flow_run_state(flow_run.id, Pending()).status == SetStateStatus.ACCEPT
        except Exception:
            return False

    def start(self, client: Any, flow_run: Any) -> None:
        entrypoint, variables = self.deployment(client, flow_run.deployment_id)
        variables = {**variables, **(flow_run.job_variables or {})}
        pid = os.fork()
        if pid == 0:
            run_child(flow_run.id, entrypoint, variables)
        self.children[pid] = flow_run.id
        self.active_at = time.monotonic()
        print(f"{self.name}: flow run {flow_run.name!r} started (pid {pid})", flush=True)

    def reap(self, client: Any) -> bool:
        """Collect finished children; a run whose process died without a final state is Crashed.
        Returns whether any child finished."""
        from prefect.states import Crashed

        reaped = False
        for pid in list(self.children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
            reaped = True
            run_id = self.children.pop(pid)
            self.active_at = time.monotonic()
            state = client.read_flow_run(run_id).state
            if state is None or not state.is_final():
                why = f"its process exited with status {os.waitstatus_to_exitcode(status)}"
                client.set_flow_run_state(run_id, Crashed(message=why), force=True)
        return reaped

    def poll(self, client: Any) -> None:
        now = datetime.now(UTC)
        for response in client.get_scheduled_flow_runs_for_work_pool(self.pool, scheduled_before=now):
            if len(self.children) >= self.limit:
                return
            flow_run = response.flow_run
            if flow_run.deployment_id and self.claim(client, flow_run):
                self.start(client, flow_run)

    def poll_period(self, now: float) -> float:
        """Seconds to the next poll: `query_s` within ACTIVE_S of this worker's last run start or end."""
        return self.query_s if now - self.active_at < ACTIVE_S else self.idle_query_s

    def serve(self) -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            beat = 0.0
            while not self.stopping:
                self.reap(client)
                if time.monotonic() - beat > HEARTBEAT_S:
                    client.send_worker_heartbeat(self.pool, self.name, heartbeat_interval_seconds=HEARTBEAT_S)
                    beat = time.monotonic()
                    if self.alive:  # a container healthcheck reads its age
                        self.alive.touch()
                if is_stale(self.snapshot):
                    # the code changed: finish the runs in flight, then restart with fresh imports
                    self.reexec_when_idle(client)
                if len(self.children) < self.limit:
                    self.poll(client)
                self.wait(client, self.poll_period(time.monotonic()))
            while self.children:  # SIGTERM: let the runs' own SIGTERM handling mark them, then reap
                self.reap(client)
                time.sleep(0.2)

    def wait(self, client: Any, period: float) -> None:
        """Sleep up to `period` in TICK_S steps; return early on SIGTERM or when a run of ours ends (the
        worker is then active, and the pipeline's next stage is about to be scheduled)."""
        deadline = time.monotonic() + period
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(TICK_S, left))
            if self.reap(client):
                return

    def reexec_when_idle(self, client: Any) -> None:
        while self.children:
            self.reap(client)
            time.sleep(0.2)
        print(f"{self.name}: the project's code changed; restarting with fresh imports", flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "flows.warm", *sys.argv[1:]])

    def stop(self, *_: Any) -> None:
        self.stopping = True
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.warm", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--name", default=f"warm-{os.getpid()}")
    parser.add_argument("--limit", type=int, default=2, help="flow runs at a time (default: %(default)s)")
    parser.add_argument(
        "--query-seconds", type=float, default=0.5, help="poll period while active (default: %(default)s)"
    )
    parser.add_argument(
        "--idle-query-seconds",
        type=float,
        default=IDLE_QUERY_S,
        help=f"poll period after {ACTIVE_S:g} s without a run starting or ending here (default: %(default)s)",
    )
    parser.add_argument("--alive-file", type=Path, help="touched after every worker heartbeat")
    args = parser.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print("error: PREFECT_API_URL: not set; the warm worker needs a server", file=sys.stderr)
        return 1
    from flows.__main__ import FLOWS
    from flows.fanout import shard_batch_flow

    preload([*FLOWS.values(), f"{shard_batch_flow.__module__}:shard_batch_flow"])
    worker = WarmWorker(
        args.pool, args.name, args.limit, args.query_seconds, args.alive_file, args.idle_query_seconds
    )
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    print(f"{args.name}: polling pool {args.pool!r} (limit {args.limit})", flush=True)
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
