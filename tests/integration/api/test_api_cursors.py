"""Forged, corrupted or borrowed page tokens: 400 naming `cursor` on every REST list (and the
dashboard's), INVALID_ARGUMENT naming `page_token` on every gRPC list; never a 500, never a page
of another list."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_status import rpc_status

from smoltbot.core.errors import error_info_of
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.tls import TlsConfig
from smoltbot.v1 import (
    observer_service_pb2,
    observer_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
)
from tests.integration.api.helpers import Stack, auth, new_credential


def _token(payload: Any) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _forged(scope: str) -> dict[str, str]:
    """Tokens with the right scope and a poisoned key, plus plain garbage: each one a way a
    store, a driver or a database has turned bad input into a 500 somewhere."""
    key_after = {"t": "2026-01-01T00:00:00+00:00"}
    return {
        "garbage": "not-a-token",
        "not_json": _token(b"\xff\xfe{"),
        "deep_nesting": _token(b"[" * 1500),
        "huge_int": _token({"s": scope, "k": [2**80]}),
        "huge_int_pair": _token({"s": scope, "k": [key_after, 2**80]}),
        "int_over_int32": _token({"s": scope, "k": [2**40]}),
        "int_under_int64": _token({"s": scope, "k": [-(2**63)]}),
        "nul_in_string": _token({"s": scope, "k": [key_after, "a\u0000b"]}),
        "lone_surrogate": _token({"s": scope, "k": [key_after, "\ud800"]}),
        "long_string": _token({"s": scope, "k": [key_after, "x" * 1000]}),
        "time_overflows_utc": _token({"s": scope, "k": [{"t": "0001-01-01T00:00:00+14:00"}, "a"]}),
        "time_past_9999": _token({"s": scope, "k": [{"t": "9999-12-31T23:59:59-14:00"}, "a"]}),
        "float_key": _token({"s": scope, "k": [1e308, "a"]}),
        "nan": '{"s":' + json.dumps(scope) + ',"k":[NaN,"a"]}',
        "bool_key": _token({"s": scope, "k": [True, "a"]}),
        "null_scope": _token({"s": None, "k": [key_after, "a"]}),
        "scope_as_list": _token({"s": [scope], "k": [key_after, "a"]}),
    }


@pytest.fixture
async def agent_id(api: httpx.AsyncClient) -> str:
    ids = [(await api.post("/v1/agents/resolve", headers=auth(new_credential()))).json()["agent_id"]
           for _ in range(2)]
    return ids[0]


def _lists(agent_id: str) -> dict[str, str]:
    """REST list path -> the scope its store puts into tokens."""
    return {
        "/v1/agents": "agents",
        f"/v1/agents/{agent_id}/sessions": f"sessions:{agent_id}",
        f"/v1/agents/{agent_id}/cards": f"cards:{agent_id}",
        f"/v1/agents/{agent_id}/drift": f"drift_alerts:{agent_id}",
        f"/v1/agents/{agent_id}/traces": "traces",
        "/v1/traces": "traces",
    }


def _assert_bad_cursor(response: httpx.Response, what: str) -> None:
    assert response.status_code == 400, (what, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["field"] == "cursor", (what, error)
    assert error["message"].startswith("cursor"), (what, error)
    assert error["status"] == "INVALID_ARGUMENT"


async def test_forged_cursors_are_400_naming_cursor_on_every_list(api: httpx.AsyncClient,
                                                                  agent_id: str) -> None:
    for path, scope in _lists(agent_id).items():
        for name, token in _forged(scope).items():
            if len(token) > 2048 or not token.isascii() or not token.isprintable():
                continue  # the query parameter's own bounds refuse these with a 422 first
            _assert_bad_cursor(await api.get(path, params={"cursor": token, "limit": 1}), f"{path} {name}")


async def test_a_cursor_of_one_list_is_refused_by_every_other(api: httpx.AsyncClient, agent_id: str) -> None:
    page = (await api.get("/v1/agents", params={"limit": 1})).json()
    agents_cursor = page["next_cursor"]
    assert agents_cursor
    other_agent = (await api.post("/v1/agents/resolve", headers=auth(new_credential()))).json()["agent_id"]
    for path in _lists(agent_id):
        if path != "/v1/agents":
            _assert_bad_cursor(await api.get(path, params={"cursor": agents_cursor}), path)
    # The same list of another agent is another list too.
    for name in ("sessions", "cards", "drift"):
        scope = {"sessions": f"sessions:{agent_id}", "cards": f"cards:{agent_id}",
                 "drift": f"drift_alerts:{agent_id}"}[name]
        types_of_key = [3] if name == "cards" else [{"t": "2026-01-01T00:00:00+00:00"}, "x"]
        borrowed = _token({"s": scope, "k": types_of_key})
        own = await api.get(f"/v1/agents/{agent_id}/{name}", params={"cursor": borrowed})
        assert own.status_code == 200, own.text
        other = await api.get(f"/v1/agents/{other_agent}/{name}", params={"cursor": borrowed})
        _assert_bad_cursor(other, name)
    # A traces cursor is bound to its filters.
    traces_cursor = _token({"s": "traces:0", "k": [{"t": "2026-01-01T00:00:00+00:00"}, "x"]})
    filtered = await api.get("/v1/traces", params={"cursor": traces_cursor, "verified": "true"})
    _assert_bad_cursor(filtered, "traces")


async def test_the_dashboard_index_answers_a_forged_cursor_with_a_400_page(api: httpx.AsyncClient,
                                                                          agent_id: str) -> None:
    for name, token in _forged("agents").items():
        if len(token) > 2048 or not token.isascii() or not token.isprintable():
            continue
        response = await api.get("/", params={"cursor": token}, headers={"accept": "text/html"})
        assert response.status_code == 400, (name, response.status_code)
        assert response.headers["content-type"].startswith("text/html")
        assert "cursor" in response.text


@pytest.fixture
async def channels(stack: Stack) -> AsyncIterator[tuple[grpc.aio.Channel, grpc.aio.Channel]]:
    tls = TlsConfig.from_settings(stack.settings)
    registry, observer = open_channel(stack.registry_address, tls), open_channel(stack.observer_address, tls)
    try:
        yield registry, observer
    finally:
        await registry.close()
        await observer.close()


async def test_forged_page_tokens_are_invalid_argument_naming_page_token_on_every_grpc_list(
        channels: tuple[grpc.aio.Channel, grpc.aio.Channel], api: httpx.AsyncClient, agent_id: str) -> None:
    registry = registry_service_pb2_grpc.RegistryServiceStub(channels[0])
    observer = observer_service_pb2_grpc.ObserverServiceStub(channels[1])
    calls = {
        "agents": lambda token: registry.ListAgents(registry_service_pb2.ListAgentsRequest(page_token=token)),
        f"sessions:{agent_id}": lambda token: registry.ListSessions(
            registry_service_pb2.ListSessionsRequest(agent_id=agent_id, page_token=token)),
        f"cards:{agent_id}": lambda token: registry.ListCards(
            registry_service_pb2.ListCardsRequest(agent_id=agent_id, page_token=token)),
        f"drift_alerts:{agent_id}": lambda token: observer.ListDriftAlerts(
            observer_service_pb2.ListDriftAlertsRequest(agent_id=agent_id, page_token=token)),
        "traces": lambda token: observer.ListTraces(
            observer_service_pb2.ListTracesRequest(agent_id=agent_id, page_token=token)),
    }
    forged_tokens = {**_forged("agents"), "very_long": "A" * 100_000, "non_ascii": "é" * 10}
    for scope, call in calls.items():
        for name, token in {**_forged(scope), **forged_tokens}.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(token)
            error = caught.value
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (scope, name, error.details())
            info = error_info_of(error)
            assert info is not None and info.metadata["field"] == "page_token", (scope, name)
            assert rpc_status.from_call(error) is not None
