"""Where `python -m flows run` runs a flow: the running stack's deployment on a worker, or in-process.

Mode: $PREFECT_API_URL set -> that server, which must answer (else one line, exit 1); else the stack
`make run` / `python -m flows.deployments up` started in this folder (.stack/api_url, if it answers);
else in-process on an ephemeral Prefect, said in one line.

In deployment mode the command creates a flow run of the flow's deployment (prefect.yaml) with Prefect's
`run_deployment`, tagged with the DVC stage, waits with Prefect's `wait_for_flow_run`, and exits 0 only
for Completed. DVC stays the owner of deps and outs, so the run is pinned to this working directory
(job variable `working_dir`): the workers must see the repo at that same path.
"""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.responses import DeploymentResponse

WORK_POOL = "multidigit-process"
STATE_DIR = Path(".stack")  # the local stack's pids, logs, PREFECT_HOME and api_url
URL_FILE = "api_url"
# Client environment the flow run needs to see the same stores as an in-process run would.
FORWARD_ENV = ("MLFLOW_TRACKING_URI", "MNIST_DIR", "MULTIDIGIT_PIPELINE_RUN_ID")
HEALTH_TIMEOUT_S = 3.0


class StackUnreachable(ConnectionError):
    """$PREFECT_API_URL is set but no Prefect server answers there."""


def answers(url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> bool:
    """True if the Prefect API at `url` answers its health check within `timeout_s`."""
    with (
        contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, ValueError),
        urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s) as resp,
    ):
        return resp.status == 200
    return False


def stack_url(state: Path = STATE_DIR) -> str | None:
    """The API URL of the stack started in this folder, if its url file exists."""
    path = state / URL_FILE
    return path.read_text().strip() if path.is_file() else None


def resolve_mode(out: TextIO | None = None) -> str | None:
    """The API URL to run deployments on (and set it in $PREFECT_API_URL), or None for in-process.

    Call before Prefect is imported: Prefect reads its settings once, at import.
    Raises:
        StackUnreachable: $PREFECT_API_URL is set and does not answer.
    """
    if url := os.environ.get("PREFECT_API_URL"):
        if not answers(url):
            raise StackUnreachable(f"PREFECT_API_URL={url}: Prefect API unreachable (no answer on /health)")
        return url
    found = stack_url()
    if found and answers(found):
        os.environ["PREFECT_API_URL"] = found
        return found
    why = "the stack in .stack/ is not running" if found else "no Prefect server configured or running"
    line = f"flows: {why}; running in-process (`make run` starts the stack)"
    print(line, file=out or sys.stderr, flush=True)
    return None


def entrypoint_of(target: str) -> str:
    """'flows.generate:generate_flow' -> 'flows/generate.py:generate_flow' (the prefect.yaml form)."""
    module, func = target.split(":")
    return f"{module.replace('.', '/')}.py:{func}"


def find_deployment(client: SyncPrefectClient, name: str, target: str) -> DeploymentResponse:
    """The deployment called `name` whose entrypoint is `target`'s file and function.

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
        f"(found: {seen}); apply prefect.yaml with `make run` or `python -m flows.deployments apply`"
    )


def job_variables(params: str) -> dict[str, Any]:
    """Process-pool job variables: run in this working directory with the forwarded environment.

    The params file is validated here, before anything is triggered. The stage's MLflow run finds this
    workspace's pipeline run itself (tracking.pipeline_run_id, by workspace path), on the worker.
    """
    from multidigit.params import load_params

    load_params(params)
    env = {key: os.environ[key] for key in FORWARD_ENV if os.environ.get(key)}
    return {"working_dir": str(Path.cwd().resolve()), "env": env}


def ui_url(api_url: str, flow_run_id: Any) -> str:
    """The Prefect UI page of a flow run on the server at `api_url`."""
    return f"{api_url.rstrip('/').removesuffix('/api')}/runs/flow-run/{flow_run_id}"


def run_via_deployment(name: str, target: str, parameters: dict[str, Any], out: TextIO = sys.stdout) -> int:
    """Run flow `name` as its deployment on $PREFECT_API_URL and wait for the final state.

    Args:
        name: the flow table key, which is also the deployment name.
        target: "module:function" of the flow, to match the deployment's entrypoint.
        parameters: the flow's keyword arguments (params, stage).
        out: where the lines go.
    Returns:
        0 if the run ended Completed, else 1.
    Raises:
        ParamsError: the params file is bad (checked before any run is created).
        LookupError: no matching deployment on the server.
    """
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.flow_runs import wait_for_flow_run
    from prefect.utilities.asyncutils import run_coro_as_sync

    variables = job_variables(parameters["params"])
    stage = parameters.get("stage")
    with get_client(sync_client=True) as client:
        deployment = find_deployment(client, name, target)
    label = f"{name}/{deployment.name}"
    # timeout=0: return at once with the created run; Prefect's wait_for_flow_run follows its events.
    flow_run = run_deployment(
        deployment.id,
        parameters=parameters,
        timeout=0,
        job_variables=variables,
        as_subflow=False,
        tags=["multidigit", f"dvc:{name}{'@' + stage if stage else ''}", *([stage] if stage else [])],
    )
    url = ui_url(os.environ["PREFECT_API_URL"], flow_run.id)
    print(f"{label}: flow run {flow_run.name!r} on a worker: {url}", file=out, flush=True)
    final = run_coro_as_sync(wait_for_flow_run(flow_run.id, timeout=None, log_states=True))
    state = final.state
    message = f": {state.message}" if state and state.message and not state.is_completed() else ""
    line = f"{label}: flow run {final.name!r} ({final.id}) finished {state.name}{message}"
    print(line, file=out, flush=True)
    return 0 if state is not None and state.is_completed() else 1
