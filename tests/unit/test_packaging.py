"""The package as built and installed: every file ships, the build is warning-free, tools see the types.

`[tool.setuptools] package-dir` maps `smoltbot.core` to `core/` and so on, with every package listed
by hand; these tests catch a folder, a data file or a `py.typed` marker left out of that list, and a
development install that no longer matches the folders.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder_of(package: str, package_dir: dict[str, str]) -> Path:
    root = max((p for p in package_dir if package == p or package.startswith(p + ".")), key=len)
    rest = package[len(root):].strip(".")
    return ROOT / package_dir[root] / Path(*rest.split(".")) if rest else ROOT / package_dir[root]


def _source_files() -> dict[str, Path]:
    """Every file under the mapped folders, keyed by its path inside the built package."""
    files = {}
    for package, folder in _setuptools()["package-dir"].items():
        base = ROOT / folder
        for path in base.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                inside = Path(*package.split("."), path.relative_to(base))
                files[inside.as_posix()] = path
    return files


def test_every_python_folder_is_a_listed_package() -> None:
    setuptools = _setuptools()
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


def test_every_listed_package_is_code_with_an_init_or_data_it_declares() -> None:
    # A folder of templates or static files is a package to Python (and to setuptools, which warns
    # when it is not listed); it holds no code, and its files are package-data.
    setuptools = _setuptools()
    package_data = setuptools["package-data"]
    for package in setuptools["packages"]:
        folder = _folder_of(package, setuptools["package-dir"])
        if any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), f"{package}: {folder}/__init__.py is missing"
        else:
            assert package in package_data, f"{package} holds no Python: list its files in package-data"


def test_every_mapped_folder_is_marked_typed() -> None:
    setuptools = _setuptools()
    assert "py.typed" in setuptools["package-data"].get("*", []), "package-data must ship py.typed"
    folders = setuptools["package-dir"].values()
    unmarked = [folder for folder in folders if not (ROOT / folder / "py.typed").is_file()]
    assert not unmarked, f"add an empty py.typed (PEP 561) to: {unmarked}"


def test_the_build_is_free_of_setuptools_warnings_and_ships_every_file(tmp_path: Path) -> None:
    # The same configuration pip reads for `pip install`, with every warning made an error: a
    # deprecated field or an unlisted data folder fails here instead of scrolling past in up.sh.
    build = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import setuptools; setuptools.setup()",
         "--quiet", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert build.returncode == 0, build.stderr
    built = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()}
    missing = sorted(set(_source_files()) - built)
    assert not missing, f"the wheel would leave out (list them in packages / package-data): {missing}"


def test_the_development_install_is_a_link_tree_of_every_file() -> None:
    # scripts/bootstrap.sh installs in setuptools' strict editable mode, so static tools find
    # smoltbot.* as real files. A link tree holds only the files that existed at install time.
    spec = importlib.util.find_spec("smoltbot.core")
    assert spec is not None and spec.origin is not None
    installed = Path(spec.origin).parents[1]
    assert installed.name == "smoltbot" and installed.parent.name.startswith("__editable__."), (
        f"smoltbot is served from {installed}, not from the strict editable install: run scripts/bootstrap.sh"
    )
    missing = sorted(inside for inside in _source_files() if not (installed.parent / inside).exists())
    assert not missing, f"the installed link tree predates these files: run scripts/bootstrap.sh: {missing}"


def test_generated_contracts_import_under_the_smoltbot_namespace() -> None:
    from smoltbot.v1 import observer_service_pb2_grpc, registry_service_pb2_grpc

    assert hasattr(registry_service_pb2_grpc, "RegistryServiceStub")
    assert hasattr(observer_service_pb2_grpc, "ObserverServiceStub")
