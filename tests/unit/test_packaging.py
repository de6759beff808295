"""The wheel must carry all of the code: every folder with Python in it is a listed package."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_python_folder_is_a_listed_package() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    package_dir = setuptools["package-dir"]
    expected = set()
    for package, folder in package_dir.items():
        base = ROOT / folder
        for init in base.rglob("*.py"):
            relative = init.parent.relative_to(base)
            if "__pycache__" in relative.parts:
                continue
            expected.add(".".join([package, *relative.parts]))
    missing = sorted(expected - listed)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_has_an_init() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    package_dir = setuptools["package-dir"]
    for package in setuptools["packages"]:
        root = max((p for p in package_dir if package == p or package.startswith(p + ".")), key=len)
        folder = ROOT / package_dir[root] / Path(*package[len(root):].strip(".").split(".")) \
            if package != root else ROOT / package_dir[root]
        assert (folder / "__init__.py").is_file(), f"{package}: {folder}/__init__.py is missing"


def test_generated_contracts_import_under_the_smoltbot_namespace() -> None:
    from smoltbot.v1 import observer_service_pb2_grpc, registry_service_pb2_grpc

    assert hasattr(registry_service_pb2_grpc, "RegistryServiceStub")
    assert hasattr(observer_service_pb2_grpc, "ObserverServiceStub")
