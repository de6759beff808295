"""Schemathesis against the running API's /openapi.json (the API as a subprocess, on the real
registry and observer): every phase, examples, coverage, fuzzing and stateful, with positive
and negative data, and no answer may be a 5xx."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.harness import ROOT, Stack, new_credential, record_figures

ARTIFACTS = ROOT / "artifacts" / "reliability"
MAX_TIME_S = 40


@pytest.mark.timeout(MAX_TIME_S + 60)
def test_schemathesis_stateful_and_negative_phases_find_no_server_error(shared_stack: Stack) -> None:
    credential = new_credential("schemathesis")
    shared_stack.resolve_agent(credential)  # writes then find an agent of this credential
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report = ARTIFACTS / "schemathesis-junit.xml"
    argv = [
        str(Path(sys.executable).parent / "schemathesis"), "run", f"{shared_stack.api_url}/openapi.json",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--mode", "all",  # positive and negative data
        "--checks", "not_a_server_error",
        "-H", f"x-api-key: {credential}",
        "--max-examples", "15", "--seed", "7", "--workers", "1",
        "--generation-database", "none", "--request-timeout", "15",
        "--max-time", str(MAX_TIME_S), "--no-shrink",
        "--report", "junit", "--report-junit-path", str(report), "--no-color",
    ]
    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"}
    started = time.monotonic()
    result = subprocess.run(
        argv, check=False, env=env, capture_output=True, text=True, timeout=MAX_TIME_S + 45, cwd=ROOT
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    print(output)
    record_figures("api_schemathesis", seconds=round(elapsed, 1), exit_code=result.returncode,
                   summary=[line.strip() for line in output.splitlines()
                            if "passed" in line or "cases" in line.lower()][-4:])
