"""multidigit/precision.py: which policy `auto` picks, and float32 copies of mixed-precision models."""

from __future__ import annotations

import numpy as np
import pytest

from multidigit import precision

CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {extra}\nbogomips\t: 4000\n"


@pytest.mark.parametrize(
    ("extra", "has"), [("avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True), ("avx512f", False)]
)
def test_cpu_bf16_is_read_from_the_flags_line(tmp_path, extra, has):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra=extra))
    assert precision.cpu_has_bf16(info) is has


def test_unreadable_cpuinfo_means_no_bf16(tmp_path):
    assert precision.cpu_has_bf16(tmp_path / "missing") is False
    (tmp_path / "noflags").write_text("processor\t: 0\n")
    assert precision.cpu_has_bf16(tmp_path / "noflags") is False


def test_auto_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve("auto") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.resolve("auto") == "float32"
    assert precision.resolve("mixed_bfloat16") == "mixed_bfloat16"  # explicit wins over the CPU


def test_policy_is_restored_even_on_error():
    import keras

    with pytest.raises(RuntimeError), precision.policy("mixed_bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == "float32"


def _policies(model) -> set[str]:
    import keras

    out = {model.dtype_policy.name}
    for layer in model.layers:
        out |= _policies(layer) if isinstance(layer, keras.Model) else {layer.dtype_policy.name}
    return out


def test_float32_copy_keeps_every_weight_and_computes_in_float32(params_dict):
    from multidigit.model import build_detector
    from multidigit.params import validate_params

    params_dict["model"].update(width=8)
    cfg = validate_params(params_dict)
    with precision.policy("mixed_bfloat16"):
        mixed = build_detector(cfg.model)
    # the logits stay float32 under the mixed policy; everything before them is bfloat16
    assert mixed.get_layer("predict").compute_dtype == "float32" and mixed.output.dtype == "float32"
    assert mixed.get_layer("backbone").get_layer("down0_conv").compute_dtype == "bfloat16"
    copy = precision.float32_copy(mixed, lambda: build_detector(cfg.model))
    assert _policies(copy) == {"float32"} and "mixed_bfloat16" in _policies(mixed)
    for a, b in zip(mixed.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((2, 100, 100, 1), np.float32)
    # bfloat16 keeps 8 bits of mantissa: the two differ, but only by rounding
    diff = np.abs(mixed.predict(x, verbose=0) - copy.predict(x, verbose=0))
    assert 0 < diff.max() < 0.05
    assert precision.float32_copy(copy, lambda: pytest.fail("a float32 model needs no copy")) is copy
