"""The public API bounds what a request can make it hold: bodies over SMOLTBOT_API_MAX_REQUEST_BYTES
are refused with 413 in the one error shape, declared or chunked, before they are read whole."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from smoltbot.api.app import create_app, start_api
from smoltbot.core.settings import Settings

LIMIT = 64 * 1024
CHUNK = 8 * 1024
AGENT = "smolt-0123abcd"


def _assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert (error["code"], error["reason"]) == (413, "BODY_TOO_LARGE")
    assert f"{LIMIT} bytes" in error["message"] and "SMOLTBOT_API_MAX_REQUEST_BYTES" in error["message"]
    assert response.headers["x-request-id"]


@pytest.fixture
async def api_app(settings_factory: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    # No backend call is made for a refused body, so nothing needs to listen behind the app.
    app = create_app(settings_factory(api_max_request_bytes=LIMIT))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://api.test") as client:
        yield client


@pytest.mark.parametrize(("path", "reads_body"), [
    (f"/v1/agents/{AGENT}/card", True), (f"/v1/agents/{AGENT}/claim", True),
    ("/v1/agents/resolve", False), ("/v1/no-such-route", False), ("/agents/x", False)])
async def test_a_chunked_body_over_the_limit_is_413_before_it_is_read_whole(
        api_app: httpx.AsyncClient, path: str, reads_body: bool) -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(100 * 1024 * 1024 // CHUNK):  # 100 MiB, were it all read
            pulled += CHUNK
            yield b"[" * CHUNK

    headers = {"x-api-key": "sk-ant-api03-limit", "content-type": "application/json"}
    response = await api_app.request("PUT" if path.endswith("/card") else "POST", path, content=endless(),
                                     headers=headers)

    if reads_body:
        assert 0 < pulled <= LIMIT + CHUNK
        _assert_too_large(response)
        assert response.headers["connection"] == "close"
    else:  # routes that read no body never pull it, and answer as they would
        assert pulled == 0 and response.status_code != 413


async def test_a_body_just_under_the_limit_reaches_the_route(api_app: httpx.AsyncClient) -> None:
    body = json.dumps({"pad": "x" * (LIMIT - 20)}).encode()
    assert len(body) <= LIMIT
    response = await api_app.put(f"/v1/agents/{AGENT}/card", content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 401  # past the limit and the parser: it lacks the credential


async def test_a_declared_content_length_over_the_limit_is_answered_without_reading_the_body(
        settings_factory: Callable[..., Settings]) -> None:
    running = await start_api(settings_factory(api_max_request_bytes=LIMIT))
    try:
        reader, writer = await asyncio.open_connection(running.host, running.port)
        try:
            # Ten gigabytes announced, none sent: the answer must come anyway.
            writer.write(f"PUT /v1/agents/{AGENT}/card HTTP/1.1\r\nHost: api.test\r\n"
                         "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n".encode())
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), timeout=10)  # the server closes after the 413
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        await running.stop()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), raw[:300]
    error = json.loads(body)["error"]
    assert (error["code"], error["reason"]) == (413, "BODY_TOO_LARGE")
