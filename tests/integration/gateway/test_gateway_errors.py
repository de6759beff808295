"""Errors reach the client exactly as the upstream sent them; the gateway's own errors use the
API's error shape; every call that reached upstream (or tried to) is captured with its outcome."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import anthropic
import httpx
import pytest

from smoltbot.gateway import RunningGateway
from smoltbot.v1 import exchange_pb2
from tests.integration.gateway.helpers import CREDENTIAL, unused_address, wait_for, wait_for_spooled
from tests.support.anthropic_standin import AnthropicStandin

pytestmark = pytest.mark.timeout(60)

MODEL = "claude-opus-4-7"
MESSAGES = [{"role": "user", "content": "hello"}]


def client(gateway: RunningGateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.base_url + "/anthropic", api_key=CREDENTIAL,
                                    max_retries=0)


def disconnects(standin: AnthropicStandin) -> int:
    value = standin.disconnects
    return value if isinstance(value, int) else len(value)


@pytest.mark.parametrize(("scenario", "status", "error_class"), [
    ("error_429", 429, anthropic.RateLimitError),
    ("error_529", 529, anthropic.OverloadedError),
    ("error_500", 500, anthropic.InternalServerError),
    ("error_400", 400, anthropic.BadRequestError),
])
async def test_upstream_errors_pass_through_unchanged(
        scenario: str, status: int, error_class: type[Exception], lone_gateway: RunningGateway,
        standin: AnthropicStandin, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        direct = await http.post(standin.base_url + "/v1/messages", headers={
            "x-api-key": CREDENTIAL, "x-standin-scenario": scenario}, json={"model": MODEL, "max_tokens": 5,
                                                                            "messages": MESSAGES})
        via = await http.post(lone_gateway.base_url + "/anthropic/v1/messages", headers={
            "x-api-key": CREDENTIAL, "x-standin-scenario": scenario}, json={"model": MODEL, "max_tokens": 5,
                                                                            "messages": MESSAGES})
    assert via.status_code == direct.status_code == status
    assert without_request_id(via.content) == without_request_id(direct.content)
    for header in ("retry-after", "x-should-retry", "content-type"):
        assert via.headers.get(header) == direct.headers.get(header)
    if status == 429:
        assert via.headers["retry-after"]

    async with client(lone_gateway) as sdk_client:
        with pytest.raises(error_class) as raised:
            await sdk_client.messages.create(model=MODEL, max_tokens=5, messages=MESSAGES,
                                             extra_headers={"x-standin-scenario": scenario})
    assert raised.value.status_code == status  # type: ignore[attr-defined]
    exchanges = await wait_for_spooled(lone_gateway, 2, tmp_path)
    assert all(e.outcome == exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR for e in exchanges)
    assert all(e.response.status == status for e in exchanges)


def without_request_id(body: bytes) -> object:
    data = json.loads(body)
    data.pop("request_id", None)
    return data


async def test_mid_stream_error_event_reaches_the_sdk_and_is_recorded(
        lone_gateway: RunningGateway, tmp_path: Path) -> None:
    async with client(lone_gateway) as sdk_client:
        with pytest.raises(anthropic.APIStatusError) as raised:
            async with sdk_client.messages.stream(
                    model=MODEL, max_tokens=100, messages=MESSAGES,
                    extra_headers={"x-standin-scenario": "mid_stream_error"}) as s:
                await s.get_final_message()
    assert "overloaded_error" in str(raised.value) or raised.value.type == "overloaded_error"  # type: ignore
    [exchange] = await wait_for_spooled(lone_gateway, 1, tmp_path)
    assert exchange.outcome == exchange_pb2.EXCHANGE_OUTCOME_MID_STREAM_ERROR
    assert json.loads(exchange.response.stream_error)["type"] == "error"
    assert exchange.response.status == 200


async def test_client_abort_mid_stream_cancels_upstream_and_is_recorded(
        lone_gateway: RunningGateway, standin: AnthropicStandin, tmp_path: Path) -> None:
    before = disconnects(standin)
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": MESSAGES}
    async with httpx.AsyncClient(timeout=10) as http, http.stream(
            "POST", lone_gateway.base_url + "/anthropic/v1/messages",
            headers={"x-api-key": CREDENTIAL, "x-standin-delay-ms": "200"}, json=body) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            assert chunk
            break
    await wait_for(lambda: disconnects(standin) > before, 10, "the stand-in to see the disconnect")
    [exchange] = await wait_for_spooled(lone_gateway, 1, tmp_path)
    assert exchange.outcome == exchange_pb2.EXCHANGE_OUTCOME_CLIENT_ABORT


async def test_upstream_drop_mid_stream_drops_the_client_connection(
        lone_gateway: RunningGateway, tmp_path: Path) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream(
                    "POST", lone_gateway.base_url + "/anthropic/v1/messages",
                    headers={"x-api-key": CREDENTIAL, "x-standin-scenario": "drop"},
                    json={"model": MODEL, "max_tokens": 100, "stream": True, "messages": MESSAGES},
            ) as response:
                async for _ in response.aiter_bytes():
                    pass
    [exchange] = await wait_for_spooled(lone_gateway, 1, tmp_path)
    assert exchange.outcome == exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_DROPPED


async def test_missing_credential_is_a_401_in_the_api_error_shape(lone_gateway: RunningGateway,
                                                                  standin: AnthropicStandin) -> None:
    seen = len(standin.requests)
    async with httpx.AsyncClient() as http:
        response = await http.post(lone_gateway.base_url + "/anthropic/v1/messages", json={"model": MODEL})
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert "x-api-key" in body["error"]["message"] and "Authorization: Bearer" in body["error"]["message"]
    assert len(standin.requests) == seen


async def test_oversized_body_is_a_413_request_too_large(start, standin: AnthropicStandin) -> None:
    gateway = await start(registry=unused_address(), observer=unused_address(), max_request_bytes=1000)
    seen = len(standin.requests)
    big = b'{"model": "' + b"x" * 2000 + b'"}'

    async def chunked() -> object:
        for start_at in range(0, len(big), 100):
            yield big[start_at:start_at + 100]

    async with httpx.AsyncClient() as http:
        sized = await http.post(gateway.base_url + "/anthropic/v1/messages", content=big,
                                headers={"x-api-key": CREDENTIAL})
        streamed = await http.post(gateway.base_url + "/anthropic/v1/messages", content=chunked(),
                                   headers={"x-api-key": CREDENTIAL})
    for response in (sized, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
    assert len(standin.requests) == seen


async def test_unreachable_upstream_is_a_502_api_error_and_still_recorded(start, tmp_path: Path) -> None:
    gateway = await start(registry=unused_address(), observer=unused_address(),
                          upstream_url="http://" + unused_address())
    async with httpx.AsyncClient() as http:
        response = await http.post(gateway.base_url + "/anthropic/v1/messages", json={"model": MODEL},
                                   headers={"x-api-key": CREDENTIAL})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "api_error"
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    assert exchange.outcome == exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE
    assert exchange.response.status == 0


async def test_streams_are_relayed_as_they_arrive(lone_gateway: RunningGateway) -> None:
    """With the stand-in pacing its events, each arrives on its own, long before the stream ends."""
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    async with httpx.AsyncClient(timeout=10) as http:
        started = loop.time()
        async with http.stream("POST", lone_gateway.base_url + "/anthropic/v1/messages", headers={
                "x-api-key": CREDENTIAL, "x-standin-delay-ms": "50"},
                json={"model": MODEL, "max_tokens": 100, "stream": True, "messages": MESSAGES}) as response:
            async for _ in response.aiter_raw():
                arrivals.append(loop.time() - started)
    assert len(arrivals) > 2
    assert arrivals[0] < (arrivals[-1] - arrivals[0]) / 2
