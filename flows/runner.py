"""Deployment mode of `python -m flows run`: trigger a flow's deployment on a Prefect server and wait.

When $PREFECT_API_URL is set, the DVC stage command does not run the flow itself: it finds the
deployment `prefect.yaml` applied for the flow, creates a flow run for it with the same parameters,
prints every state change, and returns an exit code (0 only for Completed). A worker of the process pool
executes the run.

DVC stays the owner of deps and outs, so the worker must read and write the very files DVC checks: each
run is pinned to this process's working directory (the process job variable `working_dir`), and the
workers must see the repo at that same path (same machine, or a shared volume mounted at the same path).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import DeploymentResponse

WORK_POOL = "multidigit-process"
# Client environment the flow run needs to see the same stores as an in-process run would.
FORWARD_ENV = ("MLFLOW_TRACKING_URI", "MNIST_DIR")
POLL_S = 1.0


def is_deployment_mode() -> bool:
    """True when a Prefect server is configured ($PREFECT_API_URL), so stages run as deployments."""
    return bool(os.environ.get("PREFECT_API_URL"))


def entrypoint_of(target: str) -> str:
    """'flows.generate:generate_flow' -> 'flows/generate.py:generate_flow' (the prefect.yaml form)."""
    module, func = target.split(":")
    return f"{module.replace('.', '/')}.py:{func}"


def find_deployment(client: SyncPrefectClient, name: str, target: str) -> DeploymentResponse:
    """The deployment called `name` whose entrypoint is `target`'s file and function.

    Args:
        client: a Prefect client on $PREFECT_API_URL.
        name: the deployment name (the flow table key, e.g. "train").
        target: "module:function" from the flow table.
    Returns:
        The deployment.
    Raises:
        LookupError: none matches; the message says how to apply them.
    """
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    wanted = entrypoint_of(target)
    by_name = DeploymentFilter(name=DeploymentFilterName(any_=[name]))
    found = client.read_deployments(deployment_filter=by_name)
    for deployment in found:
        if deployment.entrypoint == wanted:
            return deployment
    seen = ", ".join(sorted(d.entrypoint or "?" for d in found)) or "none"
    raise LookupError(
        f"deployment {name!r} with entrypoint {wanted} not found on {os.environ.get('PREFECT_API_URL')} "
        f"(found: {seen}); apply prefect.yaml with `make workers` or `prefect deploy --all`"
    )


def run_environment(params: str) -> dict[str, str]:
    """Environment for the flow run: forwarded stores plus the pinned MLflow pipeline run.

    Pinning MULTIDIGIT_PIPELINE_RUN_ID here means every stage's MLflow run nests under the pipeline run
    of this workspace even when the worker sits on another machine or in another container.
    """
    from multidigit.params import load_params
    from multidigit.tracking import pipeline_run_id

    env = {key: os.environ[key] for key in FORWARD_ENV if os.environ.get(key)}
    env["MULTIDIGIT_PIPELINE_RUN_ID"] = pipeline_run_id(load_params(params).mlflow)
    return env


def job_variables(params: str) -> dict[str, Any]:
    """Process-pool job variables: run in this working directory with the forwarded environment."""
    return {"working_dir": str(Path.cwd().resolve()), "env": run_environment(params)}


def watch(client: SyncPrefectClient, flow_run: FlowRun, label: str, out: TextIO, poll_s: float) -> FlowRun:
    """Poll a flow run until its state is final, printing one line per state change.

    Args:
        client: a Prefect client.
        flow_run: the run to watch.
        label: "<flow>/<deployment>", used in every line.
        out: where the lines go.
        poll_s: seconds between polls.
    Returns:
        The flow run in its final state.
    """
    last = None
    while True:
        flow_run = client.read_flow_run(flow_run.id)
        state = flow_run.state
        if state is not None and (state.type, state.name) != last:
            last = (state.type, state.name)
            print(f"{label}: flow run {flow_run.name!r} {state.name}", file=out, flush=True)
        if state is not None and state.is_final():
            return flow_run
        time.sleep(poll_s)


def run_via_deployment(
    name: str, target: str, parameters: dict[str, Any], out: TextIO = sys.stdout, poll_s: float = POLL_S
) -> int:
    """Run flow `name` as its deployment on $PREFECT_API_URL and wait for the final state.

    Args:
        name: the flow table key, which is also the deployment name.
        target: "module:function" of the flow, to match the deployment's entrypoint.
        parameters: the flow's keyword arguments (params, stage).
        out: where state lines go.
        poll_s: seconds between state polls.
    Returns:
        0 if the run ended Completed, else 1.
    Raises:
        ParamsError: the params file is bad (checked before any run is created).
        LookupError: no matching deployment on the server.
    """
    from prefect import get_client
    from prefect.deployments import run_deployment

    variables = job_variables(parameters["params"])  # validates params before anything is triggered
    with get_client(sync_client=True) as client:
        deployment = find_deployment(client, name, target)
        flow = client.read_flow(deployment.flow_id)
        label = f"{flow.name}/{deployment.name}"
        # timeout=0: return at once with the created run; this process does its own waiting and printing.
        flow_run = run_deployment(
            deployment.id,
            parameters=parameters,
            timeout=0,
            job_variables=variables,
            as_subflow=False,
            tags=["multidigit", *([parameters["stage"]] if parameters.get("stage") else [])],
        )
        final = watch(client, flow_run, label, out, poll_s)
    state = final.state
    message = f": {state.message}" if state and state.message and not state.is_completed() else ""
    line = f"{label}: flow run {final.name!r} ({final.id}) finished {state.name}{message}"
    print(line, file=out, flush=True)
    return 0 if state is not None and state.is_completed() else 1
