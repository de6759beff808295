"""The Anthropic stand-in, driven by the official SDK and by raw HTTP."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.support.anthropic_standin import AnthropicStandin

pytestmark = pytest.mark.timeout(30)

MODEL = "claude-haiku-4-5-20251001"  # not on the SDK's deprecation list (warnings are errors here)
KEY = "sk-ant-test-standin"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def standin() -> AsyncIterator[AnthropicStandin]:
    async with AnthropicStandin() as server:
        yield server


@pytest.fixture
async def client(standin: AnthropicStandin) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(base_url=standin.base_url, api_key=KEY, max_retries=0)
    yield sdk
    await sdk.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _params(scenario: str | None = None, text: str = "Hello there", **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
    }
    if scenario:
        params["extra_headers"] = {"x-standin-scenario": scenario}
    params.update(extra)
    return params


def _body(stream: bool = False, text: str = "Hello there", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def _headers(scenario: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", **extra}
    if scenario:
        headers["x-standin-scenario"] = scenario
    return headers


def _parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in raw.decode().replace("\r\n", "\n").split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def _raw_stream(http: aiohttp.ClientSession, standin: AnthropicStandin, scenario: str,
                      **body: Any) -> list[tuple[str, dict[str, Any]]]:
    async with http.post(f"{standin.base_url}/v1/messages", json=_body(stream=True, **body),
                         headers=_headers(scenario)) as response:
        assert response.status == 200
        return _parse_sse(await response.read())


async def _create_and_stream(client: anthropic.AsyncAnthropic, **params: Any) -> tuple[Any, Any]:
    created = await client.messages.create(**params)
    async with client.messages.stream(**params) as stream:
        final = await stream.get_final_message()
    return created, final


# --- SDK: streamed and non-streamed agree ----------------------------------------------------


@pytest.mark.parametrize("scenario", [
    "text", "thinking", "redacted_thinking", "tool_use", "thinking_tool_use", "interleaved", "tags",
    "server_tool", "refusal", "truncated_json", "no_message_stop", "padded", "crlf", "thinking+padded+crlf",
])
async def test_stream_accumulates_to_the_non_streamed_message(client: anthropic.AsyncAnthropic,
                                                              scenario: str) -> None:
    created, final = await _create_and_stream(client, **_params(scenario))
    assert final.model_dump() == created.model_dump()
    assert created.model == MODEL
    assert created.id.startswith("msg_01")
    assert created.usage.output_tokens > 1 and created.usage.input_tokens > 0


async def test_thinking_signature_arrives_last_before_the_block_stops(
        client: anthropic.AsyncAnthropic, standin: AnthropicStandin, http: aiohttp.ClientSession) -> None:
    events = await _raw_stream(http, standin, "thinking")
    block0 = [data for _, data in events if data.get("index") == 0]
    assert block0[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    kinds = [d["delta"]["type"] for d in block0 if d["type"] == "content_block_delta"]
    assert kinds.count("thinking_delta") >= 3 and kinds[-1] == "signature_delta"
    assert block0[-1]["type"] == "content_block_stop"
    assert block0[-2]["delta"]["type"] == "signature_delta"

    created, _ = await _create_and_stream(client, **_params("thinking"))
    thinking = created.content[0]
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature.startswith("sig_")
    assert created.usage.output_tokens_details.thinking_tokens > 0


async def test_redacted_thinking_is_whole_in_its_block_start(
        client: anthropic.AsyncAnthropic, standin: AnthropicStandin, http: aiohttp.ClientSession) -> None:
    events = await _raw_stream(http, standin, "redacted_thinking")
    (index, start), = [(d["index"], d["content_block"]) for name, d in events
                       if name == "content_block_start" and d["content_block"]["type"] == "redacted_thinking"]
    assert not [d for name, d in events if name == "content_block_delta" and d["index"] == index]
    assert ("content_block_stop", {"type": "content_block_stop", "index": index}) in events

    created, final = await _create_and_stream(client, **_params("redacted_thinking"))
    redacted = [b for b in final.content if b.type == "redacted_thinking"]
    assert len(redacted) == 1 and redacted[0].data == start["data"] == created.content[index].data


async def test_tool_use_input_is_built_from_the_first_tools_schema(client: anthropic.AsyncAnthropic) -> None:
    tools = [{"name": "lookup", "description": "Look something up", "input_schema": {
        "type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"},
                                         "exact": {"type": "boolean"}, "mode": {"enum": ["fast", "slow"]}}}}]
    created, final = await _create_and_stream(client, **_params("tool_use", tools=tools))
    assert final.model_dump() == created.model_dump()
    tool = final.content[-1]
    assert (tool.type, tool.name, final.stop_reason) == ("tool_use", "lookup", "tool_use")
    assert tool.input == {"query": "example", "limit": 42, "exact": True, "mode": "fast"}
    assert tool.id.startswith("toolu_01")

    _, final = await _create_and_stream(client, **_params("tool_use"))
    assert (final.content[-1].name, final.content[-1].input) == ("get_weather", {"location": "Paris"})


async def test_tool_input_streams_as_json_fragments_starting_empty(
        standin: AnthropicStandin, http: aiohttp.ClientSession) -> None:
    events = await _raw_stream(http, standin, "tool_use")
    fragments = [d["delta"]["partial_json"] for name, d in events
                 if name == "content_block_delta" and d["delta"]["type"] == "input_json_delta"]
    assert fragments[0] == "" and len(fragments) > 2
    assert json.loads("".join(fragments)) == {"location": "Paris"}


async def test_interleaved_thinking_alternates_with_tool_use(client: anthropic.AsyncAnthropic) -> None:
    _, final = await _create_and_stream(client, **_params("interleaved"))
    assert [b.type for b in final.content] == ["thinking", "tool_use", "thinking", "tool_use"]
    assert final.content[1].id != final.content[3].id
    assert final.content[0].signature != final.content[2].signature


async def test_truncated_tool_json_never_stops_its_block(
        client: anthropic.AsyncAnthropic, standin: AnthropicStandin, http: aiohttp.ClientSession) -> None:
    events = await _raw_stream(http, standin, "truncated_json")
    tool_index = next(d["index"] for name, d in events
                      if name == "content_block_start" and d["content_block"]["type"] == "tool_use")
    assert not [d for name, d in events if name == "content_block_stop" and d["index"] == tool_index]
    partial = "".join(d["delta"]["partial_json"] for name, d in events
                      if name == "content_block_delta" and d["index"] == tool_index)
    with pytest.raises(ValueError):
        json.loads(partial)
    final_delta = [d for name, d in events if name == "message_delta"][-1]
    assert final_delta["delta"]["stop_reason"] == "max_tokens"

    _, final = await _create_and_stream(client, **_params("truncated_json"))
    assert final.content[-1].input == {"location": "Paris"}  # the SDK's partial parse drops the cut key


async def test_tags_are_split_inside_the_tag_names(
    standin: AnthropicStandin, http: aiohttp.ClientSession
) -> None:
    events = await _raw_stream(http, standin, "tags")
    pieces = [d["delta"]["text"] for name, d in events if name == "content_block_delta"]
    assert "<thin" in pieces and any(p.startswith("king>") for p in pieces)
    assert "".join(pieces).startswith("<thinking>") and "</thinking>" in "".join(pieces)
    assert not any("<thinking>" in p for p in pieces)


async def test_server_tool_result_and_citations(
        client: anthropic.AsyncAnthropic, standin: AnthropicStandin, http: aiohttp.ClientSession) -> None:
    events = await _raw_stream(http, standin, "server_tool")
    assert any(
        name == "content_block_delta" and d["delta"]["type"] == "citations_delta" for name, d in events
    )
    _, final = await _create_and_stream(client, **_params("server_tool"))
    assert [b.type for b in final.content] == ["text", "server_tool_use", "web_search_tool_result", "text"]
    assert final.content[1].name == "web_search" and final.content[1].input["query"].startswith("stand-in")
    assert final.content[2].tool_use_id == final.content[1].id
    assert final.content[3].citations[0].type == "web_search_result_location"
    assert final.usage.server_tool_use.web_search_requests == 1


async def test_usage_only_message_delta_precedes_the_final_one(
        standin: AnthropicStandin, http: aiohttp.ClientSession) -> None:
    events = await _raw_stream(http, standin, "thinking")
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop" and "ping" in names
    first, last = [d for name, d in events if name == "message_delta"]
    assert first["delta"]["stop_reason"] is None and last["delta"]["stop_reason"] == "end_turn"
    assert 0 < first["usage"]["output_tokens"] < last["usage"]["output_tokens"]
    assert events[0][1]["message"]["usage"]["output_tokens"] == 1


async def test_late_usage_delta_makes_the_sdk_forget_the_stop_reason(
    client: anthropic.AsyncAnthropic,
) -> None:
    # The SDK assigns every message_delta's stop_reason, null included: a gateway that wants the
    # real stop reason must keep the last non-null one.
    created, final = await _create_and_stream(client, **_params("late_usage"))
    assert created.stop_reason == "end_turn" and final.stop_reason is None


async def test_refusal_carries_stop_details(client: anthropic.AsyncAnthropic) -> None:
    _, final = await _create_and_stream(client, **_params("refusal"))
    assert final.stop_reason == "refusal" and final.stop_details.category == "cyber"


async def test_messages_are_deterministic_per_request_body(client: anthropic.AsyncAnthropic) -> None:
    first = await client.messages.create(**_params("thinking_tool_use"))
    again = await client.messages.create(**_params("thinking_tool_use"))
    other = await client.messages.create(**_params("thinking_tool_use", text="Something else"))
    assert first.model_dump() == again.model_dump()
    assert first.id != other.id and first.content[0].signature != other.content[0].signature
    assert first.content[-1].id != other.content[-1].id


async def test_marker_in_last_user_message_selects_scenario(client: anthropic.AsyncAnthropic) -> None:
    created, final = await _create_and_stream(client, **_params(text="Think hard [[scenario:thinking]]"))
    assert [b.type for b in final.content] == ["thinking", "text"] == [b.type for b in created.content]


# --- SDK: errors and other endpoints -------------------------------------------------------


@pytest.mark.parametrize(("scenario", "exception", "status", "error_type"), [
    ("error_400", anthropic.BadRequestError, 400, "invalid_request_error"),
    ("error_401", anthropic.AuthenticationError, 401, "authentication_error"),
    ("error_403", anthropic.PermissionDeniedError, 403, "permission_error"),
    ("error_404", anthropic.NotFoundError, 404, "not_found_error"),
    ("error_413", anthropic.RequestTooLargeError, 413, "request_too_large"),
    ("error_429", anthropic.RateLimitError, 429, "rate_limit_error"),
    ("error_500", anthropic.InternalServerError, 500, "api_error"),
    ("error_529", anthropic.OverloadedError, 529, "overloaded_error"),
])
async def test_error_scenarios_raise_the_sdk_exception(client: anthropic.AsyncAnthropic, scenario: str,
                                                       exception: type[Exception], status: int,
                                                       error_type: str) -> None:
    with pytest.raises(exception) as raised:
        await client.messages.create(**_params(scenario))
    error = raised.value
    assert error.status_code == status and error.type == error_type
    assert error.request_id.startswith("req_")
    assert error.body == {"type": "error", "error": {"type": error_type, "message": error.api_message},
                          "request_id": error.request_id}
    if status == 429:
        assert error.response.headers["retry-after"] == "1"
        assert error.response.headers["x-should-retry"] == "true"
    with pytest.raises(exception):
        async with client.messages.stream(**_params(scenario)) as stream:
            await stream.get_final_message()


async def test_overloaded_is_an_internal_server_error(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.InternalServerError):
        await client.messages.create(**_params("error_529"))


async def test_mid_stream_error_after_200(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as raised:
        async with client.messages.stream(**_params("mid_stream_error")) as stream:
            await stream.get_final_message()
    assert raised.value.status_code == 200 and raised.value.type == "overloaded_error"
    assert not isinstance(raised.value, anthropic.InternalServerError)
    with pytest.raises(anthropic.OverloadedError):  # non-streamed, the same failure is a plain 529
        await client.messages.create(**_params("mid_stream_error"))


async def test_count_tokens_depends_on_body_length(client: anthropic.AsyncAnthropic) -> None:
    short = await client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    long = await client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "hi " * 400}]
    )
    again = await client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert 0 < short.input_tokens < long.input_tokens and short.input_tokens == again.input_tokens


async def test_models_list_and_retrieve(client: anthropic.AsyncAnthropic) -> None:
    page = await client.models.list(limit=1000)
    ids = [m.id for m in page.data]
    assert MODEL in ids and all("claude" in i for i in ids) and not page.has_more
    first_two = await client.models.list(limit=2)
    assert [m.id for m in first_two.data] == ids[:2] and first_two.has_more
    model = await client.models.retrieve(MODEL)
    assert (model.id, model.type) == (MODEL, "model")
    with pytest.raises(anthropic.NotFoundError):
        await client.models.retrieve("claude-nonexistent")


async def test_batch_create_returns_an_in_progress_batch(client: anthropic.AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[
        {"custom_id": "a", "params": {"model": MODEL, "max_tokens": 10,
                                      "messages": [{"role": "user", "content": "hi"}]}}])
    assert batch.id.startswith("msgbatch_") and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 1 and batch.expires_at > batch.created_at


async def test_requests_are_recorded_with_their_credential(client: anthropic.AsyncAnthropic,
                                                           standin: AnthropicStandin) -> None:
    await client.messages.create(**_params())
    recorded = standin.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/v1/messages")
    assert recorded.credential == KEY  # anthropic 2.13 sends the key as a bearer token
    assert recorded.headers["authorization"] == f"Bearer {KEY}" and "anthropic-version" in recorded.headers
    assert recorded.json()["model"] == MODEL


# --- raw HTTP ------------------------------------------------------------------------------


async def test_missing_credentials_are_rejected(
    standin: AnthropicStandin, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{standin.base_url}/v1/messages", json=_body()) as response:
        assert response.status == 401
        payload = await response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "authentication_error"
    assert payload["request_id"] == response.headers["request-id"]
    for headers in ({"x-api-key": "k1"}, {"Authorization": "Bearer t1"}):
        async with http.post(f"{standin.base_url}/v1/messages", json=_body(), headers=headers) as response:
            assert response.status == 200
    assert [r.credential for r in standin.requests] == [None, "k1", "t1"]


async def test_accepted_keys_refuse_every_other_key_on_every_endpoint(http: aiohttp.ClientSession) -> None:
    async with AnthropicStandin(accepted_keys={"sk-good"}) as standin:
        calls = [("POST", "/v1/messages", _body()), ("POST", "/v1/messages/count_tokens", _body()),
                 ("GET", "/v1/models?limit=1", None), ("GET", f"/v1/models/{MODEL}", None),
                 ("POST", "/v1/messages/batches", {"requests": []})]
        for method, path, body in calls:
            for headers in ({"x-api-key": "sk-bad"}, {"Authorization": "Bearer sk-bad"}):
                async with http.request(
                    method, standin.base_url + path, json=body, headers=headers
                ) as response:
                    assert response.status == 401, (method, path)
                    payload = await response.json()
                assert payload["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
                assert payload["request_id"] == response.headers["request-id"]
        for headers in ({"x-api-key": "sk-good"}, {"Authorization": "Bearer sk-good"}):
            async with http.get(f"{standin.base_url}/v1/models?limit=1", headers=headers) as response:
                assert response.status == 200
                assert len((await response.json())["data"]) == 1


async def test_path_prefix_and_beta_query_are_accepted(standin: AnthropicStandin,
                                                       http: aiohttp.ClientSession) -> None:
    url = f"{standin.base_url}/some/prefix/v1/messages?beta=true"
    async with http.post(url, json=_body(), headers=_headers()) as response:
        assert response.status == 200
        assert (await response.json())["type"] == "message"
    assert (standin.requests[-1].path, standin.requests[-1].query_string) == ("/some/prefix/v1/messages",
                                                                              "beta=true")


@pytest.mark.parametrize(("method", "path", "status", "error_type", "text"), [
    ("POST", "/v1/v1/messages", 404, "not_found_error", "must not include /v1"),
    ("POST", "/v2/messages", 404, "not_found_error", "Not Found"),
    ("GET", "/v1/nothing", 404, "not_found_error", "Not Found"),
    ("GET", "/v1/messages", 405, "invalid_request_error", "not allowed"),
])
async def test_unknown_routes_answer_in_error_shape(standin: AnthropicStandin, http: aiohttp.ClientSession,
                                                    method: str, path: str, status: int, error_type: str,
                                                    text: str) -> None:
    async with http.request(method, standin.base_url + path, json=_body(), headers=_headers()) as response:
        assert response.status == status
        payload = await response.json()
    assert payload["error"]["type"] == error_type and text in payload["error"]["message"]
    assert set(payload) == {"type", "error", "request_id"}


@pytest.mark.parametrize("missing", ["model", "max_tokens", "messages"])
async def test_missing_field_is_named(
    standin: AnthropicStandin, http: aiohttp.ClientSession, missing: str
) -> None:
    body = _body()
    del body[missing]
    async with http.post(f"{standin.base_url}/v1/messages", json=body, headers=_headers()) as response:
        assert response.status == 400
        payload = await response.json()
    assert payload["error"] == {"type": "invalid_request_error", "message": f"{missing}: Field required"}


async def test_invalid_json_and_unknown_scenario_are_bad_requests(standin: AnthropicStandin,
                                                                  http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{standin.base_url}/v1/messages", data=b"{not json", headers=_headers()
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    async with http.post(
        f"{standin.base_url}/v1/messages", json=_body(), headers=_headers("nope")
    ) as response:
        assert response.status == 400
        assert "nope" in (await response.json())["error"]["message"]


async def test_large_bodies_are_accepted_up_to_the_upstream_limit(standin: AnthropicStandin,
                                                                  http: aiohttp.ClientSession) -> None:
    big = io.BytesIO(json.dumps(_body(text="x" * 2_000_000)).encode())  # aiohttp's own limit is 1 MiB
    async with http.post(f"{standin.base_url}/v1/messages", data=big, headers=_headers()) as response:
        assert response.status == 200
    too_big = io.BytesIO(b" " * (33 * 1024 * 1024))
    async with http.post(f"{standin.base_url}/v1/messages", data=too_big, headers=_headers()) as response:
        assert response.status == 413
        assert (await response.json())["error"]["type"] == "request_too_large"


async def test_stream_headers_and_common_headers(
    standin: AnthropicStandin, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{standin.base_url}/v1/messages", json=_body(stream=True),
                         headers=_headers()) as response:
        await response.read()
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    for method, path in (("POST", "/v1/messages"), ("HEAD", "/api/hello"), ("GET", "/api/hello"),
                         ("GET", "/v1/models"), ("GET", "/nowhere")):
        async with http.request(method, standin.base_url + path, json=_body(), headers=_headers()) as other:
            await other.read()
        for headers in (response.headers, other.headers):
            assert headers["request-id"].startswith("req_")
            assert int(headers["anthropic-ratelimit-requests-limit"]) > 0
            assert headers["anthropic-ratelimit-tokens-reset"].endswith("Z")
        assert other.headers["request-id"] != response.headers["request-id"]
        assert other.status == (404 if path == "/nowhere" else 200)


async def test_crlf_scenario_ends_every_line_with_crlf(standin: AnthropicStandin,
                                                       http: aiohttp.ClientSession) -> None:
    async with http.post(f"{standin.base_url}/v1/messages", json=_body(stream=True),
                         headers=_headers("crlf")) as response:
        raw = await response.read()
    assert raw.count(b"\n") == raw.count(b"\r\n") > 0
    assert raw.endswith(b"\r\n\r\n") and b"event: message_stop\r\ndata: " in raw


async def test_padded_scenario_pads_json_with_spaces(standin: AnthropicStandin,
                                                     http: aiohttp.ClientSession) -> None:
    async with http.post(f"{standin.base_url}/v1/messages", json=_body(stream=True),
                         headers=_headers("padded")) as response:
        raw = await response.read()
    assert b'"index":0   ' in raw and b'{"type": "ping"}' in raw
    assert _parse_sse(raw)[-1] == ("message_stop", {"type": "message_stop"})


@pytest.mark.parametrize("stream", [True, False])
async def test_drop_cuts_the_connection_mid_body(standin: AnthropicStandin, http: aiohttp.ClientSession,
                                                 stream: bool) -> None:
    async with http.post(f"{standin.base_url}/v1/messages", json=_body(stream=stream),
                         headers=_headers("drop")) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_no_message_stop_ends_after_message_delta(standin: AnthropicStandin,
                                                        http: aiohttp.ClientSession) -> None:
    events = await _raw_stream(http, standin, "no_message_stop")
    assert events[-1][0] == "message_delta" and events[-1][1]["delta"]["stop_reason"] == "end_turn"


async def test_mid_stream_error_event_is_named_error(standin: AnthropicStandin,
                                                     http: aiohttp.ClientSession) -> None:
    events = await _raw_stream(http, standin, "mid_stream_error")
    assert [name for name, _ in events][:2] == ["message_start", "content_block_start"]
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "overloaded_error"


async def test_events_are_flushed_one_by_one_with_the_delay(standin: AnthropicStandin,
                                                            http: aiohttp.ClientSession) -> None:
    delay = 0.04
    arrivals: list[float] = []
    async with http.post(f"{standin.base_url}/v1/messages", json=_body(stream=True),
                         headers=_headers(**{"x-standin-delay-ms": str(int(delay * 1000))})) as response:
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                _, buffer = buffer.split(b"\n\n", 1)
                arrivals.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) >= 8
    assert min(gaps) > delay * 0.6, gaps


async def test_delay_marker_in_message_text(standin: AnthropicStandin, http: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    events = await _raw_stream(http, standin, "text", text="hi [[delay:20]]")
    assert time.monotonic() - started > 0.02 * (len(events) - 1) * 0.8


async def test_slow_waits_before_the_headers(standin: AnthropicStandin, http: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with http.post(f"{standin.base_url}/v1/messages", json=_body(stream=True),
                         headers=_headers("slow", **{"x-standin-delay-ms": "300"})) as response:
        headers_at = time.monotonic() - started
        raw = await response.read()
    body_at = time.monotonic() - started
    assert headers_at >= 0.28 and body_at - headers_at < 0.2
    assert _parse_sse(raw)[-1][0] == "message_stop"


async def test_client_disconnect_mid_stream_is_counted(standin: AnthropicStandin,
                                                       http: aiohttp.ClientSession) -> None:
    async with http.post(f"{standin.base_url}/v1/messages", json=_body(stream=True),
                         headers=_headers(**{"x-standin-delay-ms": "50"})) as response:
        await response.content.readuntil(b"\n\n")
        response.close()
    for _ in range(100):
        if standin.disconnects:
            break
        await asyncio.sleep(0.02)
    assert standin.disconnects == 1


async def test_hello_probe_needs_no_credentials(
    standin: AnthropicStandin, http: aiohttp.ClientSession
) -> None:
    async with http.head(f"{standin.base_url}/api/hello") as response:
        assert response.status == 200 and response.headers["request-id"].startswith("req_")


async def test_module_runs_standalone_until_sigterm(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.anthropic_standin", "--port", "0", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        assert line.startswith("LISTENING http://127.0.0.1:")
        base_url = line.split()[1]
        async with http.post(f"{base_url}/v1/messages", json=_body(), headers=_headers()) as response:
            assert (await response.json())["model"] == MODEL
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        rest, errors = await process.communicate()
        assert rest == b"" and errors == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
