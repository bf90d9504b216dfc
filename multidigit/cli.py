"""`multidigit` command line: one subcommand per pipeline step, each calling its module's `main()`.

Modules are imported only when their subcommand runs, so `multidigit --help` and `params check` stay fast
(TensorFlow takes seconds to import).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from multidigit import console
from multidigit.constants import DEFAULT_PARAMS_FILE, STAGES
from multidigit.params import ParamsError, load_params

EXIT_BAD_PARAMS = 2
EXIT_FAILED = 1


def _params_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=str(DEFAULT_PARAMS_FILE), help="params YAML (default: %(default)s)")


def _stage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", required=True, choices=STAGES, help="curriculum stage")


def _check_params(args: argparse.Namespace) -> None:
    load_params(args.file)
    print(f"{args.file}: ok")


def _lazy(target: str) -> Callable[[argparse.Namespace], None]:
    """Call `module:function` with the parsed options as keyword arguments."""

    def run(args: argparse.Namespace) -> None:
        module, func = target.split(":")
        # `action` is kept: `registry list|promote|rollback` passes it to registry:main.
        kwargs = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
        getattr(importlib.import_module(f"multidigit.{module}"), func)(**kwargs)

    return run


def _export_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=("yolo", "coco"), help="output layout")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", required=True, help="output folder")


def _registry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "promote", "rollback"))
    p.add_argument("--version", help="model version, for promote")
    p.add_argument("--reason", help="promote over the champion rule (test mAP50-95), saying why")


# (name, "module:function", help, argument adders). Each function takes the options as keywords.
COMMANDS: list[tuple[str, str, str, tuple[Callable[[argparse.ArgumentParser], None], ...]]] = [
    ("mnist", "mnist:main", "verify MNIST and write data/mnist/{train,val,test}.npz", (_params_arg,)),
    ("generate", "canvas:main", "generate one stage's canvas shards", (_params_arg, _stage_arg)),
    ("preview", "preview:main", "draw a stage's preview grid and histograms", (_params_arg, _stage_arg)),
    (
        "export-dataset",
        "dataset_export:main",
        "write a stage's canvases as YOLO txt + PNG or COCO JSON",
        (_params_arg, _stage_arg, _export_dataset_args),
    ),
    ("pretrain", "pretrain:main", "pretrain the backbone as an MNIST classifier", (_params_arg,)),
    ("train", "train:main", "train one curriculum stage of the detector", (_params_arg, _stage_arg)),
    (
        "evaluate",
        "evaluation.stage:main",
        "evaluate a stage on its test split (stage 3: and the drawn split), apply its gate",
        (_params_arg, _stage_arg),
    ),
    ("export", "export:main", "convert the stage-3 detector to a quantized TF.js model", (_params_arg,)),
    (
        "registry",
        "registry:main",
        "list, promote or roll back registered models",
        (_params_arg, _registry_args),
    ),
    (
        "report",
        "evaluation.report:main",
        "regenerate reports/summary.md and the README results",
        (_params_arg,),
    ),
]


def announce_stage(command: str, stage: str | None = None) -> None:
    """Print the stage's headline (`console.headline`), described by its subcommand's help text."""
    what = next((help_text for name, _, help_text, _ in COMMANDS if name == command), command)
    console.announce(command, stage, what)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multidigit",
        description="Train, gate, export and serve a detector for handwritten digits on a canvas.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    params = sub.add_parser("params", help="validate a params file")
    params_sub = params.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = params_sub.add_parser("check", help="validate FILE against the schema (exit 2 if bad)")
    check.add_argument("file", nargs="?", default=str(DEFAULT_PARAMS_FILE))
    check.set_defaults(handler=_check_params)

    for name, target, help_text, adders in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        for add in adders:
            add(p)
        p.set_defaults(handler=_lazy(target))
    return parser


# Expected failures (bad input, a missing file, a failed gate) end in one line, not a traceback.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, ValueError, ConnectionError, RuntimeError)


def exit_code_of(call: Callable[[], object], expected: tuple[type[Exception], ...] = EXPECTED_ERRORS) -> int:
    """Run `call`; print an expected failure as one `error:` line and turn it into an exit code.

    Returns:
        The call's own exit code when it returns an int, else 0; EXIT_BAD_PARAMS for a ParamsError,
        EXIT_FAILED for the `expected` errors.
    """
    try:
        result = call()
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_PARAMS
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    announce_stage(args.command, getattr(args, "stage", None))
    return exit_code_of(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
