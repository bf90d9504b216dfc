"""The numeric precision training computes in, and the float32 models every other stage reads.

`train.precision: mixed_bfloat16` runs convolutions in bfloat16 while the weights, BatchNorm statistics
and the loss stay float32 (Keras' mixed policy). On CPUs with bfloat16 instructions (AVX512-BF16, AMX)
oneDNN runs those convolutions faster; without them it emulates them, slower than float32, so `auto`
picks bfloat16 only where the CPU says it has the instructions. The policy lives only inside `policy()`;
what training saves is rebuilt in float32 (`float32_copy`), so evaluation, export and the page never see
a bfloat16 layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute bfloat16 natively
MIXED = "mixed_bfloat16"


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU reports bfloat16 instructions (Linux; False where cpuinfo cannot be read)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    lines = (line for line in text.splitlines() if line.startswith("flags"))
    flags = set(next(lines, "flags:").split(":", 1)[1].split())
    return any(flag in flags for flag in BF16_FLAGS)


def resolve(precision: str) -> str:
    """The Keras dtype policy for `train.precision` ("float32", "mixed_bfloat16" or "auto")."""
    if precision == "auto":
        return MIXED if cpu_has_bf16() else "float32"
    return precision


@contextlib.contextmanager
def policy(precision: str) -> Iterator[str]:
    """Build and train under `precision`'s policy (resolved), restoring the previous policy after."""
    import keras

    name = resolve(precision)
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy(before)


def float32_copy(model: Any, build: Callable[[], Any]) -> Any:
    """`model`'s weights in a float32 model that `build()` makes (the same architecture).

    Under the mixed policy every variable is float32 already, so the copy changes no weight. A float32
    model is returned as it is.
    """
    if model.dtype_policy.name == "float32":
        return model
    with policy("float32"):
        copy = build()
    copy.set_weights(model.get_weights())
    return copy
