"""The local Prefect stack of `make run`: a loopback server, the deployments, warm workers, an MLflow UI.

`python -m flows.deployments up --workers N` starts `prefect server start` on 127.0.0.1 (or reuses the
one already answering there), waits for its health check, creates the process work pool, applies
prefect.yaml with `prefect deploy`, adds the automation that marks a flow run Crashed when its heartbeats
stop (a killed worker), starts N warm workers (flows/warm.py) and an MLflow UI on the workspace's store,
and writes the API URL to `.stack/api_url`, where `python -m flows run` (every DVC stage) finds it. `down`
stops them all. Every process is a process-group leader with its pid and log under `.stack/` (gitignored),
and Prefect's state (sqlite) lives in `.stack/home`, so nothing touches ~/.prefect.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from flows.runner import STATE_DIR, URL_FILE, WORK_POOL, answers

DEFAULT_PORT = 4200
MLFLOW_PORT = 5000
HEARTBEAT_S = 30  # flow-run heartbeat period (Prefect's minimum)
ZOMBIE_AFTER_S = 90  # no heartbeat for this long -> the automation marks the run Crashed
STOP_GRACE_S = 10.0

ZOMBIE_AUTOMATION = {
    "name": "multidigit: crash flow runs whose heartbeats stopped",
    "description": "A worker (or its machine) died mid-run: fail the run so `dvc repro` fails cleanly.",
    "trigger": {
        "type": "event",
        "posture": "Proactive",
        # Armed by the server's own Running event too: a run killed before its first heartbeat
        # reached the server would otherwise stay Running forever.
        "after": ["prefect.flow-run.Running", "prefect.flow-run.heartbeat"],
        "expect": [
            "prefect.flow-run.heartbeat",
            "prefect.flow-run.Completed",
            "prefect.flow-run.Failed",
            "prefect.flow-run.Cancelled",
            "prefect.flow-run.Crashed",
        ],
        "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
        "for_each": ["prefect.resource.id"],
        "threshold": 1,
        "within": ZOMBIE_AFTER_S,
    },
    "actions": [
        {"type": "change-flow-run-state", "state": "CRASHED", "message": "no heartbeat: its worker died"}
    ],
}


def api_url(port: int) -> str:
    """The loopback API URL of a server on `port`."""
    return f"http://127.0.0.1:{port}/api"


def stack_env(home: Path, url: str | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for every Prefect process of the stack: its own PREFECT_HOME, quick polling, heartbeats.

    Args:
        home: PREFECT_HOME (the server's sqlite database lives there).
        url: the API URL clients and workers talk to; None for the server itself.
        base: the environment to extend (os.environ by default).
    Returns:
        The environment mapping.
    """
    env = dict(os.environ if base is None else base)
    env.update(
        PREFECT_HOME=str(home.resolve()),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="2",  # pick new runs up within 2 s, not 10 s
        PREFECT_WORKER_PREFETCH_SECONDS="2",
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_S),
        PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES="false",
        PREFECT_CLI_PROMPT="false",
    )
    if url:
        env["PREFECT_API_URL"] = url
    else:
        env.pop("PREFECT_API_URL", None)
    return env


def spawn(name: str, argv: Sequence[str], state: Path, env: Mapping[str, str], cwd: Path) -> int:
    """Start `argv` as a process-group leader logging to state/<name>.log; write state/<name>.pid.

    Returns:
        The pid.
    """
    state.mkdir(parents=True, exist_ok=True)
    with open(state / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (state / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def wait_healthy(url: str, timeout_s: float = 180.0, pid: int | None = None) -> None:
    """Poll `url`/health until it answers 200.

    Raises:
        TimeoutError: not healthy within `timeout_s`.
        RuntimeError: the server process `pid` exited first.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid is not None and not is_alive(pid):
            raise RuntimeError(f"prefect server (pid {pid}) exited before it was healthy; see its log")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"{url}/health", timeout=5) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"prefect server at {url} not healthy after {timeout_s:.0f} s")


def deployable(repo: Path) -> list[str]:
    """Names of prefect.yaml deployments whose entrypoint file exists in `repo`."""
    spec = yaml.safe_load((repo / "prefect.yaml").read_text())
    return [d["name"] for d in spec["deployments"] if (repo / d["entrypoint"].split(":")[0]).is_file()]


def prefect_cli(args: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
    """Run one `prefect` CLI command; raise RuntimeError with its output's tail when it fails."""
    argv = [sys.executable, "-m", "prefect", *args]
    done = subprocess.run(argv, cwd=cwd, env=dict(env), capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"`prefect {' '.join(args)}` failed:\n" + "\n".join(tail))


def apply_deployments(
    repo: Path,
    env: Mapping[str, str],
    names: Sequence[str] | None = None,
    zombie_after_s: int = ZOMBIE_AFTER_S,
) -> list[str]:
    """Create the work pool, apply prefect.yaml's deployments and the zombie-run automation.

    Args:
        repo: the repo folder (holds prefect.yaml; becomes the runs' working directory).
        env: a stack environment with PREFECT_API_URL.
        names: deployments to apply; default every one whose flow module exists.
        zombie_after_s: heartbeat silence after which a running flow run is marked Crashed (> HEARTBEAT_S).
    Returns:
        The names applied.
    """
    names = list(names or deployable(repo))
    prefect_cli(["work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"], env, repo)
    deploy_env = {**env, "PWD": str(repo.resolve())}
    prefect_cli(["--no-prompt", "deploy", *(f"--name={n}" for n in names)], deploy_env, repo)
    zombie = {**ZOMBIE_AUTOMATION, "trigger": {**ZOMBIE_AUTOMATION["trigger"], "within": zombie_after_s}}
    replace_automation(env["PREFECT_API_URL"], zombie)
    return names


def replace_automation(url: str, spec: Mapping[str, object]) -> None:
    """Create the automation `spec` on the server at `url`, replacing any with the same name."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.schemas.automations import AutomationCore

    automation = AutomationCore.model_validate(spec)
    with SyncPrefectClient(url) as client:
        for old in client.read_automations_by_name(automation.name):
            client.delete_automation(old.id)
        client.create_automation(automation)


def worker_argv(index: int, limit: int) -> list[str]:
    """The warm worker `index` of the pool (flows/warm.py), running at most `limit` flow runs."""
    return [
        sys.executable, "-m", "flows.warm", "--pool", WORK_POOL, "--name", f"worker-{index}",
        "--limit", str(limit),
    ]  # fmt: skip


def start_workers(count: int, state: Path, env: Mapping[str, str], repo: Path, limit: int = 2) -> list[int]:
    """Start `count` workers in `repo` (their flow runs' default working directory). Returns their pids."""
    return [spawn(f"worker-{i}", worker_argv(i, limit), state, env, repo) for i in range(1, count + 1)]


def is_alive(pid: int) -> bool:
    """True if process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (flow runs start in their own sessions, outside its group)."""
    import psutil

    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    return []


def kill_tree(pid: int, sig: int = signal.SIGTERM) -> None:
    """Send `sig` to `pid`'s process group and to every descendant's group."""
    for target in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(target, sig) if os.getpgid(target) == target else os.kill(target, sig)


def stop_process(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM `pid`'s tree, then SIGKILL whatever is left after `grace_s` seconds."""
    tree = [pid, *descendants(pid)]
    kill_tree(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(is_alive(p) for p in tree):
        time.sleep(0.2)
    for p in tree:
        if is_alive(p):
            kill_tree(p, signal.SIGKILL)


def down(state: Path = STATE_DIR) -> list[str]:
    """Stop every process with a pid file in `state` (workers first). Returns the names stopped."""
    pidfiles = sorted(state.glob("*.pid"), key=lambda p: p.stem == "server")
    stopped = []
    for pidfile in pidfiles:
        pid = int(pidfile.read_text())
        if is_alive(pid):
            stop_process(pid)
            stopped.append(pidfile.stem)
        pidfile.unlink()
    (state / URL_FILE).unlink(missing_ok=True)
    return stopped


def start_server(
    state: Path, port: int, cwd: Path, base: Mapping[str, str] | None = None, timeout_s: float = 300.0
) -> dict[str, str]:
    """Start `prefect server start` on 127.0.0.1:`port` (home: state/home) and wait until it is healthy.

    Args:
        state: the pid/log folder.
        port: the loopback port.
        cwd: the folder the server runs in.
        base: the environment to extend (os.environ by default).
        timeout_s: how long to wait for the health check.
    Returns:
        The stack environment for clients and workers of this server (PREFECT_API_URL set).
    """
    home = state / "home"
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    pid = spawn("server", argv, state, stack_env(home, None, base), cwd)
    wait_healthy(api_url(port), timeout_s, pid=pid)
    return stack_env(home, api_url(port), base)


def alive_pids(state: Path, pattern: str) -> list[int]:
    """Pids of live processes with a pid file matching `pattern` in `state`."""
    pids = [int(p.read_text()) for p in state.glob(pattern)]
    return [pid for pid in pids if is_alive(pid)]


def wait_workers_online(env: Mapping[str, str], count: int, timeout_s: float = 600.0) -> None:
    """Wait until `count` workers of the pool report online (their imports are done), so the first stage
    does not wait for them.

    Raises:
        TimeoutError: fewer are online after `timeout_s`.
    """
    from prefect.client.orchestration import SyncPrefectClient

    deadline = time.monotonic() + timeout_s
    with SyncPrefectClient(env["PREFECT_API_URL"]) as client:
        while time.monotonic() < deadline:
            workers = client.read_workers_for_work_pool(WORK_POOL)
            if sum(str(w.status).endswith("ONLINE") for w in workers) >= count:
                return
            time.sleep(2.0)
    raise TimeoutError(f"fewer than {count} workers online after {timeout_s:.0f} s; see .stack/worker-*.log")


def start_mlflow(state: Path, port: int, repo: Path, env: Mapping[str, str]) -> str:
    """The MLflow UI on the workspace's tracking store (or the configured server's URL); returns its URL.

    With $MLFLOW_TRACKING_URI pointing at a server, that server is the UI. Otherwise an `mlflow server`
    on loopback reads the same sqlite store the stages write (params mlflow.tracking_uri); it is healthy
    (store created and migrated) before any stage writes to it.
    """
    from multidigit.params import load_params

    configured = env.get("MLFLOW_TRACKING_URI") or load_params(repo / "params.yaml").mlflow.tracking_uri
    if configured.startswith("http"):
        return configured
    url = f"http://127.0.0.1:{port}"
    if not alive_pids(state, "mlflow.pid"):
        argv = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", configured, "--workers", "1",
        ]  # fmt: skip
        pid = spawn("mlflow", argv, state, {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, repo)
        wait_healthy(url, timeout_s=300, pid=pid)
    return url


def up(
    repo: Path,
    workers: int,
    port: int,
    state: Path = STATE_DIR,
    limit: int = 2,
    mlflow_port: int | None = None,
) -> dict[str, str]:
    """Start (or reuse) the server, apply the deployments, top the workers up to `workers`.

    Returns:
        {"prefect": UI URL, "api": API URL, "mlflow": MLflow UI URL or ""}.
    """
    url = api_url(port)
    if alive_pids(state, "server.pid") and answers(url):
        env = stack_env(state / "home", url)
    else:
        env = start_server(state, port, repo)
    apply_deployments(repo, env)
    running = len(alive_pids(state, "worker-*.pid"))
    first = len(list(state.glob("worker-*.pid"))) + 1
    for i in range(first, first + max(0, workers - running)):
        spawn(f"worker-{i}", worker_argv(i, limit), state, env, repo)
    wait_workers_online(env, workers)
    mlflow = start_mlflow(state, mlflow_port, repo, env) if mlflow_port else ""
    (state / URL_FILE).write_text(f"{url}\n")
    return {"prefect": url.removesuffix("/api"), "api": url, "mlflow": mlflow}


def status(state: Path = STATE_DIR) -> str | None:
    """The API URL of the stack in `state` when its server answers, else None."""
    from flows.runner import stack_url

    url = stack_url(state)
    return url if url and answers(url) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start (or reuse) server, deployments, workers and MLflow UI")
    start.add_argument("--workers", type=int, default=2, help="warm workers (default: %(default)s)")
    start.add_argument("--limit", type=int, default=2, help="flow runs per worker (default: %(default)s)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help="server port (default: %(default)s)")
    start.add_argument("--mlflow-port", type=int, default=MLFLOW_PORT, help="0: no MLflow UI")
    more = sub.add_parser("workers", help="start more workers against a running server")
    more.add_argument("--workers", type=int, default=1)
    more.add_argument("--limit", type=int, default=2)
    more.add_argument("--port", type=int, default=DEFAULT_PORT)
    sub.add_parser("apply", help="apply the pool, deployments and automation to $PREFECT_API_URL")
    sub.add_parser("down", help="stop every process started by `up`")
    sub.add_parser("status", help="exit 0 and print the API URL when the stack is up")
    for p in (start, more):
        p.add_argument("--state", type=Path, default=STATE_DIR, help="pid/log folder (default: %(default)s)")
    args = parser.parse_args(argv)
    repo = Path.cwd()
    if args.command == "down":
        print("stack stopped:", ", ".join(down()) or "nothing was running")
        return 0
    if args.command == "status":
        url = status()
        print(url or "the stack is not running")
        return 0 if url else 1
    if args.command == "apply":
        if not os.environ.get("PREFECT_API_URL"):
            print("error: PREFECT_API_URL: not set; `apply` needs the server to apply to", file=sys.stderr)
            return 1
        print("applied:", ", ".join(apply_deployments(repo, dict(os.environ))))
        return 0
    try:
        if args.command == "workers":
            first = len(list(args.state.glob("worker-*.pid"))) + 1
            env = stack_env(args.state / "home", api_url(args.port))
            for i in range(first, first + args.workers):
                spawn(f"worker-{i}", worker_argv(i, args.limit), args.state, env, repo)
            return 0
        urls = up(repo, args.workers, args.port, args.state, args.limit, args.mlflow_port or None)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Prefect UI: {urls['prefect']}   (flow runs of every stage; logs and pids in {args.state}/)")
    if urls["mlflow"]:
        print(f"MLflow UI:  {urls['mlflow']}")
    print("`dvc repro` now runs each Prefect stage as a deployment on these workers; `make stop` ends it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
