"""Every smoltbot module says what it offers (`__all__`), and says it truly.

For each module of the package (generated `smoltbot.v1` and Alembic's migration scripts aside):
- it declares `__all__`, a literal list or tuple of strings (an empty one for a package that only
  holds modules);
- `__all__` names only things bound in the module (a package's `__init__` re-exports by importing;
  any other module names only what it defines itself, where `import x as y` defines `y`);
- every public top-level name that another product module imports from it is in its `__all__`
  (what another module reaches for is the module's interface, whatever the list says).

Read from the source (ast), so nothing is imported and no module runs. The anchors: httpx's
tests/test_exported_members.py and aiohttp's test_all_http_exceptions_exported.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Not ours to curate: generated code, and Alembic's scripts (found by path, never imported by name).
_SKIPPED_PACKAGES = ("smoltbot.v1", "smoltbot.core.storage.migrations")


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    exports: list[str] | None = None
    #: Names bound at top level by def, class, assignment or a renaming import.
    defined: set[str] = field(default_factory=set)
    #: Names bound at top level by import.
    imported: set[str] = field(default_factory=set)


def _package_dirs() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def _modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package, folder in _package_dirs().items():
        if package.startswith(_SKIPPED_PACKAGES):
            continue
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            relative = path.relative_to(base)
            if "__pycache__" in relative.parts:
                continue
            parts = [*relative.parts[:-1]] + ([] if path.name == "__init__.py" else [path.stem])
            name = ".".join([package, *parts])
            if name.startswith(_SKIPPED_PACKAGES):
                continue
            modules[name] = _read(name, path)
    return modules


def _bound_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [name for element in target.elts for name in _bound_names(element)]
    return []


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements at module level, looking inside `if`/`try` (TYPE_CHECKING, optional imports)."""
    found: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            found += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            found += _top_level(node.body) + _top_level(node.orelse) + _top_level(node.finalbody)
            for handler in node.handlers:
                found += _top_level(handler.body)
        else:
            found.append(node)
    return found


def _read(name: str, path: Path) -> Module:
    tree = ast.parse(path.read_text(), str(path))
    module = Module(name, path, tree, path.name == "__init__.py")
    for node in _top_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            module.defined.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                module.defined.update(_bound_names(target))
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                module.exports = _literal_names(node.value)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            module.defined.update(_bound_names(node.target))
            if isinstance(node, ast.AnnAssign) and _bound_names(node.target) == ["__all__"] and node.value:
                module.exports = _literal_names(node.value)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                module.imported.add(alias.asname or alias.name.split(".")[0])
                if alias.asname and alias.asname != alias.name.rsplit(".", 1)[-1]:
                    module.defined.add(alias.asname)
    return module


def _literal_names(value: ast.expr) -> list[str] | None:
    if isinstance(value, ast.List | ast.Tuple) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts):
        return [e.value for e in value.elts]  # type: ignore[attr-defined]
    return None


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports_between(modules: dict[str, Module]) -> dict[str, set[tuple[str, str]]]:
    """For each module: (name, importer) for every `from <module> import name` in another module."""
    wanted: dict[str, set[tuple[str, str]]] = {name: set() for name in modules}
    for importer in modules.values():
        for node in ast.walk(importer.tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(importer, node)
                if source in modules and source != importer.name:
                    for alias in node.names:
                        wanted[source].add((alias.name, importer.name))
    return wanted


MODULES = _modules()
WANTED = _imports_between(MODULES)


def test_the_modules_are_found() -> None:
    # The walk itself: a broken mapping would make every test below pass on nothing.
    assert {"smoltbot.core.ids", "smoltbot.gateway.capture", "smoltbot.api.app", "smoltbot.cli.main",
            "smoltbot.observer.server", "smoltbot.registry.agents"} <= set(MODULES)
    assert ("validate_agent_id", "smoltbot.registry.cards") in WANTED["smoltbot.registry.agents"] or \
        any(importer.startswith("smoltbot.") for _, importer in WANTED["smoltbot.core.ids"])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_module_declares_a_literal_all(name: str) -> None:
    module = MODULES[name]
    assert module.exports is not None, f"{module.path.relative_to(ROOT)}: declare __all__ (a literal list)"
    assert len(set(module.exports)) == len(module.exports), f"{name}: __all__ names something twice"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_all_names_only_what_the_module_defines(name: str) -> None:
    module = MODULES[name]
    bound = module.defined | (module.imported if module.is_package else set())
    strangers = sorted(set(module.exports or ()) - bound)
    assert not strangers, (f"{name}.__all__ names what it does not define: {strangers}"
                           + ("" if module.is_package else " (import it from where it is defined)"))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_all_names_everything_other_modules_import(name: str) -> None:
    module = MODULES[name]
    exports = set(module.exports or ())
    missing = sorted({(imported, importer) for imported, importer in WANTED[name]
                      if not imported.startswith("_") and imported in module.defined - exports})
    assert not missing, f"{name}.__all__ leaves out names other modules import: {missing}"
