"""MLflow tracking: one run per stage, nested under one pipeline run per workspace.

DVC runs each stage in its own process, so the parent run is found again by tags: the newest
`pipeline` run of this workspace that is still open (or was opened less than `PIPELINE_WINDOW_S` ago).
$MULTIDIGIT_PIPELINE_RUN_ID pins it explicitly (the Prefect deployment runner sets it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from multidigit.params import MlflowParams

PIPELINE_WINDOW_S = 6 * 3600
KIND_TAG = "multidigit.kind"
WORKSPACE_TAG = "multidigit.workspace"


def tracking_uri(params: MlflowParams) -> str:
    """$MLFLOW_TRACKING_URI when set, else params (a sqlite file in the workspace by default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or params.tracking_uri


def _configure(params: MlflowParams):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params))
    return mlflow.set_experiment(params.experiment)


def pipeline_run_id(params: MlflowParams) -> str:
    """The id of this workspace's pipeline run, created when none is recent."""
    import mlflow

    if pinned := os.environ.get("MULTIDIGIT_PIPELINE_RUN_ID"):
        return pinned
    experiment = _configure(params)
    workspace = str(Path.cwd().resolve())
    since = int((time.time() - PIPELINE_WINDOW_S) * 1000)
    found = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=(
            f"tags.`{KIND_TAG}` = 'pipeline' and tags.`{WORKSPACE_TAG}` = '{workspace}' "
            f"and attributes.start_time > {since}"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if found:
        return found[0].info.run_id
    client = mlflow.MlflowClient()
    run = client.create_run(
        experiment.experiment_id,
        run_name="pipeline",
        tags={KIND_TAG: "pipeline", WORKSPACE_TAG: workspace},
    )
    return run.info.run_id


@contextlib.contextmanager
def stage_run(params: MlflowParams, name: str, tags: dict[str, Any] | None = None) -> Iterator[Any]:
    """Open an MLflow run named `name`, nested under the pipeline run; yields the active run.

    Args:
        params: the mlflow block of params.yaml.
        name: the stage, e.g. "train@stage2".
        tags: extra tags to set on the stage run.
    """
    import mlflow

    parent_id = pipeline_run_id(params)
    _configure(params)
    stage_tags = {KIND_TAG: "stage", "mlflow.parentRunId": parent_id, **(tags or {})}
    with mlflow.start_run(run_name=name, tags={k: str(v) for k, v in stage_tags.items()}) as run:
        yield run
