"""`python -m flows run NAME [--stage S] [--params F]`: the one entry every Prefect-backed DVC stage calls.

It picks the mode before Prefect is imported (flows/runner.py resolve_mode): with a server configured
($PREFECT_API_URL) or the local stack up (.stack/api_url), it triggers the flow's deployment, which a
warm worker runs, and exits 0 only when the run ends Completed; a configured server that does not answer
is one line and exit 1. With neither, it runs the same flow in-process on an ephemeral Prefect and says
so in one line. Either way the flow writes the same outputs in the same working directory, which DVC checks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# The temporary (ephemeral) Prefect server takes 20-50 s to come up on a loaded 2-core machine; Prefect's
# default wait of 20 s made stages fail before doing any work.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Nothing leaves this machine: the temporary server would otherwise try to send usage telemetry.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from flows import runner
from multidigit.cli import EXPECTED_ERRORS, announce_stage, exit_code_of
from multidigit.constants import DEFAULT_PARAMS_FILE, STAGES
from multidigit.params import load_params

# flow name -> "module:function"; each function takes keyword arguments params (path) and, where it
# has one, stage.
FLOWS = {
    "generate": "flows.generate:generate_flow",
    "pretrain": "flows.train:pretrain_flow",
    "train": "flows.train:train_flow",
    "evaluate": "flows.evaluate:evaluate_flow",
    "export": "flows.export:export_flow",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one flow")
    run.add_argument("name", choices=sorted(FLOWS))
    run.add_argument("--stage", choices=STAGES)
    run.add_argument("--params", default=str(DEFAULT_PARAMS_FILE))
    return parser


def via_deployment(name: str, kwargs: dict) -> int:
    """Trigger and follow the deployment run; an API that stops answering is a ConnectionError."""
    import httpx

    try:
        return runner.run_via_deployment(name, FLOWS[name], kwargs)
    except (httpx.HTTPError, OSError) as exc:
        url = os.environ["PREFECT_API_URL"]
        raise ConnectionError(f"PREFECT_API_URL={url}: Prefect API unreachable ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    announce_stage(args.name, args.stage)
    kwargs = {"params": args.params}
    if args.stage:
        kwargs["stage"] = args.stage
    if code := exit_code_of(lambda: load_params(args.params)):  # a bad file: one line, no server asked
        return code
    try:
        url = runner.resolve_mode()
    except runner.StackUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if url:
        return exit_code_of(lambda: via_deployment(args.name, kwargs), (LookupError, ConnectionError))
    from prefect.exceptions import FailedRun

    module, func = FLOWS[args.name].split(":")
    flow_module = importlib.import_module(module)
    # a flow module's own checks (generate: the Dask scheduler answers) fail in one line, not a traceback
    if hasattr(flow_module, "preflight") and (code := exit_code_of(lambda: flow_module.preflight(**kwargs))):
        return code
    flow_fn = getattr(flow_module, func)
    return exit_code_of(lambda: flow_fn(**kwargs), (FailedRun, *EXPECTED_ERRORS))


if __name__ == "__main__":
    sys.exit(main())
