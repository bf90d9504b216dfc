"""Prefect flow `generate`: one curriculum stage's canvas shards, fanned out over a task runner.

Lists the shards, maps `generate_shard` over them (threads, processes or Dask, from
`generate.task_runner`), merges their stats into one manifest, then draws the previews. Every task wraps
one core call from multidigit.canvas / multidigit.preview; the bytes do not depend on the runner.

Dask runs on a LocalCluster of `generate.workers` processes, or on the running scheduler at
`generate.dask_address` (many machines). Workers write the shards themselves, so every worker needs the
code and the workspace (data/mnist in, data/canvases out) at the same path, on shared storage.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows import fanout
from multidigit import canvas, console, preview
from multidigit.constants import CANVAS_OUT, DEFAULT_PARAMS_FILE, MNIST_OUT, PLOTS_DIR
from multidigit.params import GenerateParams, Params, load_params

DASK_TIMEOUT_S = 10.0  # connecting to generate.dask_address, and waiting there for a first worker


def task_runner_for(gen: GenerateParams) -> TaskRunner:
    """The task runner `generate.task_runner` names, with `generate.workers` workers.

    Dask: the running scheduler at `generate.dask_address`, else a LocalCluster of `workers` processes of
    one thread each (the shard work is numpy and Keras, which hold the GIL between their own threads).
    """
    if gen.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=gen.workers)
    if gen.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=gen.workers)
    from prefect_dask import DaskTaskRunner

    # The scheduler and nannies log in this process at INFO through Prefect's console handler.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if gen.dask_address:
        return DaskTaskRunner(address=gen.dask_address, client_kwargs={"timeout": DASK_TIMEOUT_S})
    # The scheduler's HTTP server (health routes, no dashboard) on a free port: 8787 may be taken.
    http = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": ":0"}}
    # Workers report their task runs to this run's API; without it each starts a temporary server.
    env = {"PREFECT_API_URL": url} if (url := prefect_api_url()) else {}
    cluster = {"n_workers": gen.workers, "threads_per_worker": 1, "processes": True, "env": env}
    return DaskTaskRunner(cluster_kwargs={**cluster, **http, "silence_logs": logging.ERROR})


def prefect_api_url() -> str | None:
    """The API this process talks to: $PREFECT_API_URL, or the temporary server of an in-process run."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    if url := get_current_settings().api.url:
        return url
    with get_client(sync_client=True) as client:
        return str(client.api_url) if client.api_url else None


def check_dask_scheduler(address: str, timeout: float = DASK_TIMEOUT_S) -> None:
    """Fail in one line, within `timeout` seconds, unless a Dask scheduler with a worker answers at `address`.

    Without this, an unreachable address surfaces as a traceback from inside the flow run, and a
    scheduler without workers would leave the shard tasks waiting forever.
    """
    from distributed import Client

    said = f"generate.dask_address: the Dask scheduler at {address}"
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError):
        raise ConnectionError(f"{said} did not answer within {timeout:g} s") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ConnectionError(f"{said} has no workers within {timeout:g} s") from None


def check_shards_here(results: list[dict], out_dir: Path) -> None:
    """The shards remote workers wrote must be visible here: the manifest and previews read them."""
    missing = [r["file"] for r in results if not (out_dir / r["file"]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} shards the workers wrote are not in {out_dir} here (first: {missing[0]}): "
            "the workers need this workspace on shared storage at the same path"
        )


def preflight(params: str, **_: object) -> None:
    """Checks `python -m flows run generate` makes before starting Prefect, so a failure is one line."""
    gen = load_params(params).generate
    if gen.dask_address:
        check_dask_scheduler(gen.dask_address)


# Shard generation is deterministic, but a worker can still die (memory, a killed process): the
# retry reruns the same seeds and rewrites the same bytes.
@task(cache_policy=NO_CACHE, task_run_name="shard-{spec.split}-{spec.index}")
def generate_shard(cfg: Params, spec: canvas.ShardSpec, out_dir: Path, mnist_dir: Path) -> dict:
    """Make and write one shard; returns its stats for the manifest."""
    try:
        return canvas.generate_shard(cfg, spec, out_dir, mnist_dir)
    except FileNotFoundError as exc:
        # on another machine the usual cause is a workspace that is not shared at the same path
        hint = "workers need the workspace on shared storage at the same path"
        raise FileNotFoundError(f"on {socket.gethostname()}: {exc} ({hint})") from None


@task(cache_policy=NO_CACHE)
def write_manifest(cfg: Params, stage: str, results: list[dict], out_dir: Path) -> dict:
    """Merge the shard stats into the stage manifest."""
    return canvas.write_manifest(cfg, stage, results, out_dir)


@task(cache_policy=NO_CACHE)
def write_previews(stage: str, out_root: Path, plots_root: Path) -> str:
    """Draw the stage's preview grid and histograms."""
    return str(preview.write_previews(stage, out_root, plots_root))


@flow(name="generate-shards")
def generate_shards(cfg: Params, stage: str, out_dir: Path) -> list[dict]:
    """Map `generate_shard` over every shard of the stage and wait for all of them."""
    specs = canvas.plan_shards(cfg.generate, stage)
    task_fn = generate_shard.with_options(retries=cfg.generate.retries, retry_delay_seconds=0)
    # Absolute paths: a Dask worker's working directory is its own, on whatever machine it runs.
    paths = {"out_dir": unmapped(out_dir.resolve()), "mnist_dir": unmapped(MNIST_OUT.resolve())}
    futures = task_fn.map(cfg=unmapped(cfg), spec=specs, **paths)
    return [f.result() for f in console.progress(futures, f"{stage} shards", unit="shard")]


@flow(name="generate")
def generate_flow(
    params: str = str(DEFAULT_PARAMS_FILE),
    stage: str = "stage1",
    out_root: str = str(CANVAS_OUT),
    plots_root: str = str(PLOTS_DIR),
) -> dict:
    """Generate one stage's canvases, its manifest and previews.

    Args:
        params: the params YAML.
        stage: stage1..stage3.
        out_root: canvases folder; the stage writes `<out_root>/<stage>`.
        plots_root: plots folder; previews go to `<plots_root>/canvases/<stage>`.
    Returns:
        The stage manifest.
    """
    cfg = load_params(params)
    out_dir = Path(out_root) / stage
    # Under a Prefect server the shards go out as batch runs that idle workers pick up; in-process
    # (no server) the hook returns None and the task runner maps them here. A Dask runner is asked for
    # by name, so it replaces the Prefect-worker fan-out wherever the flow runs.
    dask = cfg.generate.task_runner == "dask"
    results = None if dask else fanout.run_shard_batches(params, stage, str(out_dir))
    if results is None:
        if cfg.generate.dask_address:
            check_dask_scheduler(cfg.generate.dask_address)
        shards = generate_shards.with_options(task_runner=task_runner_for(cfg.generate))
        results = shards(cfg, stage, out_dir)
        check_shards_here(results, out_dir)
    manifest = write_manifest(cfg, stage, results, out_dir)
    write_previews(stage, Path(out_root), Path(plots_root))
    return manifest
