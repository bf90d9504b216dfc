"""`python -m flows run NAME [--stage S] [--params F]`: the one entry every Prefect-backed DVC stage calls.

With $PREFECT_API_URL set, it triggers the flow's deployment on that server (prefect.yaml, applied by
`make workers`), streams the run's state changes, and exits 0 only when the run ends Completed
(flows/runner.py). Without it, it runs the same flow in-process on an ephemeral Prefect. Either way the
flow writes the same outputs in the same working directory, which DVC checks.
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

import httpx
from prefect.exceptions import FailedRun

from flows import runner
from multidigit.cli import EXPECTED_ERRORS, exit_code_of
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kwargs = {"params": args.params}
    if args.stage:
        kwargs["stage"] = args.stage
    if runner.is_deployment_mode():

        def via_deployment() -> int:
            try:
                return runner.run_via_deployment(args.name, FLOWS[args.name], kwargs)
            except httpx.HTTPError as exc:
                url = os.environ["PREFECT_API_URL"]
                raise ConnectionError(f"PREFECT_API_URL={url}: Prefect API unreachable ({exc})") from None

        return exit_code_of(via_deployment, (LookupError, ConnectionError))
    module, func = FLOWS[args.name].split(":")
    flow_fn = getattr(importlib.import_module(module), func)

    def run_in_process() -> None:
        load_params(args.params)  # a bad file fails in one line, before Prefect starts its server
        flow_fn(**kwargs)

    return exit_code_of(run_in_process, (FailedRun, *EXPECTED_ERRORS))


if __name__ == "__main__":
    sys.exit(main())
