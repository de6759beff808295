"""Pinned npm packages the agent tests run (Codex CLI, the TypeScript `openai` SDK), installed on
demand and kept: each `name@version` in its own prefix under `.tools/agents/` (git-ignored), so
installing one never prunes another and a second run installs nothing.

A test that needs one calls `npm_package(name, version)`; without npm or the registry it fails
with the reason (skipped instead only outside CI, like the OpenClaw plugin suite).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
AGENT_TOOLS = ROOT / ".tools" / "agents"

__all__ = ["AGENT_TOOLS", "npm_package"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def npm_package(name: str, version: str, *, timeout: float = 480) -> Path:
    """The prefix directory holding `name@version` in its node_modules (installed if missing)."""
    prefix = AGENT_TOOLS / f"{name.replace('/', '+')}@{version}"
    manifest = prefix / "node_modules" / name / "package.json"

    def installed() -> bool:
        try:
            return bool(json.loads(manifest.read_text()).get("version") == version)
        except (OSError, ValueError):
            return False

    if installed():
        return prefix
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        _unavailable(f"node and npm are needed to install {name}@{version}")
    prefix.mkdir(parents=True, exist_ok=True)
    # Two test processes may want the same package at once: one installs, the other waits.
    with open(prefix / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return prefix
        result = subprocess.run(
            [str(npm), "install", "--no-audit", "--no-fund", "--save-exact", "--prefix", str(prefix),
             f"{name}@{version}"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if result.returncode != 0 or not installed():
            _unavailable(f"`npm install {name}@{version}` failed ({result.returncode}): "
                         f"{result.stderr[-2000:]}")
    return prefix
