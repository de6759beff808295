"""The `__all__` of every module of the API and the CLI says what the module offers: each name in
it exists, and every public name another module (or a test) imports from it is in it. (Tests may
reach a private `_name`; that is not an export.)"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
_PACKAGES = ("smoltbot.api", "smoltbot.cli")
_IMPORTERS = ("api", "cli", "core", "gateway", "observer", "registry", "scripts", "tests", "bench")


def modules() -> list[str]:
    names = []
    for package in _PACKAGES:
        found = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(found.__path__, package + ".")]
    return sorted(names)


def _is_package(module: ModuleType) -> bool:
    return hasattr(module, "__path__")


@pytest.mark.parametrize("name", modules())
def test_all_lists_only_names_the_module_has(name: str) -> None:
    module = importlib.import_module(name)
    if _is_package(module) and not hasattr(module, "__all__"):
        return  # a namespace for its modules, exporting nothing itself
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    assert [item for item in exported if not hasattr(module, item)] == []


def imports_from_our_modules() -> dict[tuple[str, str], str]:
    """(module, name) -> a file that imports that name from that module of the API or the CLI."""
    found: dict[tuple[str, str], str] = {}
    for folder in _IMPORTERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(_PACKAGES):
                    for alias in node.names:
                        if alias.name.startswith("_"):
                            continue
                        found.setdefault((node.module, alias.name), str(path.relative_to(ROOT)))
    return found


def test_every_name_imported_from_a_module_is_in_its_all() -> None:
    missing = []
    for (module_name, name), where in imports_from_our_modules().items():
        module = importlib.import_module(module_name)
        if _is_package(module) and importlib.util.find_spec(f"{module_name}.{name}") is not None:
            continue  # `from smoltbot.api.routers import agents`: a module, not an export
        if name not in getattr(module, "__all__", ()):
            missing.append(f"{module_name}.{name} (imported by {where})")
    assert missing == []
