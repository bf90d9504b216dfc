"""Quiet, useful logs (multidigit/quiet.py, multidigit/console.py): real stage commands, their real output.

The slow part runs the TF-importing stages (generate, train) as subprocesses on tiny params,
once per module, and checks what a user would read: no CUDA/cuDNN/XLA/oneDNN start-up noise and no Keras
shuffle warning, one headline per stage, and errors that still say what went wrong in one line.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from multidigit import console, quiet
from scripts.smoke import make_workspace, merge, workspace_env
from tests.conftest import ROOT, VENV_BIN, pipeline_env, run_python

NOISE = re.compile(r"cuinit|cudnn|cufft|cublas|computation placer|onednn|shuffle=True", re.IGNORECASE)
# Smaller than params.smoke.yaml: one shard per split, one short epoch from scratch (no pretrain stage).
TINY = {
    "generate": {"stages": {"stage1": {"canvases": {"train": 64, "val": 32, "test": 32}}}},
    "train": {"stages": {"stage1": {"canvases": 0, "epochs": 1, "init": "scratch"}}},
}
COMMANDS = (("mnist",), ("generate", "--stage", "stage1"), ("train", "--stage", "stage1"))


def _env(mnist_dir: Path) -> dict[str, str]:
    """The workspace environment with TensorFlow's own log settings left at this project's defaults."""
    env = workspace_env() | pipeline_env(mnist_dir)
    for key in ("TF_CPP_MIN_LOG_LEVEL", quiet.RAW_ENV, "PYTHONWARNINGS"):
        env.pop(key, None)
    return env


def _multidigit(workspace: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`multidigit ARGS` in the workspace, stdout and stderr as one stream, the way a terminal shows them."""
    return subprocess.run(
        [str(VENV_BIN / "multidigit"), *args],
        cwd=workspace,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_dir) -> tuple[Path, dict[str, str], dict[str, str]]:
    """(workspace, env, stage -> combined output) after mnist, generate@stage1 and train@stage1."""
    workspace = make_workspace(tmp_path_factory.mktemp("logs") / "repo")
    params = workspace / "params.yaml"
    params.write_text(yaml.safe_dump(merge(yaml.safe_load(params.read_text()), TINY), sort_keys=False))
    env = _env(mnist_dir)
    outputs = {}
    for args in COMMANDS:
        run = _multidigit(workspace, env, *args)
        assert run.returncode == 0, f"multidigit {' '.join(args)} failed:\n{run.stdout[-4000:]}"
        outputs[console.stage_name(args[0], args[2] if len(args) > 2 else None)] = run.stdout
    return workspace, env, outputs


def test_tensorflow_stages_print_no_startup_noise(tiny_run):
    _, _, outputs = tiny_run
    for name, text in outputs.items():
        noisy = [line for line in text.splitlines() if NOISE.search(line)]
        assert not noisy, f"{name}: {len(noisy)} noise lines, first: {noisy[0]}"


def test_each_stage_prints_its_headline_first(tiny_run):
    _, _, outputs = tiny_run
    first = outputs["train@stage1"].splitlines()[0]
    assert first.startswith("==> train@stage1: train one curriculum stage of the detector ("), first
    assert "models/pretrain/backbone.keras" in first and "data/canvases/stage1" in first, first
    assert first.endswith(" -> models/stage1/detector.keras, models/stage1/train_info.json)"), first
    for name, text in outputs.items():
        assert text.startswith(f"==> {name}: "), f"{name}: no headline first:\n{text[:500]}"
        assert sum(line.startswith("==> ") for line in text.splitlines()) == 1, name


def test_training_logs_one_line_per_epoch_not_a_progress_bar(tiny_run):
    # Keras' own "auto" mode would redraw its bar into the log every step (and sync every step to do it).
    _, _, outputs = tiny_run
    text = outputs["train@stage1"]
    assert "━" not in text and "\b" not in text, text[-2000:]
    assert len([line for line in text.splitlines() if " - loss: " in line]) == 1, text[-2000:]


def test_an_error_after_tensorflow_loaded_stays_one_visible_line(tiny_run):
    # train@stage2 imports Keras (the filtered import), then finds no stage-2 canvases.
    workspace, env, _ = tiny_run
    run = _multidigit(workspace, env, "train", "--stage", "stage2")
    errors = [line for line in run.stdout.splitlines() if line.startswith("error: ")]
    assert run.returncode == 1, run.stdout[-2000:]
    assert errors == ["error: data/canvases/stage2/train: no shards; run `dvc repro generate@stage2`"], (
        run.stdout
    )
    assert "Traceback" not in run.stdout


@pytest.mark.parametrize("entry", [["multidigit"], ["python", "-m", "flows", "run"]])
def test_bad_params_print_headline_then_one_error_line(tmp_path, entry):
    bad = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text().replace("\ntrain:\n", "\ntrain:\n  epochz: 3\n", 1)
    bad.write_text(text)
    argv = [str(VENV_BIN / entry[0]), *entry[1:], "train", "--stage", "stage1", "--params", str(bad)]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    run = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = run.stdout.splitlines()
    assert run.returncode == 2, run.stdout
    assert lines[0].startswith("==> train@stage1: train one curriculum stage"), run.stdout
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], run.stdout
    assert "epochz" in lines[-1] and "Traceback" not in run.stdout


def test_filtered_stderr_drops_only_the_known_noise(capfd):
    real = "2026-12-01 E some/op.cc:12] a real failure\n"
    with quiet.filtered_stderr():
        os.write(2, b"E0000 00:00:1 cuda_dnn.cc:8579] Unable to register cuDNN factory: Attempting...\n")
        os.write(2, b"W0000 00:00:1 computation_placer.cc:177] computation placer already registered.\n")
        os.write(2, real.encode())
        os.write(2, b"E external/cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error\n")
        os.write(2, b"E util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512. Falling back\n")
    assert capfd.readouterr().err == real


def test_quiet_sets_log_levels_only():
    # A GPU must stay visible: importing the package may set log levels, never CUDA_VISIBLE_DEVICES.
    code = "import os; before = set(os.environ); import multidigit; print(sorted(set(os.environ) - before))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "PREFECT_LOGGING_", "CUDA_"))}
    added = run_python(code, env).stdout.strip()
    assert added == "['PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL', 'TF_CPP_MIN_LOG_LEVEL']"


def test_tensorflow_lists_the_same_devices_quiet_or_not():
    code = "import multidigit, tensorflow as tf; print(tf.config.list_physical_devices())"
    found = {}
    for raw in ("0", "1"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")} | {quiet.RAW_ENV: raw}
        run = run_python(code, env)
        assert run.returncode == 0, run.stderr[-2000:]
        found[raw] = run.stdout.strip()
        if raw == "0":
            assert not NOISE.search(run.stderr), run.stderr[-2000:]
    assert found["0"] == found["1"] and "CPU" in found["0"]


def test_headline_reads_inputs_and_outputs_from_dvc_yaml():
    dvc = ROOT / "dvc.yaml"
    line = console.headline("evaluate@stage2", "evaluate", dvc)
    assert line == "==> evaluate@stage2: evaluate (models/stage2/detector.keras, data/canvases/stage2 -> " + (
        "metrics/stage2.json, plots/stage2/)"
    )
    assert console.headline("preview@stage1", "draw", dvc) is None
    assert console.headline("train@stage9", "train", dvc) is None
