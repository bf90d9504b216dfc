"""`generate.task_runner: dask`: real Dask clusters write the same shard bytes as threads and processes.

A LocalCluster of 2 worker processes (the default, `dask_address: null`), an existing cluster the test
starts on loopback with the `dask scheduler` and `dask worker` commands (`dask_address`), and an address
where nothing answers, which must fail in one line within the timeout instead of hanging.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multidigit.params import ParamsError, validate_params
from tests.conftest import generate_workspace
from tests.test_generate_flow import write_params

pytestmark = pytest.mark.slow


@pytest.fixture()
def workspace(tmp_path, mnist_splits, monkeypatch):
    """stage3 (overlap, scales, the drawn split) at 40/20/20/20 canvases in shards of 20: five shards, each
    on a different code path or seed."""
    return generate_workspace(tmp_path, mnist_splits, monkeypatch, "stage3", retries=0)


def shard_sha256(stage_dir: Path) -> dict[str, str]:
    return {
        p.relative_to(stage_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(stage_dir.glob("*/*.npz"))
    }


def run_flow(workspace, out_root: str, **generate) -> tuple[dict, dict[str, str]]:
    from flows import generate as flow

    params = write_params(workspace, f"{out_root}.yaml", **generate)
    manifest = flow.generate_flow(params=params, stage="stage3", out_root=out_root, plots_root="plots")
    return manifest, shard_sha256(workspace[0] / out_root / "stage3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_cluster_writes_the_bytes_of_threads_and_processes(workspace, prefect_harness):
    threads_manifest, threads = run_flow(workspace, "threads", task_runner="threads")
    assert len(threads) == 5 and "drawn/shard-00000.npz" in threads
    processes_manifest, processes = run_flow(workspace, "processes", task_runner="processes")
    assert processes == threads and processes_manifest == threads_manifest

    dask_manifest, dask = run_flow(workspace, "dask", task_runner="dask")
    assert dask == threads  # every shard file's sha256
    assert dask_manifest == threads_manifest


@pytest.fixture()
def dask_cluster(tmp_path):
    """`dask scheduler` and one `dask worker` (1 thread) on loopback, as a user's cluster would run."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    common = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp_path}
    scheduler = subprocess.Popen(
        [*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **common
    )
    worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1"]
    worker = subprocess.Popen([*worker_cmd, "--nthreads", "1", "--no-dashboard"], **common)
    try:
        yield address
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_existing_cluster_at_dask_address(workspace, prefect_harness, dask_cluster):
    from distributed import Client

    from multidigit import canvas

    root, _ = workspace
    reference = canvas.main(write_params(workspace, "ref.yaml"), "stage3", out_root=root / "ref")
    expected = shard_sha256(root / "ref" / "stage3")

    manifest, got = run_flow(workspace, "remote", task_runner="dask", dask_address=dask_cluster)
    assert got == expected and manifest == reference
    # the shards really ran on that cluster's worker (a process of its own, started without our env)
    with Client(dask_cluster, timeout=10, set_as_default=False) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(executed.values()) == len(expected)


def test_unreachable_dask_address_fails_in_one_line_without_hanging():
    from flows.generate import check_dask_scheduler

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"^generate\.dask_address: .* did not answer within 2 s$"):
        check_dask_scheduler(address, timeout=2)
    assert time.monotonic() - start < 20


def test_scheduler_without_workers_fails_in_one_line():
    from distributed import LocalCluster

    from flows.generate import check_dask_scheduler

    cluster = LocalCluster(n_workers=0, dashboard_address=":0", host="127.0.0.1")
    with cluster, pytest.raises(ConnectionError, match=r"has no workers within 2 s$"):
        check_dask_scheduler(cluster.scheduler_address, timeout=2)


def test_cli_refuses_an_unreachable_address_with_one_error_line(workspace):
    address = f"127.0.0.1:{free_port()}"  # host:port without a scheme is a Dask address too
    params = write_params(workspace, "bad.yaml", task_runner="dask", dask_address=address)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # in-process, no stack here
    proc = subprocess.run(
        [sys.executable, "-m", "flows", "run", "generate", "--stage", "stage3", "--params", params],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: generate.dask_address: the Dask scheduler at {address} did not answer within 10 s"
    ]
    assert "Traceback" not in proc.stderr
    assert not (workspace[0] / "data" / "canvases").exists()  # refused before any work


def test_dask_address_needs_the_dask_runner(workspace):
    _, data = workspace
    data["generate"].update(task_runner="threads", dask_address="tcp://127.0.0.1:8786")
    with pytest.raises(ParamsError, match=r"dask_address is set but task_runner is 'threads'; need 'dask'"):
        validate_params(data)


def test_shards_missing_here_name_the_shared_storage_requirement(tmp_path):
    from flows.generate import check_shards_here

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "shard-00000.npz").write_bytes(b"x")
    results = [{"file": "train/shard-00000.npz"}, {"file": "train/shard-00001.npz"}]
    said = r"^1 shards .*\(first: train/shard-00001\.npz\).*shared storage"
    with pytest.raises(FileNotFoundError, match=said):
        check_shards_here(results, tmp_path)
    check_shards_here(results[:1], tmp_path)  # all here: no error
