"""The official SDK cannot tell the gateway is there: same results as calling the upstream
directly, and the upstream sees the same bytes and credential."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from smoltbot.gateway import RunningGateway
from smoltbot.v1 import exchange_pb2
from tests.integration.gateway.helpers import CREDENTIAL, wait_for_spooled
from tests.support.anthropic_standin import AnthropicStandin

pytestmark = pytest.mark.timeout(60)

MODEL = "claude-opus-4-7"
MESSAGES = [{"role": "user", "content": "What is 27 * 453?"}]
TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]
#: Headers a proxy legitimately changes (connection management, the upstream's address).
CONNECTION_HEADERS = {"host", "connection", "keep-alive", "content-length", "transfer-encoding"}


def sdk(base_url: str, **kwargs: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base_url, max_retries=0, **{"api_key": CREDENTIAL, **kwargs})


def without_ids(value: Any) -> Any:
    """The stand-in mints fresh message/tool ids per call; everything else must match."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k not in ("id", "_request_id")}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


def end_to_end_headers(request: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in dict(request.headers).items() if k.lower() not in CONNECTION_HEADERS}


async def test_create_matches_a_direct_call_and_upstream_sees_the_same_bytes_and_credential(
        stack: RunningGateway, standin: AnthropicStandin) -> None:
    async with sdk(stack.base_url + "/anthropic") as through, sdk(standin.base_url) as direct:
        via_gateway = await through.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
        seen_via_gateway = standin.requests[-1]
        straight = await direct.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
        seen_direct = standin.requests[-1]
    assert without_ids(via_gateway.to_dict()) == without_ids(straight.to_dict())
    assert seen_via_gateway.body == seen_direct.body
    assert seen_via_gateway.credential == seen_direct.credential == CREDENTIAL
    assert seen_via_gateway.path == seen_direct.path == "/v1/messages"
    assert end_to_end_headers(seen_via_gateway) == end_to_end_headers(seen_direct)


async def test_x_api_key_credential_and_query_string_pass_unchanged(
        stack: RunningGateway, standin: AnthropicStandin) -> None:
    body = json.dumps({"model": MODEL, "max_tokens": 64, "messages": MESSAGES}, indent=1).encode()
    async with httpx.AsyncClient() as client:
        response = await client.post(
            stack.base_url + "/anthropic/v1/messages?beta=true",
            content=body, headers={"x-api-key": CREDENTIAL, "anthropic-version": "2023-06-01",
                                   "content-type": "application/json", "x-custom-thing": "kept"})
    assert response.status_code == 200
    seen = standin.requests[-1]
    assert seen.body == body
    assert seen.credential == CREDENTIAL
    assert seen.headers["x-api-key"] == CREDENTIAL
    assert seen.headers["x-custom-thing"] == "kept"
    assert seen.path == "/v1/messages" and seen.query_string == "beta=true"


@pytest.mark.parametrize("scenario",
                         ["text", "thinking", "tool_use", "thinking_tool_use", "redacted_thinking"])
async def test_streams_give_the_same_final_message_and_the_exchange_holds_it(
        scenario: str, stack: RunningGateway, standin: AnthropicStandin) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 2048, "messages": MESSAGES,
                              "extra_headers": {"x-standin-scenario": scenario}}
    if "tool" in scenario:
        kwargs["tools"] = TOOLS
    async with sdk(stack.base_url + "/anthropic") as through, sdk(standin.base_url) as direct:
        async with through.messages.stream(**kwargs) as stream:
            via_gateway = await stream.get_final_message()
        async with direct.messages.stream(**kwargs) as stream:
            straight = await stream.get_final_message()
    assert without_ids(via_gateway.to_dict(mode="json")) == without_ids(straight.to_dict(mode="json"))
    assert via_gateway.content, "the scenario produced content"


async def test_the_exchange_of_a_stream_holds_the_sdks_final_message(
        lone_gateway: RunningGateway, standin: AnthropicStandin, tmp_path: Path) -> None:
    scenario = {"x-standin-scenario": "thinking_tool_use"}
    async with sdk(lone_gateway.base_url + "/anthropic") as client, client.messages.stream(
            model=MODEL, max_tokens=2048, messages=MESSAGES, tools=TOOLS, extra_headers=scenario) as stream:
        final = await stream.get_final_message()
    [exchange] = await wait_for_spooled(lone_gateway, 1, tmp_path)
    assert exchange.response.streamed
    assert json.loads(exchange.response.body) == final.to_dict(mode="json")
    assert exchange.outcome == exchange_pb2.EXCHANGE_OUTCOME_COMPLETE
    assert exchange.response.event_count > len(final.content) * 2
    assert exchange.request.path == "/v1/messages"
    assert len(exchange.exchange_id) == 32 and int(exchange.exchange_id, 16) >= 0
    assert exchange.timings.started_at.ToNanoseconds() <= exchange.timings.first_byte_at.ToNanoseconds() \
        <= exchange.timings.ended_at.ToNanoseconds()
    names = {h.name.lower() for h in exchange.request.headers}
    assert "authorization" not in names and "x-api-key" not in names


async def test_count_tokens_and_models_list_match_direct_calls(
        stack: RunningGateway, standin: AnthropicStandin) -> None:
    async with sdk(stack.base_url + "/anthropic") as through, sdk(standin.base_url) as direct:
        tokens_via = await through.messages.count_tokens(model=MODEL, messages=MESSAGES)
        tokens_direct = await direct.messages.count_tokens(model=MODEL, messages=MESSAGES)
        models_via = [m.to_dict(mode="json") async for m in through.models.list()]
        models_direct = [m.to_dict(mode="json") async for m in direct.models.list()]
    assert tokens_via.to_dict() == tokens_direct.to_dict()
    assert models_via == models_direct and models_via


async def _identified_call(client: httpx.AsyncClient, url: str, headers: dict[str, Any]) -> httpx.Response:
    """A call whose reply names agent and session. A cold call waits for the Registry only for
    a short deadline (fail-open), and a loaded machine can miss it; the lookup goes on in the
    background, so a later call is answered from the cache."""
    for _ in range(50):
        reply = await client.post(url, json={"model": MODEL, "messages": MESSAGES}, headers=headers)
        assert reply.status_code == 200
        if "x-smoltbot-agent" in reply.headers and "x-smoltbot-session" in reply.headers:
            return reply
        await asyncio.sleep(0.1)
    raise AssertionError(f"no identity headers after 50 calls: {dict(reply.headers)}")


async def test_identity_headers_name_the_registered_agent_and_session(stack: RunningGateway) -> None:
    url = stack.base_url + "/anthropic/v1/messages/count_tokens"
    async with httpx.AsyncClient() as client:
        first = await _identified_call(client, url, {"x-api-key": CREDENTIAL})
        second = await client.post(url, json={"model": MODEL, "messages": MESSAGES},
                                   headers={"x-api-key": CREDENTIAL})
        named = await _identified_call(client, url, {"x-api-key": CREDENTIAL,
                                                     "x-claude-code-session-id": "cc-session-1"})
        other = await _identified_call(client, url, {"x-api-key": CREDENTIAL + "-other"})
    agent = first.headers["x-smoltbot-agent"]
    assert agent.startswith("smolt-")
    # A warm call asks nobody and names the same agent and session.
    assert second.headers["x-smoltbot-agent"] == agent == named.headers["x-smoltbot-agent"]
    assert first.headers["x-smoltbot-session"] == second.headers["x-smoltbot-session"]
    assert named.headers["x-smoltbot-session"] == "cc-session-1" != first.headers["x-smoltbot-session"]
    assert other.headers["x-smoltbot-agent"] != agent


async def test_unknown_paths_and_methods_are_proxied_too(stack: RunningGateway,
                                                         standin: AnthropicStandin) -> None:
    async with httpx.AsyncClient() as client:
        via = await client.get(stack.base_url + "/anthropic/v1/never/heard/of?x=1&y=%2F",
                               headers={"x-api-key": CREDENTIAL})
        direct = await client.get(standin.base_url + "/v1/never/heard/of?x=1&y=%2F",
                                  headers={"x-api-key": CREDENTIAL})
    assert via.status_code == direct.status_code == 404
    # Byte for byte but for the request id, which upstream mints per request.
    assert via.content.replace(via.headers["request-id"].encode(), b"") == \
        direct.content.replace(direct.headers["request-id"].encode(), b"")
    via_seen, direct_seen = standin.requests[-2:]
    assert via_seen.path == direct_seen.path and via_seen.query_string == direct_seen.query_string


@pytest.mark.parametrize("header", ["x-smoltbot-session", "x-claude-code-session-id", "x-session-affinity"])
async def test_a_session_the_client_names_is_the_session_of_its_calls(stack: RunningGateway,
                                                                      header: str) -> None:
    name = f"named-{header}"
    async with httpx.AsyncClient() as client:
        reply = await _identified_call(client, stack.base_url + "/anthropic/v1/messages/count_tokens",
                                       {"x-api-key": CREDENTIAL, header: name})
    assert reply.headers["x-smoltbot-session"] == name


@pytest.mark.parametrize("name", [b"caf\xe9-\xff\xfe-session", b"tab\tin\tname", b"s" * 300])
async def test_a_session_name_the_registry_cannot_take_still_names_one_session(
        stack: RunningGateway, name: bytes) -> None:
    """Non-UTF-8 bytes, control characters or a name over the Registry's 256 characters: the
    session is named by a digest of the bytes, the same for every call, instead of a lookup the
    Registry refuses (or protobuf cannot encode) on every call."""
    url = stack.base_url + "/anthropic/v1/messages/count_tokens"
    async with httpx.AsyncClient() as client:
        first = await _identified_call(client, url, {"x-api-key": CREDENTIAL, "x-smoltbot-session": name})
        second = await _identified_call(client, url, {"x-api-key": CREDENTIAL, "x-smoltbot-session": name})
    assert first.headers["x-smoltbot-session"] == second.headers["x-smoltbot-session"]
    assert first.headers["x-smoltbot-session"].startswith("sha256:")
