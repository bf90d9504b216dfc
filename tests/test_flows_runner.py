"""flows/runner.py, flows/deployments.py, flows/fanout.py without a server: naming, environment, batching,
process-tree handling. The server-backed behaviour is in test_prefect_integration.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows import deployments, fanout, runner
from flows.__main__ import FLOWS

ROOT = Path(__file__).resolve().parents[1]


def prefect_spec() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_entrypoint_of_gives_the_prefect_yaml_form():
    assert runner.entrypoint_of("flows.generate:generate_flow") == "flows/generate.py:generate_flow"


def test_prefect_yaml_deploys_every_flow_of_the_table_on_the_process_pool():
    by_name = {d["name"]: d for d in prefect_spec()["deployments"]}
    for name, target in FLOWS.items():
        assert by_name[name]["entrypoint"] == runner.entrypoint_of(target)
    assert by_name[fanout.BATCH_DEPLOYMENT]["entrypoint"] == "flows/fanout.py:shard_batch_flow"
    assert {d["work_pool"]["name"] for d in by_name.values()} == {runner.WORK_POOL}


def test_ui_url_points_at_the_flow_run_page():
    assert runner.ui_url("http://127.0.0.1:4200/api", "abc") == "http://127.0.0.1:4200/runs/flow-run/abc"


def test_job_variables_pin_the_working_dir_and_forward_the_stores(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.setenv("MULTIDIGIT_PIPELINE_RUN_ID", "abc123")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.delenv("MNIST_DIR", raising=False)
    variables = runner.job_variables("params.yaml")
    assert variables["working_dir"] == str(tmp_path.resolve())
    assert variables["env"] == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MULTIDIGIT_PIPELINE_RUN_ID": "abc123",
    }


@pytest.mark.parametrize(("items", "count"), [(10, 3), (7, 7), (5, 1), (9, 4), (1, 1)])
def test_split_batches_covers_every_item_once_in_order(items, count):
    batches = fanout.split_batches(list(range(items)), count)
    assert [i for batch in batches for i in batch] == list(range(items))
    assert all(batches) and len(batches) <= count


def test_batch_count_is_bounded_by_shards_and_workers():
    assert fanout.batch_count(30, 2) == 2 * fanout.BATCHES_PER_WORKER
    assert fanout.batch_count(3, 8) == 3
    assert fanout.batch_count(5, 0) == fanout.BATCHES_PER_WORKER  # no worker online yet: still progress


def test_shard_batches_are_not_fanned_out_outside_a_deployment(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never contacted
    assert not fanout.is_deployed_run()
    assert fanout.run_shard_batches("params.yaml", "stage1", "data/canvases/stage1") is None


def test_deployable_skips_flows_whose_module_is_missing(tmp_path):
    shutil.copy(ROOT / "prefect.yaml", tmp_path / "prefect.yaml")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "generate.py").write_text("")
    (tmp_path / "flows" / "fanout.py").write_text("")
    assert deployments.deployable(tmp_path) == ["generate", fanout.BATCH_DEPLOYMENT]


def test_the_stack_workers_are_warm_workers_of_the_pool():
    argv = deployments.worker_argv(3, limit=2)
    assert argv[1:] == ["-m", "flows.warm", "--pool", runner.WORK_POOL, "--name", "worker-3", "--limit", "2"]


def test_stack_env_isolates_prefect_home_and_targets_the_server(tmp_path):
    server = deployments.stack_env(tmp_path / "home", None, {"PREFECT_API_URL": "http://elsewhere"})
    assert "PREFECT_API_URL" not in server
    assert server["PREFECT_HOME"] == str((tmp_path / "home").resolve())
    client = deployments.stack_env(tmp_path / "home", "http://127.0.0.1:1234/api", {})
    assert client["PREFECT_API_URL"] == "http://127.0.0.1:1234/api"
    assert client["PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES"] == "false"


# A parent that starts a child in its own session (as the worker does with each flow run) and sleeps.
PARENT = (
    "import subprocess, sys, time\n"
    "sleep = [sys.executable, '-c', 'import time; time.sleep(120)']\n"
    "child = subprocess.Popen(sleep, start_new_session=True)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def test_down_stops_every_process_and_its_detached_children(tmp_path):
    pid = deployments.spawn("worker-1", [sys.executable, "-c", PARENT], tmp_path, {"PATH": ""}, tmp_path)
    log = tmp_path / "worker-1.log"
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(log.read_text().split()[0])
    assert deployments.is_alive(pid) and deployments.is_alive(child)
    assert deployments.descendants(pid) == [child]
    assert deployments.down(tmp_path) == ["worker-1"]
    assert not deployments.is_alive(pid) and not deployments.is_alive(child)
    assert not list(tmp_path.glob("*.pid"))


def test_wait_healthy_names_a_dead_server(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(RuntimeError, match=f"pid {proc.pid}"):
        deployments.wait_healthy("http://127.0.0.1:9/api", timeout_s=5, pid=proc.pid)


def test_wait_healthy_times_out_on_a_silent_port():
    with pytest.raises(TimeoutError, match="not healthy"):
        deployments.wait_healthy("http://127.0.0.1:9/api", timeout_s=1)


def test_apply_without_a_server_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert deployments.main(["apply"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: PREFECT_API_URL: not set; `apply` needs the server to apply to"
    )


def test_bad_params_fail_before_any_run_is_triggered(monkeypatch, tmp_path, capsys):
    from flows.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens: never reached
    monkeypatch.delenv("MULTIDIGIT_PIPELINE_RUN_ID", raising=False)
    (tmp_path / "bad.yaml").write_text("seed: -1\n")
    assert main(["run", "generate", "--stage", "stage1", "--params", "bad.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: params: ") and "\n" not in err


def test_a_warm_worker_sees_its_code_go_stale(tmp_path):
    from flows import warm

    snapshot = warm.code_snapshot()
    assert str(Path(warm.__file__).resolve()) in snapshot
    assert not any(path.startswith(str(ROOT / ".venv")) for path in snapshot)
    assert not warm.is_stale(snapshot)
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    mine = {str(module): module.stat().st_mtime_ns}
    os.utime(module, ns=(0, module.stat().st_mtime_ns + 1))
    assert warm.is_stale(mine)
    module.unlink()
    assert warm.is_stale({str(module): 0})


def test_a_warm_worker_polls_fast_only_while_active():
    from flows import warm

    worker = warm.WarmWorker("pool", "w", limit=2, query_s=0.5, idle_query_s=5.0)
    began = worker.active_at
    assert worker.poll_period(began + 1) == 0.5  # just started: a run may be waiting
    assert worker.poll_period(began + warm.ACTIVE_S + 1) == 5.0  # idle: no load on the server
    assert warm.WarmWorker("pool", "w", 2, query_s=2.0, idle_query_s=1.0).idle_query_s == 2.0


def test_a_warm_worker_wakes_when_its_run_ends():
    """An idle-period wait returns as soon as a child exits, and the worker is active again: the
    pipeline's next stage is picked up at once, not after the idle period."""
    from types import SimpleNamespace

    from prefect.states import Completed

    from flows import warm

    class Client:  # the one call reap makes for a finished child: its run's final state
        def read_flow_run(self, run_id):
            return SimpleNamespace(state=Completed())

    worker = warm.WarmWorker("pool", "w", limit=2, query_s=0.5, idle_query_s=30.0)
    worker.active_at -= warm.ACTIVE_S + 1
    pid = os.fork()
    if pid == 0:
        time.sleep(0.5)
        os._exit(0)
    worker.children[pid] = "run"
    start = time.monotonic()
    worker.wait(Client(), worker.poll_period(start))
    assert time.monotonic() - start < 5
    assert not worker.children and worker.poll_period(time.monotonic()) == 0.5
