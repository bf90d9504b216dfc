"""Fan canvas generation out across Prefect workers: shard batches as `generate-batch` deployment runs.

A hook for flows/generate.py. When the generate flow itself runs as a deployment under a server (the
`make run` stack), `run_shard_batches` splits the stage's shards into batches, triggers one
`generate-batch` flow run per batch (any idle worker takes it), waits for all of them and returns the
per-shard results `multidigit.canvas.write_manifest` needs, when `generate.fanout` is on (workers on
several machines). Otherwise it returns None and the caller generates with its task runner. Every
shard's bytes depend only on its identity, so both ways write the same files.
"""

from __future__ import annotations

import math
import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext

BATCH_DEPLOYMENT = "generate-batch"
BATCHES_PER_WORKER = 2  # a little over-splitting evens out uneven batch times


def is_deployed_run() -> bool:
    """True inside a flow run that a worker started from a deployment on a real server."""
    ctx = FlowRunContext.get()
    return bool(os.environ.get("PREFECT_API_URL") and ctx and ctx.flow_run and ctx.flow_run.deployment_id)


def batch_count(shards: int, workers: int) -> int:
    """How many batches to cut `shards` into for `workers` online workers (at least 1, at most shards)."""
    return max(1, min(shards, BATCHES_PER_WORKER * max(workers, 1)))


def split_batches(items: list[Any], count: int) -> list[list[Any]]:
    """Cut `items` into `count` contiguous, nearly equal batches (none empty)."""
    size = math.ceil(len(items) / count)
    return [items[i : i + size] for i in range(0, len(items), size)]


def online_workers(pool: str) -> int:
    """Workers of `pool` the server currently reports ONLINE."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return sum(1 for w in client.read_workers_for_work_pool(pool) if str(w.status).endswith("ONLINE"))


@flow(name=BATCH_DEPLOYMENT, persist_result=True)
def shard_batch_flow(params: str, stage: str, out_dir: str, shards: list[tuple[str, int]]) -> list[dict]:
    """Generate one batch of a stage's shards (each written atomically); returns their results.

    Args:
        params: the params YAML, relative to the working directory.
        stage: stage1..stage3.
        out_dir: the stage's canvases folder, e.g. data/canvases/stage1.
        shards: (split, index) of every shard in the batch.
    Returns:
        `multidigit.canvas.generate_shard`'s result dict for each shard, in order.
    """
    from multidigit.canvas import generate_shard, plan_shards
    from multidigit.params import load_params

    cfg = load_params(params)
    wanted = {(split, int(index)) for split, index in shards}
    specs = [s for s in plan_shards(cfg.generate, stage) if (s.split, s.index) in wanted]
    return [generate_shard(cfg, spec, out_dir) for spec in specs]


def run_shard_batches(params: str, stage: str, out_dir: str) -> list[dict] | None:
    """Generate every shard of `stage` as `generate-batch` deployment runs spread over the workers.

    Args:
        params: the params YAML the generate flow got.
        stage: stage1..stage3.
        out_dir: the stage's canvases folder.
    Returns:
        The per-shard results in plan order, or None when this is not a deployed run or
        `generate.fanout` is off (the caller then generates with its task runner).
    Raises:
        RuntimeError: a batch run did not complete.
    """
    from prefect.deployments import run_deployment

    from flows.runner import WORK_POOL
    from multidigit.canvas import plan_shards
    from multidigit.params import load_params

    if not is_deployed_run():
        return None
    gen = load_params(params).generate
    if not gen.fanout:
        return None
    shards = [(s.split, s.index) for s in plan_shards(gen, stage)]
    batches = split_batches(shards, batch_count(len(shards), online_workers(WORK_POOL)))
    get_run_logger().info("%s: %d shards in %d batches over the workers", stage, len(shards), len(batches))
    name = f"{BATCH_DEPLOYMENT}/{BATCH_DEPLOYMENT}"
    common = {"params": params, "stage": stage, "out_dir": str(out_dir)}
    here = {"working_dir": os.getcwd()}  # the batches write where this run (and DVC) looks
    runs = [
        run_deployment(name, parameters={**common, "shards": batch}, timeout=0, job_variables=here)
        for batch in batches
    ]
    return collect(runs)


def collect(runs: list[Any]) -> list[dict]:
    """Wait for every flow run (Prefect's wait_for_flow_run) and concatenate their results in order."""
    import asyncio

    from prefect.flow_runs import wait_for_flow_run
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def wait_all() -> list[Any]:
        return await asyncio.gather(*(wait_for_flow_run(run.id, timeout=None) for run in runs))

    results: list[dict] = []
    for run in run_coro_as_sync(wait_all()):
        if not run.state.is_completed():
            raise RuntimeError(f"shard batch {run.name!r} ended {run.state.name}: {run.state.message}")
        results.extend(run.state.result())
    return results
