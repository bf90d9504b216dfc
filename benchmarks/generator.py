"""Canvas generator throughput the way users compare generators: canvases/s and digits/s making shards
AND writing them to disk, in one process and in one worker process per core, at each stage's settings.

    python benchmarks/generator.py [--stages stage1 stage2 stage3] [--canvases 8000] [--restroke R]

Each measurement makes `--canvases` train canvases (all-cores: that many per worker) in shards of
`generate.shard_size`, each written with canvas.save_shard into a temporary folder, exactly as
`multidigit generate` does. It also times the drawn split (stage 3's `canvases.drawn`) and adds up the
shard work of the whole pipeline's default canvas counts (params.yaml) at the one-process rates.
Workers are started and warmed (TensorFlow imported, layers built) before the clock starts, so the
all-cores figure is steady-state throughput. The one-process figure also comes as canvases per CPU
second, which a shared, loaded machine disturbs less than wall time. `--restroke R` overrides the
stages' re-stroked share. Writes benchmarks/results/generator.json (generator_restroke-R.json with
--restroke).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidigit import canvas  # noqa: E402
from multidigit.constants import CANVAS_SPLITS, DRAWN_SPLIT, MNIST_OUT  # noqa: E402
from multidigit.params import load_params  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "generator.json"


@functools.lru_cache(maxsize=8)
def _config(params: str, stage: str, restroke: float | None):
    """The validated params, parsed once per process as `multidigit generate` parses them once per run
    (parsing costs ~7 ms, 9% of a 500-canvas stage-3 shard; until 2026-12-06 each shard paid it)."""
    cfg = load_params(params)
    if restroke is None:
        return cfg
    stages = dict(cfg.generate.stages)
    stages[stage] = stages[stage].model_copy(update={"restroke": restroke})
    return cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"stages": stages})})


def _shard(args: tuple) -> tuple[int, int]:
    """Make one shard and write it under `out` (a worker's unit of work) with the generate flow's own shard
    task, `canvas.generate_shard`: the seed, the canvases, the file and its sha256, the manifest's stats;
    returns (canvases, digits)."""
    params, stage, split, index, n, restroke, out = args
    spec = canvas.ShardSpec(stage, split, index, n)
    stats = canvas.generate_shard(_config(params, stage, restroke), spec, out, ROOT / MNIST_OUT)
    return stats["canvases"], stats["digits"]


def temp_filesystem() -> str:
    """The filesystem type under the temporary folder (`TMPDIR`) the shards are written to, e.g. ext4 or
    tmpfs: a peer writing many small files runs 5x slower on one than the other (generator_peer.py)."""
    folder, best, kind = os.path.realpath(tempfile.gettempdir()), "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:  # not Linux
        return kind
    for fields in (line.split() for line in mounts):
        mount = fields[1] if len(fields) > 2 else ""
        inside = folder == mount or folder.startswith(mount.rstrip("/") + "/")
        if mount and inside and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


def _warm(args: tuple) -> tuple[int, int]:
    """A warm-up shard, then wait for every other worker's (`measure`)."""
    barrier, job = args
    done = _shard(job)
    barrier.wait(timeout=600)
    return done


def _one_thread() -> None:
    """Worker initializer: one TensorFlow thread per worker, so the workers do not fight over the cores."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def measure(params: str, stage: str, split: str, total: int, workers: int, restroke, out: str) -> dict:
    """canvases/s and digits/s making and writing `total` canvases of one stage and split."""
    size = load_params(params).generate.shard_size
    jobs = [
        (params, stage, split, 1000 + i, min(size, total - s), restroke, out)
        for i, s in enumerate(range(0, total, size))
    ]
    warm = [(params, stage, split, 900 + i, 20, restroke, out) for i in range(workers)]
    if workers == 1:
        _shard(warm[0])
        wall, cpu = time.perf_counter(), time.process_time()
        done = list(map(_shard, jobs))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    else:  # spawn, not fork: a child forked from a process running TensorFlow threads can hang
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(workers, context, _one_thread) as pool:
            # Each warm-up waits for the others at a barrier, so every worker runs one (imports, kernels
            # loaded, strokes read) before the clock starts; without it one worker could take them all
            # and the other start cold inside the measurement.
            barrier = manager.Barrier(workers)
            list(pool.map(_warm, [(barrier, job) for job in warm]))
            wall, cpu = time.perf_counter(), None
            done = list(pool.map(_shard, jobs))
            wall = time.perf_counter() - wall
    canvases, digits = (sum(col) for col in zip(*done, strict=True))
    row = {
        "canvases": canvases,
        "canvases_per_s": round(canvases / wall, 1),
        "digits_per_s": round(digits / wall),
    }
    if cpu is not None:
        row["canvases_per_cpu_s"] = round(canvases / cpu, 1)
    return row


def pipeline_seconds(params: str, stages: dict, drawn: dict | None) -> dict:
    """Shard work of the pipeline's canvas counts (params.yaml) at the measured one-process rates, in
    wall seconds and in CPU seconds."""
    counts = load_params(params).generate.stages
    total, wall, cpu = 0, 0.0, 0.0
    for stage, row in stages.items():
        for split in CANVAS_SPLITS:
            n = getattr(counts[stage].canvases, split)
            rates = drawn if split == DRAWN_SPLIT else row["1_process"]
            if n and rates:
                total += n
                wall += n / rates["canvases_per_s"]
                cpu += n / rates["canvases_per_cpu_s"]
    return {"canvases": total, "shard_seconds_1_process": round(wall, 1), "shard_cpu_seconds": round(cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--stages", nargs="+", default=["stage1", "stage2", "stage3"])
    # 8,000 (a few seconds of work per figure): at 1,000, and at 4,000 once stage 3 ran at 2,000/s, start-up
    # hiccups swung the two-process figure between 1.2x and 2.1x (4,000: 1.56x, 8,000: 1.89x, minutes apart)
    parser.add_argument("--canvases", type=int, default=8000, help="canvases per measurement (per worker)")
    # 1,000: at 200 the drawn split read 714-734/s against 1,112-1,147 per CPU second over 1,000 canvases
    parser.add_argument("--drawn-canvases", type=int, default=1000, help="drawn-split canvases, 1 process")
    parser.add_argument("--restroke", type=float, default=None, help="override the stages' restroke share")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    stages = {}
    with tempfile.TemporaryDirectory() as out:
        for stage in args.stages:
            one = measure(args.params, stage, "train", args.canvases, 1, args.restroke, out)
            every = measure(args.params, stage, "train", cores * args.canvases, cores, args.restroke, out)
            cfg_stage = load_params(args.params).generate.stages[stage]
            stages[stage] = {
                "digits": list(cfg_stage.digits),
                "scale": list(cfg_stage.scale),
                "restroke": cfg_stage.restroke if args.restroke is None else args.restroke,
                "1_process": one,
                f"{cores}_processes": every,
                "all_cores_vs_1": round(every["canvases_per_s"] / one["canvases_per_s"], 2),
            }
        drawn = None
        if "stage3" in args.stages and args.drawn_canvases:
            drawn = measure(args.params, "stage3", DRAWN_SPLIT, args.drawn_canvases, 1, None, out)
    headline = stages.get("stage3") or stages[args.stages[-1]]
    result = {
        # the headline the README's results table reads (multidigit/evaluation/report.py): stage 3
        "canvases_per_s_1_process": headline["1_process"]["canvases_per_s"],
        "canvases_per_s_all_cores": headline[f"{cores}_processes"]["canvases_per_s"],
        "stages": stages,
        "drawn_split_1_process": drawn,
        "pipeline": pipeline_seconds(args.params, stages, drawn),
        "written_to": "disk (canvas.save_shard into a temporary folder)",
        "temp_fs": temp_filesystem(),
        "cpu_count": cores,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    name = "generator.json" if args.restroke is None else f"generator_restroke-{args.restroke:g}.json"
    RESULTS.with_name(name).parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_name(name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
