"""The quality gates (multidigit/evaluation/gates.py): the one-line verdict, the drawn sub-gate, and
the schema that allows a drawn gate on stage 3 only."""

from __future__ import annotations

import pytest

from multidigit.evaluation.gates import gate_failure
from multidigit.params import DrawnGateParams, GateParams, ParamsError, validate_params


@pytest.mark.parametrize(
    ("values", "gate", "expected"),
    [
        ((0.953, 0.9), GateParams(map50=0.97, map50_95=0.85), "gate failed: stage3 map50 0.953 < 0.970"),
        ((0.99, 0.8), GateParams(map50=0.97, map50_95=0.85), "gate failed: stage3 map50_95 0.800 < 0.850"),
        (
            (0.5, 0.2),
            GateParams(map50=0.97, map50_95=0.85),
            "gate failed: stage3 map50 0.500 < 0.970, map50_95 0.200 < 0.850",
        ),
        ((0.9695, 0.9), GateParams(map50=0.97, map50_95=0.85), "gate failed: stage3 map50 0.9695 < 0.9700"),
        ((0.97, 0.85), GateParams(map50=0.97, map50_95=0.85), None),
        ((0.1, 0.1), None, None),
    ],
)
def test_gate_message(values, gate, expected):
    metrics = {"metrics/mAP50": values[0], "metrics/mAP50-95": values[1]}
    assert gate_failure("stage3", metrics, gate) == expected


DRAWN = GateParams(map50=0.9, map50_95=0.8, drawn=DrawnGateParams(map50=0.95, sequence_accuracy=0.9))
TEST_OK = {"metrics/mAP50": 0.99, "metrics/mAP50-95": 0.88}


def test_drawn_gate_checks_the_drawn_figures():
    assert (
        gate_failure("stage3", TEST_OK | {"drawn/mAP50": 0.97, "drawn/sequence_accuracy": 0.9}, DRAWN) is None
    )
    low = TEST_OK | {"drawn/mAP50": 0.97, "drawn/sequence_accuracy": 0.81}
    assert gate_failure("stage3", low, DRAWN) == "gate failed: stage3 drawn sequence_accuracy 0.810 < 0.900"
    both = {
        "metrics/mAP50": 0.5,
        "metrics/mAP50-95": 0.88,
        "drawn/mAP50": 0.94,
        "drawn/sequence_accuracy": 0.95,
    }
    assert (
        gate_failure("stage3", both, DRAWN)
        == "gate failed: stage3 map50 0.500 < 0.900, drawn map50 0.940 < 0.950"
    )


def test_a_drawn_gate_without_drawn_figures_fails_rather_than_passing_unchecked():
    line = gate_failure("stage3", TEST_OK, DRAWN)
    assert line == (
        "gate failed: stage3 drawn map50 missing (drawn/mAP50 not in the metrics), "
        "drawn sequence_accuracy missing (drawn/sequence_accuracy not in the metrics)"
    )
    assert gate_failure("stage3", TEST_OK, GateParams(map50=0.9, map50_95=0.8)) is None  # no drawn gate


def test_repo_params_gate_drawn_on_stage3_only(params_dict):
    gates = validate_params(params_dict).evaluate.gates
    assert gates["stage3"].drawn is not None and gates["stage1"].drawn is None
    params_dict["evaluate"]["gates"]["stage1"]["drawn"] = {"map50": 0.5, "sequence_accuracy": 0.5}
    with pytest.raises(
        ParamsError, match=r"evaluate\.gates\.stage1\.drawn: only stage3 scores the drawn split"
    ):
        validate_params(params_dict)
    params_dict["evaluate"]["gates"]["stage1"].pop("drawn")
    params_dict["evaluate"]["gates"]["stage3"]["drawn"] = {"map50": 0.5}
    with pytest.raises(ParamsError, match=r"evaluate\.gates\.stage3\.drawn\.sequence_accuracy"):
        validate_params(params_dict)
