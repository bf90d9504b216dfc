"""flows/generate.py: the Prefect flow writes the same bytes as `multidigit generate` (the drawn split
included), on threads or processes, and a shard task that fails once is retried into the same output.
The Dask runner's tests are in tests/test_dask_runner.py.

One Prefect test harness (a temporary database and ephemeral server) serves every flow run here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from multidigit import canvas
from tests.conftest import generate_workspace

pytestmark = pytest.mark.slow


@pytest.fixture()
def workspace(tmp_path, mnist_splits, monkeypatch):
    """stage2 at 40/20/20 canvases and 20 of the drawn split, shards of 20."""
    return generate_workspace(tmp_path, mnist_splits, monkeypatch, "stage2", retries=2)


def write_params(workspace, name: str, **generate) -> str:
    root, data = workspace
    data = json.loads(json.dumps(data))
    data["generate"].update(generate)
    (root / name).write_text(yaml.safe_dump(data))
    return name


def shard_bytes(stage_dir) -> dict[str, bytes]:
    return {p.relative_to(stage_dir).as_posix(): p.read_bytes() for p in sorted(stage_dir.glob("*/*.npz"))}


FAIL_ONCE = "fail-once"  # a marker file beside the stage folder: the shard task that removes it fails


def fail_once_then_generate(cfg, spec, out_dir, mnist_dir):
    """The flow's own shard task body, except that the first call to remove the marker raises.

    Module level, so a process-pool worker imports it by name; the marker's path comes from `out_dir`
    (no environment), and removing a file is atomic, so exactly one task fails even across processes.
    """
    try:
        (Path(out_dir).parent / FAIL_ONCE).unlink()
    except FileNotFoundError:
        # the core call the flow's task wraps: in-thread, `generate.generate_shard` is this task itself
        return canvas.generate_shard(cfg, spec, out_dir, mnist_dir)
    raise RuntimeError("injected shard failure")


def inject_one_shard_failure(monkeypatch, generate, out_root: Path) -> Path:
    """Swap the flow's shard task for one that fails once (same name and options); returns the marker."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    name = generate.generate_shard.task_run_name
    flaky = task(fail_once_then_generate, cache_policy=NO_CACHE, task_run_name=name)
    monkeypatch.setattr(generate, "generate_shard", flaky)
    out_root.mkdir()
    marker = out_root / FAIL_ONCE
    marker.touch()
    return marker


def test_flow_matches_in_process_bytes_and_retries_a_failed_shard(workspace, prefect_harness, monkeypatch):
    from flows import generate

    root, _ = workspace
    reference = canvas.main(write_params(workspace, "p.yaml"), "stage2", out_root=root / "ref")
    expected = shard_bytes(root / "ref" / "stage2")
    assert len(expected) == 5 and "drawn/shard-00000.npz" in expected  # the drawn split: same flow

    # threads, two workers: same shards, same manifest, previews drawn
    manifest = generate.generate_flow(params="p.yaml", stage="stage2", out_root="threads", plots_root="plots")
    assert manifest == reference
    assert shard_bytes(root / "threads" / "stage2") == expected
    assert (root / "plots" / "canvases" / "stage2" / "preview.png").stat().st_size > 10_000

    # a shard task fails once: with no retries the flow fails ...
    marker = inject_one_shard_failure(monkeypatch, generate, root / "none")
    with pytest.raises(RuntimeError, match="injected shard failure"):
        generate.generate_flow(
            params=write_params(workspace, "p0.yaml", retries=0), stage="stage2", out_root="none"
        )
    assert not marker.exists()

    # ... with retries (in a process pool this time) the failed task reruns and the bytes are the same
    marker = inject_one_shard_failure(monkeypatch, generate, root / "procs")
    params = write_params(workspace, "pp.yaml", task_runner="processes")
    manifest = generate.generate_flow(params=params, stage="stage2", out_root="procs", plots_root="plots")
    assert not marker.exists()  # the failure really was injected
    assert manifest == reference
    assert shard_bytes(root / "procs" / "stage2") == expected
