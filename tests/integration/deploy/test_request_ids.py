"""A request id travels end to end, as deployed: the API, the Registry and the Observer each run
as `smoltbot serve X` with the log format `configure_logging` sets up, and one API request's id
is on the API's and the Registry's log lines for that request, and on no other."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.deploy.processes import ServiceProcess, base_env, start_service, start_standin

pytestmark = pytest.mark.timeout(120)

CREDENTIAL = "sk-ant-api03-request-ids-0123456789abcdef"
REQUEST_ID = "req-end-to-end-42"


def _lines_with(process: ServiceProcess, text: str, timeout: float = 10.0) -> list[str]:
    """The log lines of `process` that contain `text` (logs are written as the services go)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in process.log_path.read_text(errors="replace").splitlines() if text in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_one_api_requests_id_is_on_its_lines_in_the_api_and_the_registry(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    env = base_env(SMOLTBOT_HOME=str(tmp_path / "home"), SMOLTBOT_LOG_LEVEL="INFO")
    processes: list[ServiceProcess] = []
    try:
        standin = start_standin(base_env(), logs)
        processes.append(standin)
        registry = start_service("registry", "registry", env, logs, "--listen", "127.0.0.1:0")
        processes.append(registry)
        registry.wait_listening()
        observer = start_service("observer", "observer",
                                 {**env, "SMOLTBOT_REGISTRY_ADDRESS": registry.address},
                                 logs, "--listen", "127.0.0.1:0")
        processes.append(observer)
        observer.wait_listening()
        api = start_service("api", "api", {**env, "SMOLTBOT_REGISTRY_ADDRESS": registry.address,
                                           "SMOLTBOT_OBSERVER_ADDRESS": observer.address,
                                           "SMOLTBOT_UPSTREAM_URL": standin.url}, logs, "--port", "0")
        processes.append(api)
        api.wait_listening()

        with httpx.Client(base_url=api.url, timeout=30.0) as http:
            resolved = http.post("/v1/agents/resolve",
                                 headers={"x-api-key": CREDENTIAL, "x-request-id": REQUEST_ID})
            assert resolved.status_code == 200, resolved.text
            assert resolved.headers["x-request-id"] == REQUEST_ID
            agent_id = resolved.json()["agent_id"]
            # Another request (the registry and the observer), without an id of its own: it gets one.
            other = http.get(f"/v1/agents/{agent_id}")
            assert other.status_code == 200, other.text
            assert other.headers["x-request-id"] != REQUEST_ID

        registry_lines = _lines_with(registry, f"new agent {agent_id}")
        api_lines = _lines_with(api, f"agent {agent_id} created by resolve")
        assert len(registry_lines) == len(api_lines) == 1, (registry.log(), api.log())
        for line in registry_lines + api_lines:
            assert re.search(rf" INFO \[{REQUEST_ID}\] smoltbot\.", line), line
        # Lines that belong to no request say so; the id is on the lines of its request only: those
        # above and the credential check the API made for it (a library's line, httpx's, carries it too).
        startup = _lines_with(registry, "registry listening on")
        assert startup and all(" [-] " in line for line in startup), startup
        of_the_request = ("new agent", "created by resolve", "GET " + standin.url + "/v1/models")
        for process in (registry, observer, api):
            tagged = _lines_with(process, REQUEST_ID, timeout=0)
            assert all(any(text in line for text in of_the_request) for line in tagged), tagged
        assert any(standin.url in line for line in _lines_with(api, REQUEST_ID, timeout=0))
    finally:
        for process in reversed(processes):
            process.stop(timeout=10)
