"""`POST /v1/agents/resolve` creates an agent only for a credential the upstream accepts: it asks
the upstream (the Anthropic stand-in) first, with one free `GET /v1/models?limit=1`."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.integration.api.helpers import Stack, auth, new_credential


async def _agent_ids(api: httpx.AsyncClient) -> list[str]:
    response = await api.get("/v1/agents", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [item["agent_id"] for item in response.json()["items"]]


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
async def test_resolve_asks_the_upstream_with_the_credential_as_given(api: httpx.AsyncClient, stack: Stack,
                                                                      header: str) -> None:
    assert stack.upstream is not None
    credential = new_credential()
    headers = auth(credential) if header == "x-api-key" else {"authorization": f"Bearer {credential}"}

    response = await api.post("/v1/agents/resolve", headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["created"] is True
    [check] = stack.upstream.requests
    assert (check.method, check.path, check.query_string) == ("GET", "/v1/models", "limit=1")
    assert check.credential == credential
    assert check.headers[header] == (credential if header == "x-api-key" else f"Bearer {credential}")
    assert check.headers["anthropic-version"] == "2023-06-01"
    assert check.body == b""


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
async def test_a_credential_the_upstream_rejects_creates_nothing_and_is_401(
        api: httpx.AsyncClient, stack: Stack, header: str, caplog: pytest.LogCaptureFixture) -> None:
    assert stack.upstream is not None
    good, bad = new_credential(), new_credential()
    stack.upstream.accepted_keys = {good}
    caplog.set_level(logging.DEBUG)
    headers = auth(bad) if header == "x-api-key" else {"authorization": f"Bearer {bad}"}

    refused = await api.post("/v1/agents/resolve", headers=headers)

    assert refused.status_code == 401, refused.text
    error = refused.json()["error"]
    assert (error["status"], error["reason"]) == ("UNAUTHENTICATED", "CREDENTIAL_REJECTED")
    assert "rejected this credential" in error["message"] and "HTTP 401" in error["message"]
    assert "authentication_error" in error["message"]
    assert "nothing was created" in error["message"]
    assert await _agent_ids(api) == []
    accepted = await api.post("/v1/agents/resolve", headers=auth(good))
    assert accepted.status_code == 200 and accepted.json()["created"] is True
    assert await _agent_ids(api) == [accepted.json()["agent_id"]]
    for secret in (good, bad):
        assert secret not in refused.text and secret not in caplog.text


async def test_an_unreachable_upstream_is_503_and_creates_nothing(api: httpx.AsyncClient, stack: Stack,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    assert stack.upstream is not None
    await stack.upstream.stop()
    caplog.set_level(logging.DEBUG)
    credential = new_credential()

    response = await api.post("/v1/agents/resolve", headers=auth(credential))

    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert (error["status"], error["reason"]) == ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE")
    assert "cannot check the credential" in error["message"]
    assert stack.settings.upstream_url in error["message"]
    assert await _agent_ids(api) == []
    assert credential not in response.text and credential not in caplog.text


async def test_a_missing_credential_is_refused_before_the_upstream_is_asked(api: httpx.AsyncClient,
                                                                            stack: Stack) -> None:
    assert stack.upstream is not None
    response = await api.post("/v1/agents/resolve")
    assert response.status_code == 401 and response.json()["error"]["reason"] == "CREDENTIAL_MISSING"
    assert stack.upstream.requests == []
