"""Every error the API returns has the one shape, whatever produced it: a backend's gRPC status,
request validation, routing, auth, or a backend that is down."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from smoltbot.api.app import create_app
from smoltbot.api.schemas import ErrorResponse
from smoltbot.core.settings import Settings
from tests.integration.api.helpers import auth, new_credential
from tests.support.anthropic_standin import AnthropicStandin


def assert_error_shape(response: httpx.Response, code: int) -> dict[str, Any]:
    assert response.status_code == code, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    ErrorResponse.model_validate(body)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "status", "reason", "message", "field"}
    assert error["code"] == code
    assert error["status"].isupper() and error["reason"].isupper() and error["message"]
    assert "Traceback" not in response.text
    return error


async def test_every_error_has_the_one_shape(api: httpx.AsyncClient) -> None:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    await api.post(f"/v1/agents/{agent_id}/claim", headers=auth(credential))

    bad_cursor = assert_error_shape(await api.get("/v1/agents", params={"cursor": "not-a-token"}), 400)
    assert bad_cursor["field"] == "cursor" and bad_cursor["status"] == "INVALID_ARGUMENT"

    assert_error_shape(await api.put(f"/v1/agents/{agent_id}/card", json={}), 401)
    assert_error_shape(await api.post(f"/v1/agents/{agent_id}/claim", headers=auth(new_credential())), 403)
    assert assert_error_shape(await api.get("/v1/agents/smolt-ffffffff"), 404)["reason"] == "AGENT_NOT_FOUND"
    assert assert_error_shape(await api.get("/v1/no-such-thing"), 404)["reason"] == "ROUTE_NOT_FOUND"

    not_allowed = await api.delete(f"/v1/agents/{agent_id}/card")
    assert_error_shape(not_allowed, 405)
    assert set(not_allowed.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT"}
    assert (await api.get("/v1/agents/resolve")).headers["allow"] == "POST"

    assert assert_error_shape(await api.post(f"/v1/agents/{agent_id}/claim", headers=auth(credential)),
                              409)["reason"] == "AGENT_ALREADY_CLAIMED"

    limit = assert_error_shape(await api.get("/v1/agents", params={"limit": 0}), 422)
    assert limit["field"] == "limit" and "limit" in limit["message"]
    bad_id = assert_error_shape(await api.get("/v1/agents/robert'); DROP TABLE agents;--"), 422)
    assert bad_id["field"] == "agent_id"
    order = assert_error_shape(await api.get("/v1/traces", params={"order": "random()"}), 422)
    assert order["field"] == "order"
    body = assert_error_shape(
        await api.post(
            "/v1/sessions",
            content=b"{not json",
            headers={**auth(credential), "content-type": "application/json"},
        ),
        422,
    )
    assert body["field"]
    event = assert_error_shape(
        await api.post(
            "/v1/sessions",
            json={"agent_id": agent_id, "session_id": "s", "event": "paused"},
            headers=auth(credential),
        ),
        422,
    )
    assert event["field"] == "event"


def _dead_address() -> str:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
async def upstream() -> AsyncIterator[AnthropicStandin]:
    """Accepts any credential, so resolve goes on to the (dead) registry."""
    async with AnthropicStandin() as standin:
        yield standin


async def test_a_backend_that_is_down_gives_503_in_the_one_shape(settings_factory: Callable[..., Settings],
                                                                 upstream: AnthropicStandin) -> None:
    settings = settings_factory(upstream_url=upstream.base_url)
    app = create_app(settings, registry_address=_dead_address(), observer_address=_dead_address())
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://api.test") as api:
        for response in (
            await api.get("/v1/agents"),
            await api.get("/v1/agents/smolt-0123abcd"),
            await api.get("/v1/traces"),
            await api.post("/v1/agents/resolve", headers=auth(new_credential())),
        ):
            error = assert_error_shape(response, 503)
            assert error["status"] == "UNAVAILABLE" and error["reason"] == "BACKEND_UNAVAILABLE"
            assert "unavailable" in error["message"]
        health = await api.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "degraded", "registry": "unavailable", "observer": "unavailable"}
        page = await api.get("/agents/smolt-0123abcd", headers={"accept": "text/html"})
        assert page.status_code == 503 and "not answering" in page.text


@pytest.mark.parametrize("path", ["/agents/smolt-0123abcd", "/agents/smolt-0123abcd/traces/t-1"])
async def test_dashboard_errors_are_friendly_pages(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path, headers={"accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Nothing here" in response.text and "smolt-0123abcd" in response.text
