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
