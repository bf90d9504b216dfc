"""Prefect flows of the `pretrain` and `train@<stage>` DVC stages: one task each around the core call.

Training is deterministic math on local files, so the tasks carry no retries; nothing here computes.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from multidigit import pretrain, train
from multidigit.constants import DEFAULT_PARAMS_FILE


@task(name="pretrain-backbone", cache_policy=NO_CACHE)
def pretrain_task(params: str) -> dict[str, float]:
    """Pretrain the backbone and write models/pretrain/; returns pretrain_info.json's numbers."""
    return pretrain.main(params)


@task(name="train-stage", cache_policy=NO_CACHE, task_run_name="train-{stage}")
def train_task(params: str, stage: str) -> dict[str, float]:
    """Train one curriculum stage and write models/<stage>/; returns train_info.json's numbers."""
    return train.main(params, stage)


@flow(name="pretrain")
def pretrain_flow(params: str = str(DEFAULT_PARAMS_FILE)) -> dict[str, float]:
    """Pretrain the detector's backbone as a digit classifier (source per pretrain.source).

    Args:
        params: the params YAML.
    Returns:
        The pretrain info (val accuracy, wall seconds, ...).
    """
    return pretrain_task(params)


@flow(name="train")
def train_flow(params: str = str(DEFAULT_PARAMS_FILE), stage: str = "stage1") -> dict[str, float]:
    """Train one curriculum stage of the detector from its predecessor's weights.

    Args:
        params: the params YAML.
        stage: "stage1" | "stage2" | "stage3".
    Returns:
        The stage's train info (params, MACs, wall seconds, epochs run, ...).
    """
    return train_task(params, stage)
