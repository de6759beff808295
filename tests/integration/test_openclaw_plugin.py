"""The OpenClaw plugin's own suite (plugin/, TypeScript), run from pytest so CI runs it too.

Installs the pinned npm dependencies when plugin/node_modules is missing or older than the
lockfile, then builds, type-checks against the `openclaw` package's published types, and runs
node's test runner (which starts the real Registry and API with this interpreter).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugin"

pytestmark = pytest.mark.timeout(600)


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI"):
            pytest.fail("npm is not installed; the OpenClaw plugin suite needs Node 20+ and npm")
        pytest.skip("npm is not installed")
    return npm


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The plugin's integration tests start smoltbot with the Python running these tests.
    env["SMOLTBOT_PYTHON"] = sys.executable
    env.setdefault("NO_COLOR", "1")
    return subprocess.run(
        [_npm(), *args], cwd=PLUGIN, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"`{' '.join(result.args[1:])}` exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-20000:]}\n--- stderr ---\n{result.stderr[-5000:]}"
    )


@pytest.fixture(scope="module")
def built_plugin() -> Path:
    installed = PLUGIN / "node_modules" / ".package-lock.json"
    lockfile = PLUGIN / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lockfile.stat().st_mtime:
        _assert_ok(_run("ci", "--no-audit", "--no-fund", timeout=480))
    _assert_ok(_run("run", "build", timeout=120))
    return PLUGIN


def test_plugin_type_checks_against_the_openclaw_sdk(built_plugin: Path) -> None:
    _assert_ok(_run("run", "typecheck", timeout=120))


def test_plugin_suite_passes(built_plugin: Path) -> None:
    result = _run("test", timeout=300)
    _assert_ok(result)
    # Node's runner ends with "# pass N" / "# fail N"; make sure it ran tests and skipped none.
    summary = {
        key: int(value)
        for key, _, value in (
            line[2:].partition(" ") for line in result.stdout.splitlines() if line.startswith("# ")
        )
        if key in {"tests", "pass", "fail", "skipped"} and value.isdigit()
    }
    assert summary.get("fail") == 0, summary
    assert summary.get("skipped") == 0, f"plugin tests were skipped: {summary}"
    assert summary.get("tests", 0) >= 30, summary
