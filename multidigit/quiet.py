"""Quiet TensorFlow start-up: its C++ log level, and a filter for the start-up lines no setting reaches.

`multidigit/__init__.py` imports this module, so it runs before any project module imports TensorFlow, in
every entry point (the CLI, `python -m flows`, Prefect workers, gunicorn, process-pool children, scripts,
benchmarks, tests). `install()` is idempotent; an entry point may call it again.

What a CPU-only TensorFlow 2.19 prints, and what silences it (each checked by running it):
- `TF_CPP_MIN_LOG_LEVEL=1` drops TSL's INFO lines: the oneDNN notice, the CPU-instructions notice and
  "Could not find cuda drivers". WARNING and ERROR lines stay.
- The "Unable to register cuDNN/cuFFT/cuBLAS factory" and "computation placer already registered" lines
  come from static initializers while `_pywrap_tensorflow_internal` loads, logged through Abseil before
  `absl::InitializeLog()`. Abseil reads no environment variable (neither TF_CPP_MIN_LOG_LEVEL nor
  GLOG_minloglevel / ABSL_MIN_LOG_LEVEL change them; tensorflow#100442), and "failed call to cuInit" is an
  ERROR that level 1 keeps. So the first `import tensorflow` runs with file descriptor 2 sent to a temporary
  file and, on a machine without an NVIDIA driver, lists the devices (where cuInit is first called), then
  replays that output minus the lines matching `NOISE`. Every other line, a real error included, is printed.
Devices are never hidden: CUDA_VISIBLE_DEVICES is left alone and a GPU is found as usual. Prefect's task-run
INFO lines are raised to WARNING (see `install`). Python warnings and errors are untouched. Set
MULTIDIGIT_TF_LOGS=1 to see TensorFlow's start-up output unfiltered.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

# Lines TensorFlow 2.19 prints on every start that TF_CPP_MIN_LOG_LEVEL=1 does not reach; none is actionable
# (the plugins are linked twice into the wheel; cuInit fails where there is no GPU driver). The DT_BOOL
# line comes once per process, at the first graph with a boolean op (the post-processing's masks), even on
# CPUs with AVX-512 (the AMD EPYC): an error-level line for TensorFlow's own fallback to Eigen.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|failed call to cuInit"
    r"|oneDNN supports DT_BOOL only on platforms with AVX-512"
)
RAW_ENV = "MULTIDIGIT_TF_LOGS"  # set to 1: no level, no filter


def filter_noise(text: str) -> str:
    """`text` without its `NOISE` lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.search(line))


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block, then write it back without `NOISE`.

    A file rather than a pipe: the C++ writes happen while the importing thread holds the GIL, so a
    pipe's reader thread could not drain it. Output inside the block is delayed, never lost.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = filter_noise(tmp.read().decode(errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def has_cuda_driver() -> bool:
    """True when the NVIDIA driver library loads (loading it initialises nothing)."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


class _QuietLoader(importlib.abc.Loader):
    """Wraps TensorFlow's own loader: runs its `exec_module` inside `filtered_stderr`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps TensorFlow's loader, so nothing later sees this wrapper.
        module.__loader__ = module.__spec__.loader = self._loader
        with filtered_stderr():
            self._loader.exec_module(module)
            if not has_cuda_driver():
                # Listing the devices is where TF calls cuInit, which fails without a driver. Only then:
                # with a driver, cuInit in a parent that later forks (warm workers, process pools)
                # would leave the children unable to use the GPU. A failure here shows again at the
                # caller's first use of a device.
                with contextlib.suppress(Exception):
                    module.config.list_physical_devices()


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, the first time anything imports it, and hands it `_QuietLoader`."""

    def find_spec(self, name: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # the other finders, as if this one were not there
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Set TensorFlow's C++ log level and filter its first import; no-op once TensorFlow is loaded."""
    if os.environ.get(RAW_ENV) == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # Prefect logs "Finished in state Completed()" per task run, one per shard, over the progress bar;
    # flow-run lines and every task warning or failure still show. Read when Prefect configures logging.
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "WARNING")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietFinder())


install()
