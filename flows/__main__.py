"""`python -m flows run NAME [--stage S] [--params F]`: the one entry every Prefect-backed DVC stage calls.

Runs the named flow in-process (ephemeral Prefect). Issue 9 extends this: when PREFECT_API_URL is set it
triggers the matching deployment and waits for it instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from multidigit.constants import DEFAULT_PARAMS_FILE, STAGES

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
    module, func = FLOWS[args.name].split(":")
    flow_fn = getattr(importlib.import_module(module), func)
    kwargs = {"params": args.params}
    if args.stage:
        kwargs["stage"] = args.stage
    flow_fn(**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
