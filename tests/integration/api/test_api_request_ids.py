"""One request id per API request, on the log lines written for it in the API and in the Registry
it calls (the real services over gRPC: the id crosses as `x-request-id` metadata). The
subprocess version, through `smoltbot serve` and its log format, is in
tests/integration/deploy/test_request_ids.py."""

from __future__ import annotations

import logging

import httpx
import pytest

from smoltbot.core.request_ids import RequestIdLogFilter
from tests.integration.api.helpers import auth, new_credential


def capture(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records of this test's call, through the filter `configure_logging` installs
    (caplog's handler is the test phase's own, so this runs inside the test)."""
    caplog.set_level(logging.INFO, logger="smoltbot")
    caplog.handler.addFilter(RequestIdLogFilter())
    return caplog.records


def _lines(records: list[logging.LogRecord], logger: str, text: str) -> list[logging.LogRecord]:
    return [record for record in records if record.name == logger and text in record.getMessage()]


async def test_the_callers_request_id_is_on_the_api_and_registry_lines_of_its_request(
        api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    records = capture(caplog)
    headers = {**auth(new_credential()), "x-request-id": "req-4711"}
    response = await api.post("/v1/agents/resolve", headers=headers)

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-4711"
    agent_id = response.json()["agent_id"]
    registry_lines = _lines(records, "smoltbot.registry.agents", f"new agent {agent_id}")
    api_lines = _lines(records, "smoltbot.api.routers.agents", f"agent {agent_id} created")
    assert registry_lines and api_lines
    assert {getattr(record, "request_id", None) for record in registry_lines + api_lines} == {"req-4711"}


async def test_each_request_gets_its_own_id_and_nothing_carries_over(
        api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    records = capture(caplog)
    first = await api.post("/v1/agents/resolve", headers=auth(new_credential()))
    # Not a usable id (too long, and a newline would forge a log line): the API makes its own.
    insane = {**auth(new_credential()), "x-request-id": "x" * 65}
    second = await api.post("/v1/agents/resolve", headers=insane)

    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert len(set(ids)) == 2 and "x" * 65 not in ids
    for response, request_id in zip((first, second), ids, strict=True):
        lines = _lines(records, "smoltbot.registry.agents", f"new agent {response.json()['agent_id']}")
        assert [getattr(record, "request_id", None) for record in lines] == [request_id]
    # A log line outside any request says so.
    logging.getLogger("smoltbot.test").warning("between requests")
    assert _lines(records, "smoltbot.test", "between requests")[0].request_id == "-"  # type: ignore[attr-defined]
