"""The pipeline through the real local stack: server, warm workers, deployments, `dvc repro`, MLflow server.

One module-scoped stack on free loopback ports, brought up in a smoke copy of the repo with the same
command as `make run` (`python -m flows.deployments up`: pids, logs, PREFECT_HOME and the api_url file in
the copy's `.stack/`, so ~/.prefect is never touched), next to a real `mlflow server` (sqlite in tmp).
Then a plain `dvc repro` runs there with no PREFECT_API_URL set: every Prefect-backed stage must find
the stack in `.stack/` and run as its deployment on a warm worker. Its dvc.lock hashes are compared with
the in-process smoke run (conftest smoke_workspace), and `make stop` must leave no process behind.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from flows import deployments
from flows.__main__ import FLOWS
from scripts.smoke import make_workspace
from services.liveserver import free_port
from tests.conftest import pipeline_env

pytestmark = pytest.mark.slow
ZOMBIE_AFTER_S = 60  # heartbeats come every 30 s; a killed worker's run is Crashed ~60-70 s later
FLOW_CMD = re.compile(r"python -m flows run (\w+)(?: --stage (\w+))?")


def expand_stages(repo: Path) -> dict[str, dict]:
    """dvc.yaml's stages as DVC resolves them (foreach expanded): {"train@stage1": {cmd, deps, outs}}."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return {
            stage.name: {
                "cmd": stage.cmd,
                "deps": [dep.def_path for dep in stage.deps],
                "outs": [out.def_path for out in stage.outs],
            }
            for stage in dvc_repo.index.stages
        }


def runnable_stages(repo: Path) -> dict[str, dict]:
    """The stages whose flow module exists and whose deps exist or come from another runnable stage."""
    stages, runnable, produced = expand_stages(repo), {}, set()
    for name, spec in list(stages.items()):
        flow = FLOW_CMD.search(spec["cmd"])
        module = flow and repo / (FLOWS[flow.group(1)].split(":")[0].replace(".", "/") + ".py")
        if module and not module.exists():
            del stages[name]
    changed = True
    while changed:  # a fixpoint: DVC lists stages in no particular order
        changed = False
        for name, spec in stages.items():
            made = lambda d: (repo / d).exists() or any(d == o or d.startswith(f"{o}/") for o in produced)  # noqa: E731
            if name not in runnable and all(made(d) for d in spec["deps"]):
                runnable[name], changed = spec, True
                produced.update(spec["outs"])
    return runnable


@dataclass
class Stack:
    repo: Path  # the smoke repo copy the workers run in
    shell: dict[str, str]  # a user's environment: MLFLOW_TRACKING_URI, MNIST_DIR, PATH; no PREFECT_API_URL
    env: dict[str, str]  # the stack's: PREFECT_API_URL, PREFECT_HOME as well
    stages: dict[str, dict]  # the runnable dvc.yaml stages
    applied: list[str]  # the deployments applied
    state: Path  # pid and log files


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mnist_dir):
    """A running stack (server + one warm worker) and MLflow server around a smoke repo copy."""
    tmp = tmp_path_factory.mktemp("stack")
    repo = make_workspace(tmp / "repo")
    state = repo / ".stack"
    prefect_port, mlflow_port = free_port(), free_port()
    base = pipeline_env(mnist_dir)
    base["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{mlflow_port}"
    mlflow_argv = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
        "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "art"),
        "--workers", "1",
    ]  # fmt: skip
    try:
        # No job-runner side processes: the test only needs tracking.
        mlflow_env = {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        deployments.spawn("mlflow", mlflow_argv, state, mlflow_env, tmp)
        deployments.wait_healthy(base["MLFLOW_TRACKING_URI"], timeout_s=240)  # mlflow answers /health
        up = [sys.executable, "-m", "flows.deployments", "up", "--workers", "1", "--port", str(prefect_port)]
        done = subprocess.run(up, cwd=repo, env=base, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in done.stdout
        assert f"MLflow UI:  {base['MLFLOW_TRACKING_URI']}" in done.stdout
        env = deployments.stack_env(state / "home", deployments.api_url(prefect_port), base)
        applied = deployments.deployable(repo)
        # the user's shell: no PREFECT_API_URL; the stage commands find .stack/api_url
        yield Stack(repo, base, env, runnable_stages(repo), applied, state)
    finally:
        deployments.down(state)


def flow_runs_of(url: str, deployment: str) -> list:
    """Every flow run of the deployment called `deployment` (its entrypoint from the flow table)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    from flows.runner import find_deployment

    with SyncPrefectClient(url) as client:
        found = find_deployment(client, deployment, FLOWS[deployment])
        by_deployment = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[found.id]))
        return client.read_flow_runs(flow_run_filter=by_deployment)


@pytest.fixture(scope="module")
def repro(stack):
    """A plain `dvc repro` of every runnable stage, once: it must go through the stack it finds."""
    argv = ["dvc", "repro", *stack.stages]
    done = subprocess.run(argv, cwd=stack.repo, env=stack.shell, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_flow_stages_are_deployed(stack):
    stages = stack.stages
    flow_stages = [s for s in stages if FLOW_CMD.search(stages[s]["cmd"])]
    assert any(s.startswith("generate@") for s in flow_stages), "the generate flow must take part"
    assert {FLOW_CMD.search(stages[s]["cmd"]).group(1) for s in flow_stages} <= set(stack.applied)


def test_every_flow_stage_ran_as_one_deployment_run_tagged_with_its_stage(stack, repro):
    repo, env = stack.repo, stack.env
    assert "running in-process" not in repro
    for name, spec in stack.stages.items():
        flow = FLOW_CMD.search(spec["cmd"])
        if not flow:
            continue
        runs = [r for r in flow_runs_of(env["PREFECT_API_URL"], flow.group(1)) if f"dvc:{name}" in r.tags]
        assert [r.state.type.value for r in runs] == ["COMPLETED"], name
        assert runs[0].parameters.get("stage") == flow.group(2)
        assert runs[0].job_variables["working_dir"] == str(repo.resolve())
        assert f"flow run {runs[0].name!r} ({runs[0].id}) finished Completed" in repro


# Outputs that record when or how long, not what: wall seconds, Keras' date_saved, the TF.js version's
# time-stamped folder name. Everything else a stage writes must be the same bytes.
TIMED_OUTS = re.compile(r"(_info\.json|\.keras|^models/tfjs)$")


def out_hashes(entry: dict, key: str = "outs") -> dict[str, str]:
    return {o["path"]: o.get("md5") for o in entry.get(key, []) if not TIMED_OUTS.search(o["path"])}


def npz_difference(ours: Path, theirs: Path) -> str:
    """Which arrays of two .npz files differ, and in how many values."""
    import numpy as np

    with np.load(ours) as a, np.load(theirs) as b:  # each read once: an NpzFile inflates on every lookup
        mine, other = dict(a.items()), dict(b.items())
    notes = [f"{key} in one only" for key in sorted(mine.keys() ^ other.keys())]
    for key in sorted(mine.keys() & other.keys()):
        x, y = mine[key], other[key]
        if x.shape != y.shape:
            notes.append(f"{key}: shape {x.shape} vs {y.shape}")
        elif not np.array_equal(x, y):
            notes.append(f"{key}: {int(np.sum(x != y))} of {x.size} values differ")
    return "; ".join(notes) or "equal arrays, other bytes"


def describe_difference(ours: Path, theirs: Path) -> str:
    """What differs between two copies of an output, file by file (npz: array by array), so a failure
    says where the bytes parted, not only that a folder's hash did."""

    def files(root: Path) -> dict[str, Path]:
        if not root.is_dir():
            return {root.name: root} if root.exists() else {}
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}

    mine, other = files(ours), files(theirs)
    notes = [f"{rel}: only in the stack's copy" for rel in sorted(set(mine) - set(other))]
    notes += [f"{rel}: only in the in-process copy" for rel in sorted(set(other) - set(mine))]
    for rel in sorted(set(mine) & set(other)):
        a, b = mine[rel].read_bytes(), other[rel].read_bytes()
        if a == b:
            continue
        sizes = f"{len(a)} vs {len(b)} bytes"
        notes.append(f"{rel}: " + (npz_difference(mine[rel], other[rel]) if rel.endswith(".npz") else sizes))
    return f"{ours.name}: " + (", ".join(notes) or "no file differs")


def test_the_lock_hashes_equal_those_of_the_in_process_run(stack, repro, smoke_workspace):
    # The in-process smoke run of this session (conftest): same params and code, so the same bytes.
    ours = yaml.safe_load((stack.repo / "dvc.lock").read_text())["stages"]
    theirs = yaml.safe_load((smoke_workspace / "dvc.lock").read_text())["stages"]
    flow_stages = [name for name in stack.stages if FLOW_CMD.search(stack.stages[name]["cmd"])]
    compared = [name for name in flow_stages if name in theirs]
    assert any(name.startswith("generate@") for name in compared)
    for name in compared:
        same_inputs = out_hashes(ours[name], "deps") == out_hashes(theirs[name], "deps")
        assert same_inputs, f"{name}: the two copies ran different code or data"
        a, b = out_hashes(ours[name]), out_hashes(theirs[name])
        differing = sorted(path for path in a.keys() | b.keys() if a.get(path) != b.get(path))
        assert not differing, f"{name}: " + "; ".join(
            describe_difference(stack.repo / p, smoke_workspace / p) for p in differing
        )
    assert sum(len(out_hashes(ours[name])) for name in compared) >= 2 * len(compared)


def test_every_stage_output_exists_and_dvc_is_up_to_date(stack, repro):
    repo, env, stages = stack.repo, stack.env, stack.stages
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for name in stages:
        assert name in lock, f"dvc.lock lacks {name}"
        for out in lock[name].get("outs", []):
            assert (repo / out["path"]).exists(), out["path"]
    status = subprocess.run(["dvc", "status", *stages], cwd=repo, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout


def test_the_mlflow_server_received_the_pipeline_run(stack, repro):
    from mlflow import MlflowClient

    from multidigit.tracking import KIND_TAG

    env = stack.env
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("multidigit")
    runs = client.search_runs([experiment.experiment_id])
    pipeline = [r for r in runs if r.data.tags.get(KIND_TAG) == "pipeline"]
    assert len(pipeline) == 1
    for run in runs:
        if run.data.tags.get(KIND_TAG) == "stage":
            assert run.data.tags["mlflow.parentRunId"] == pipeline[0].info.run_id
    generate = flow_runs_of(env["PREFECT_API_URL"], "generate")
    assert all(r.job_variables["env"]["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"] for r in generate)


def test_a_failing_run_exits_non_zero_with_one_line(stack, repro, tmp_path):
    # A folder with the code and params but no data/mnist: the flow run fails on the worker.
    shutil.copytree(stack.repo / "flows", tmp_path / "flows")
    shutil.copy(stack.repo / "params.yaml", tmp_path / "params.yaml")
    argv = [sys.executable, "-m", "flows", "run", "generate", "--stage", "stage1"]
    done = subprocess.run(argv, cwd=tmp_path, env=stack.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("generate/generate: flow run ")
    final = r"generate/generate: flow run '[\w-]+' \([0-9a-f-]+\) finished Failed: .*data/mnist.*"
    assert re.fullmatch(final, lines[-1]), lines[-1]


def test_an_unknown_deployment_is_a_one_line_lookup_error(stack):
    from prefect.client.orchestration import SyncPrefectClient

    from flows.runner import find_deployment

    env = stack.env
    with SyncPrefectClient(env["PREFECT_API_URL"]) as client, pytest.raises(LookupError, match="not found"):
        find_deployment(client, "generate", "flows.nowhere:missing_flow")


def wait_for(predicate, timeout_s: float, what: str):
    """Poll `predicate` every second until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def lock_outs(repo: Path, stage: str) -> dict[str, str]:
    outs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]["outs"]
    return {o["path"]: o["md5"] for o in outs}


def test_a_killed_worker_fails_the_stage_and_a_rerun_restores_the_outputs(stack):
    import numpy as np

    repo, env, url, target = stack.repo, stack.env, stack.env["PREFECT_API_URL"], "generate@stage2"
    if target not in stack.stages:
        pytest.skip(f"{target} is not a runnable stage of dvc.yaml")
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    # The undisturbed outputs (a no-op when the repro fixture already ran).
    first = subprocess.run(["dvc", "repro", target], cwd=repo, env=env, timeout=600, **pipe)
    assert first.returncode == 0, first.stdout[-3000:]
    undisturbed = lock_outs(repo, target)
    known = {r.id for r in flow_runs_of(url, "generate")}
    argv = ["dvc", "repro", "--force", "--single-item", target]
    client = subprocess.Popen(argv, cwd=repo, env=env, **pipe)
    try:

        def running():
            runs = flow_runs_of(url, "generate")
            return next((r for r in runs if r.id not in known and r.state.type.value == "RUNNING"), None)

        run = wait_for(running, 300, "the generate run to start")
        # Machine or container loss: the worker and the flow-run processes it started all die at once.
        deployments.kill_tree(int((stack.state / "worker-1.pid").read_text()), signal.SIGKILL)
        out, _ = client.communicate(timeout=ZOMBIE_AFTER_S + 240)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode != 0, out[-2000:]
    assert f"flow run {run.name!r} ({run.id}) finished Crashed" in out
    for shard in (repo / "data" / "canvases" / "stage2").rglob("shard-*.npz"):
        with np.load(shard) as arrays:  # whatever was written before the kill is whole (atomic renames)
            assert set(arrays.files) == {"images", "boxes", "labels"}
    deployments.spawn("worker-2", deployments.worker_argv(2, limit=2), stack.state, env, repo)
    done = subprocess.run(["dvc", "repro", target], cwd=repo, env=env, timeout=600, **pipe)
    assert done.returncode == 0, done.stdout[-3000:]
    assert lock_outs(repo, target) == undisturbed


def test_make_stop_leaves_no_process_behind(stack):
    pids = [int(p.read_text()) for p in stack.state.glob("*.pid")]
    tree = [pid for pid in pids for pid in (pid, *deployments.descendants(pid))]
    assert any(deployments.is_alive(pid) for pid in tree)
    done = subprocess.run(["make", "stop"], cwd=stack.repo, env=stack.shell, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [pid for pid in tree if deployments.is_alive(pid)] == []
    assert not list(stack.state.glob("*.pid")) and not (stack.state / "api_url").exists()
