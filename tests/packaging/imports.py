"""Read the project's imports (ast, no execution) and its declared dependencies (pyproject.toml)."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """{"core": {...}, "<extra>": {...}}: canonical distribution names, extras of a requirement dropped."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {canonical(re.match(r"[A-Za-z0-9._-]+", r.strip()).group(0)) for r in reqs}  # type: ignore[union-attr]

    groups = {"core": names(project["dependencies"])}
    groups |= {extra: names(reqs) for extra, reqs in project.get("optional-dependencies", {}).items()}
    return groups


@dataclass(frozen=True)
class Import:
    module: str  # the top-level name, e.g. "torch"
    where: str  # file:line
    eager: bool  # runs when the importing module is imported (not inside a function, not guarded)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _guards_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for n in names:
            if isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError"):
                return True
    return False


def _imports(tree: ast.AST, path: str) -> list[tuple[str, int, bool]]:
    """(dotted module, line, eager) for every import statement; relative imports resolved by the caller."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, eager) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level == 0 and child.module:
                    found.append((child.module, child.lineno, eager))
                    if child.module == "aiaas" or child.module.startswith("aiaas."):
                        # `from aiaas.x import y` may name the sub-module aiaas.x.y
                        found.extend((f"{child.module}.{a.name}", child.lineno, eager) for a in child.names)
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr in ("importorskip", "import_module")
                and child.args
                and isinstance(child.args[0], ast.Constant)
                and isinstance(child.args[0].value, str)
            ):  # pytest.importorskip("x"), importlib.import_module("x")
                found.append((child.args[0].value, child.lineno, False))
                visit(child, eager)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.body:
                    visit_stmt(sub, False)
                for sub in child.orelse:
                    visit_stmt(sub, eager)
            elif isinstance(child, ast.Try) and _guards_import_error(child):
                for sub in child.body:
                    visit_stmt(sub, False)
                for part in (child.handlers, child.orelse, child.finalbody):
                    for sub in part:
                        visit_stmt(sub, eager)
            else:
                visit(child, eager)

    def visit_stmt(stmt: ast.AST, eager: bool) -> None:
        wrapper = ast.Module(body=[stmt], type_ignores=[])  # type: ignore[list-item]
        visit(wrapper, eager)

    visit(tree, True)
    return found


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def scan(package: str) -> dict[str, list[tuple[str, int, bool]]]:
    """{module name: its imports} for every .py file under ROOT/package."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        out[module_name(path)] = _imports(ast.parse(path.read_text(), str(path)), str(path))
    return out


def eager_closure(modules: dict[str, list[tuple[str, int, bool]]], roots: list[str]) -> set[str]:
    """Our modules that importing `roots` loads (parents packages included), following eager imports."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        for target, _line, eager in modules[name]:
            if eager and (target == "aiaas" or target.startswith("aiaas.")):
                todo.append(target)
    return seen


def third_party(modules: dict[str, list[tuple[str, int, bool]]], only: set[str] | None = None) -> list[Import]:
    out = []
    for name, imports in modules.items():
        if only is not None and name not in only:
            continue
        for target, line, eager in imports:
            top = target.split(".")[0]
            if top in sys.stdlib_module_names or top in ("aiaas", "tests", "bench", "__future__"):
                continue
            out.append(Import(top, f"{name}:{line}", eager))
    return out


# Import name -> distribution for the bench extra's packages, which the test venv may lack.
NOT_INSTALLED_NAMES = {"zmq": "pyzmq"}


@functools.cache
def _module_to_dists() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide a top-level module; for one not installed here (the
    bench extra's), the distribution named like the module."""
    found = {canonical(d) for d in _module_to_dists().get(module, [])}
    return found or {canonical(NOT_INSTALLED_NAMES.get(module, module))}
