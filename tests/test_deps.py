"""dvc.yaml: every project module a stage's command imports, directly or not, is in that stage's deps.

A stage's command names an entry (`multidigit <sub>` -> multidigit/cli.py and the subcommand's lazy
target module; `python -m flows run <flow>` -> flows/__main__.py and the flow's module). From there the
test follows every `import` statement with ast, function-level ones included (a lazy import still runs
when the stage does), skipping only `if TYPE_CHECKING:` blocks, and keeps the files under multidigit/,
flows/ and services/. Each must be covered by a dep as DVC resolves them (foreach expanded): the file
itself or a folder above it. Otherwise an edit to it leaves outputs that `dvc status` calls up to date.
"""

from __future__ import annotations

import ast
import shlex
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("multidigit", "flows", "services")


def _module_file(name: str) -> Path | None:
    """'multidigit.canvas' -> ROOT/multidigit/canvas.py (or the package's __init__.py); None if not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package_inits(name: str) -> list[Path]:
    """The __init__.py files Python runs before `name` (every parent package)."""
    parts = name.split(".")
    return [p for i in range(1, len(parts)) if (p := _module_file(".".join(parts[:i]))) is not None]


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imported_names(tree: ast.AST, package: str) -> list[str]:
    """Every module name an import statement in `tree` may load, outside `if TYPE_CHECKING:` blocks."""
    names: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.append(base)
            # `from pkg import mod` loads pkg/mod.py when mod is a module rather than an attribute.
            names.extend(f"{base}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return names


@cache
def _direct_imports(path: Path) -> frozenset[Path]:
    rel = path.relative_to(ROOT).with_suffix("")
    module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[Path] = set()
    for name in _imported_names(ast.parse(path.read_text(), str(path)), package):
        target = _module_file(name)
        if target is not None:
            found.update([target, *_package_inits(name)])
    return frozenset(found - {path})


def import_closure(entry_modules: list[str]) -> set[Path]:
    """Project files loaded when the entry modules are imported (function-level imports included)."""
    todo = [p for name in entry_modules for p in [_module_file(name), *_package_inits(name)] if p]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_direct_imports(path))
    return seen


def _literal_assignment(path: Path, name: str):
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{path.name} assigns no literal {name}")


def entry_modules(cmd: str) -> list[str]:
    """The modules a stage command starts from: the dispatcher and the one target it imports lazily."""
    argv = shlex.split(cmd)
    if argv[0] == "multidigit":
        from multidigit.cli import COMMANDS

        targets = {name: target for name, target, _, _ in COMMANDS}
        return ["multidigit.cli", "multidigit." + targets[argv[1]].split(":")[0]]
    if argv[:4] == ["python", "-m", "flows", "run"]:
        flows = _literal_assignment(ROOT / "flows" / "__main__.py", "FLOWS")
        return ["flows.__main__", flows[argv[4]].split(":")[0]]
    raise ValueError(f"stage command {cmd!r}: no rule to find its entry module (multidigit or flows run)")


@cache
def dvc_stages() -> dict[str, tuple[str, tuple[str, ...]]]:
    """stage address -> (cmd, deps as paths relative to the repo), as DVC resolves dvc.yaml."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {
            stage.addressing: (stage.cmd, tuple(dep.def_path for dep in stage.deps))
            for stage in repo.index.stages
        }


def missing_deps(cmd: str, deps: tuple[str, ...]) -> list[str]:
    """Closure files of `cmd` that no dep (the file or a folder above it) covers."""
    covered = [ROOT / dep for dep in deps]
    closure = import_closure(entry_modules(cmd))
    return sorted(
        path.relative_to(ROOT).as_posix()
        for path in closure
        if not any(path == dep or dep in path.parents for dep in covered)
    )


def test_closure_follows_function_level_and_relative_imports():
    # flows/__main__ reaches multidigit/params.py via multidigit.cli, and flows/runner.py imports
    # multidigit.params only inside a function: both must be found.
    closure = {p.relative_to(ROOT).as_posix() for p in import_closure(["flows.__main__"])}
    assert {"flows/__init__.py", "flows/runner.py", "multidigit/cli.py", "multidigit/params.py"} <= closure
    runner = {p.relative_to(ROOT).as_posix() for p in import_closure(["flows.runner"])}
    assert "multidigit/params.py" in runner
    source = "from . import canvas\nfrom .boxes import iou\nif TYPE_CHECKING:\n    import flows.train\n"
    names = set(_imported_names(ast.parse(source), "multidigit.evaluation"))
    assert names == {
        "multidigit.evaluation",
        "multidigit.evaluation.canvas",
        "multidigit.evaluation.boxes",
        "multidigit.evaluation.boxes.iou",
    }


def test_every_stage_command_has_an_entry_rule():
    for address, (cmd, _) in dvc_stages().items():
        assert entry_modules(cmd), address


@pytest.mark.parametrize("address", sorted(dvc_stages()))
def test_stage_deps_cover_its_import_closure(address):
    cmd, deps = dvc_stages()[address]
    missing = missing_deps(cmd, deps)
    assert not missing, f"{address}: {len(missing)} imported modules not in deps: {', '.join(missing)}"


@pytest.mark.parametrize("address", sorted(dvc_stages()))
def test_stage_lists_each_dep_once(address):
    _, deps = dvc_stages()[address]
    twice = sorted({dep for dep in deps if deps.count(dep) > 1})
    assert not twice, f"{address}: deps listed more than once: {', '.join(twice)}"
