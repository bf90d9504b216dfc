"""Prefect flow of the `evaluate@<stage>` DVC stage: one task runs `multidigit.evaluation.stage`, the flow
applies the gate.

A failed gate ends the flow run in state Failed with the one-line gate message (not an exception, so
Prefect logs the line instead of a traceback); `python -m flows run` then exits non-zero and DVC
records nothing for the stage, so nothing downstream runs.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.states import Failed, State

from multidigit.constants import DEFAULT_PARAMS_FILE
from multidigit.evaluation import stage as evaluation
from multidigit.params import load_params


@task(name="evaluate-stage")
def evaluate_task(params: str, stage: str) -> tuple[dict[str, float], str | None]:
    """Evaluate one stage and write its outputs; returns (metrics, gate failure line or None)."""
    return evaluation.run_stage(load_params(params), stage)


@flow(name="evaluate")
def evaluate_flow(params: str = str(DEFAULT_PARAMS_FILE), stage: str = "stage3") -> dict[str, float] | State:
    """Evaluate `stage` on its test split (and stage 3 on the drawn split) and apply its gate.

    Args:
        params: the params YAML.
        stage: "stage1" | "stage2" | "stage3".
    Returns:
        The rounded metrics, or a Failed state carrying the gate message.
    """
    metrics, failure = evaluate_task(params, stage)
    get_run_logger().info(evaluation.headline(stage, metrics))
    if failure:
        return Failed(message=failure)
    return metrics
