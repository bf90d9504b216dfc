"""Prefect flow `generate`: one curriculum stage's canvas shards, fanned out over a task runner.

Lists the shards, maps `generate_shard` over them (threads, processes or Dask, from
`generate.task_runner`), merges their stats into one manifest, then draws the previews. Every task wraps
one core call from multidigit.canvas / multidigit.preview; the bytes do not depend on the runner.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows import fanout
from multidigit import canvas, preview
from multidigit.constants import CANVAS_OUT, DEFAULT_PARAMS_FILE, PLOTS_DIR
from multidigit.params import GenerateParams, Params, load_params


def task_runner_for(gen: GenerateParams) -> TaskRunner:
    """The task runner `generate.task_runner` names, with `generate.workers` workers."""
    if gen.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=gen.workers)
    if gen.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=gen.workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ValueError(
            "generate.task_runner: 'dask' needs the prefect-dask package (uv add prefect-dask); "
            "allowed without it: threads, processes"
        ) from None
    return DaskTaskRunner(cluster_kwargs={"n_workers": gen.workers, "threads_per_worker": 1})


# Shard generation is deterministic, but a worker can still die (memory, a killed process): the
# retry reruns the same seeds and rewrites the same bytes.
@task(cache_policy=NO_CACHE, task_run_name="shard-{spec.split}-{spec.index}")
def generate_shard(cfg: Params, spec: canvas.ShardSpec, out_dir: Path) -> dict:
    """Make and write one shard; returns its stats for the manifest."""
    return canvas.generate_shard(cfg, spec, out_dir)


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
    futures = task_fn.map(cfg=unmapped(cfg), spec=specs, out_dir=unmapped(out_dir))
    return [f.result() for f in futures]


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
    # (no server) the hook returns None and the task runner maps them here.
    results = fanout.run_shard_batches(params, stage, str(out_dir))
    if results is None:
        shards = generate_shards.with_options(task_runner=task_runner_for(cfg.generate))
        results = shards(cfg, stage, out_dir)
    manifest = write_manifest(cfg, stage, results, out_dir)
    write_previews(stage, Path(out_root), Path(plots_root))
    return manifest
