"""params.yaml schema: every class of bad input is refused with its dotted key named."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from multidigit.params import ParamsError, load_params, validate_params
from tests.conftest import ROOT


def test_repo_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.generate.stages["stage1"].digits == (1, 1)
    assert params.model.stride == 4


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["generate"].update(workrs=3), "generate.workrs: unknown key"),
        (lambda d: d.update(trian={}), "trian: unknown key"),
        (lambda d: d["train"].update(batch_size="many"), "train.batch_size = 'many'"),
        (lambda d: d["nms"].update(iou_threshold=1.5), "nms.iou_threshold = 1.5"),
        (lambda d: d["mnist"].update(val_size=0), "mnist.val_size = 0"),
        (lambda d: d["model"].update(backbone="resnet"), "model.backbone = 'resnet'"),
        (
            lambda d: d["generate"]["stages"]["stage2"].update(digits=[5, 3]),
            "generate.stages.stage2.digits: min 5 > max 3",
        ),
        (
            lambda d: d["generate"]["stages"]["stage1"].update(scale=[2.0, 1.0]),
            "generate.stages.stage1.scale: min 2.0 > max 1.0",
        ),
        (
            lambda d: d["generate"]["stages"]["stage3"].update(digits=[1, 40]),
            "generate.stages.stage3.digits: max 40 cannot fit",
        ),
        (lambda d: d["generate"]["stages"].pop("stage2"), "generate.stages: lacks stage2"),
        (
            lambda d: d["model"].update(backbone="mobilenetv2", stem_filters=8),
            "model: stem_filters is 8 but backbone is 'mobilenetv2'",
        ),
        (
            lambda d: d["generate"]["stages"]["stage1"]["canvases"].pop("test"),
            "generate.stages.stage1.canvases.test: Field required",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-top",
        "wrong-type",
        "out-of-range",
        "below-min",
        "bad-choice",
        "min-gt-max",
        "scale-min-gt-max",
        "cannot-fit",
        "missing-stage",
        "stem-of-mobilenet",
        "missing-key",
    ],
)
def test_bad_params_name_their_key(params_dict, mutate, expected):
    mutate(params_dict)
    with pytest.raises(ParamsError) as info:
        validate_params(params_dict)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_stem_defaults_to_none_for_another_backbone(params_dict):
    # mnist_cnn's default of 8 filters; MobileNetV2 brings its own stem, so leaving the key out is valid
    del params_dict["model"]["stem_filters"]
    assert validate_params(params_dict).model.stem_filters == 8
    params_dict["model"]["backbone"] = "mobilenetv2"
    assert validate_params(params_dict).model.stem_filters == 0


def test_unknown_key_suggests_closest(params_dict):
    params_dict["generate"]["workrs"] = 3
    with pytest.raises(ParamsError, match="did you mean 'workers'"):
        validate_params(params_dict)


def test_params_are_frozen():
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ValueError):
        params.model.stride = 5  # type: ignore[misc]


def test_cli_check_exits_2_with_one_line(tmp_path, params_dict):
    params_dict["loss"]["lambda_coord"] = -1
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params_dict))
    result = subprocess.run(
        [sys.executable, "-m", "multidigit", "params", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: params: loss.lambda_coord = -1: Input should be greater than 0"
    ]


def test_cli_check_rejects_broken_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    result = subprocess.run(
        [sys.executable, "-m", "multidigit", "params", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "is not valid YAML" in result.stderr


def test_smoke_overrides_name_real_keys_and_validate():
    from scripts.smoke import merge

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = yaml.safe_load((ROOT / "params.smoke.yaml").read_text())
    merged = validate_params(merge(base, overrides))
    assert merged.generate.stages["stage3"].canvases.train < 1000
    with pytest.raises(KeyError, match="trian"):
        merge(base, {"trian": {}})


# ---------------------------------------------------------------- one source of defaults
def _block_of(annotation: object) -> type | None:
    from pydantic import BaseModel

    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _entry_block(annotation: object) -> type | None:
    """The block class of a `dict[str, Block]` field (per-stage entries), else None."""
    import typing

    args = typing.get_args(annotation)
    return _block_of(args[1]) if typing.get_origin(annotation) is dict and len(args) == 2 else None


def _walk_keys(cls, raw: dict, obj, path: str, slots: dict, seen: dict) -> None:
    """Record, per key path (`*` for a per-stage entry), how many blocks could set it and the values set."""
    for name, field in cls.model_fields.items():
        slots[f"{path}{name}"] = slots.get(f"{path}{name}", 0) + 1
        if name not in raw:
            continue
        value, sub = raw[name], getattr(obj, name)
        if _block_of(field.annotation) and isinstance(value, dict):
            _walk_keys(field.annotation, value, sub, f"{path}{name}.", slots, seen)
            continue
        entry = _entry_block(field.annotation)
        if entry and isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, dict):
                    _walk_keys(entry, item, sub[key], f"{path}{name}.*.", slots, seen)
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        seen.setdefault(f"{path}{name}", []).append((field.is_required(), default, sub))


def default_contradictions(data: dict, schema: type | None = None) -> list[str]:
    """Keys whose params.py default disagrees with what the params mapping sets.

    A block's key set in the file must equal its default (or have none). For per-stage entries
    (`train.stages.*.patience`) the default is the value of the stages that omit the key, so a stage may
    differ from it; but when every stage sets the key the default is never used, and it must then agree
    with all of them or go.
    """
    from multidigit.params import Params

    schema = schema or Params
    slots: dict[str, int] = {}
    seen: dict[str, list] = {}
    _walk_keys(schema, data, schema.model_validate(data), "", slots, seen)
    found = []
    for key, values in seen.items():
        required, default = values[0][0], values[0][1]
        differing = [v for _, _, v in values if v != default]
        if required or not differing or len(values) < slots[key]:
            continue
        found.append(f"{key}: params.py default {default!r:.40}, params.yaml sets {differing[0]!r:.40}")
    return sorted(found)


def test_params_py_defaults_never_contradict_params_yaml():
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    found = default_contradictions(data)
    assert not found, f"{len(found)} defaults differ from params.yaml: " + "; ".join(found)


def test_default_check_catches_a_drift():
    from multidigit.params import Block

    class Entry(Block):
        a: int
        b: int = 1

    class Top(Block):
        x: int = 5
        inner: Entry = Entry(a=0)
        entries: dict[str, Entry]

    def found(x=5, inner_b=1, bs=(2, None)):
        entries = {f"s{i}": {"a": 0} | ({} if b is None else {"b": b}) for i, b in enumerate(bs)}
        return default_contradictions({"x": x, "inner": {"a": 3, "b": inner_b}, "entries": entries}, Top)

    assert found() == []  # a required key may be anything; one stage overriding b is what b's default is for
    assert [f.split(":")[0] for f in found(x=6, inner_b=2)] == ["inner.b", "x"]
    assert [f.split(":")[0] for f in found(bs=(2, 2))] == ["entries.*.b"]  # b's default is never used
    assert found(bs=(1, 1)) == []
