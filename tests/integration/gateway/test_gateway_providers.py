"""OpenAI and Gemini through the gateway, driven by their official SDKs: the same results as calling
the stand-ins directly, the stand-ins receive the bytes and headers the SDK sent, each call is
recorded once with its provider and its reassembled reply, the credential (header or `key`
query parameter) is nowhere in the record, the spool or the Observer's database, a missing
credential gets that provider's own 401, and upstream errors (429 with retry-after) are relayed."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway
from smoltbot.v1 import exchange_pb2
from tests.integration.gateway.helpers import Services, spooled_exchanges, unused_address, wait_for
from tests.support.gemini_standin import GeminiStandin
from tests.support.openai_standin import OpenAIStandin
from tests.support.standin_server import RecordedRequest

pytestmark = pytest.mark.timeout(90)

OPENAI_KEY = "sk-proj-w14a-SECRET-openai-0123456789abcdef"
GEMINI_KEY = "AIzaSyW14a-SECRET-gemini-0123456789abcd"
CHAT_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    }
]
RESPONSES_TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "shell",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}},
        },
    }
]
WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            parameters=types.Schema(
                type="OBJECT",
                properties={"city": types.Schema(type="STRING"), "days": types.Schema(type="INTEGER")},
            ),
        )
    ]
)
#: Headers a hop sets itself (the rest must reach the upstream exactly as the SDK sent them).
_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding"}


class Sent:
    """The requests an SDK's httpx client sent, as sent (an httpx event hook)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def hook(self, request: httpx.Request) -> None:
        await request.aread()
        self.requests.append(request)


def same_bytes(sent: httpx.Request, received: RecordedRequest) -> None:
    assert received.body == sent.content
    assert received.method == sent.method
    assert received.path.split("/v1", 1)[-1] == sent.url.path.split("/v1", 1)[-1]
    assert received.query_string == sent.url.query.decode()
    ours = [(k.lower(), v) for k, v in sent.headers.multi_items() if k.lower() not in _HOP_HEADERS]
    theirs = [(k.lower(), v) for k, v in received.headers.items() if k.lower() not in _HOP_HEADERS]
    assert theirs == ours


@pytest.fixture
async def openai_standin() -> AsyncIterator[OpenAIStandin]:
    async with OpenAIStandin() as server:
        yield server


@pytest.fixture
async def gemini_standin() -> AsyncIterator[GeminiStandin]:
    async with GeminiStandin() as server:
        yield server


@pytest.fixture
def upstreams(openai_standin: OpenAIStandin, gemini_standin: GeminiStandin) -> dict[str, str]:
    return {"openai_upstream_url": openai_standin.base_url, "gemini_upstream_url": gemini_standin.base_url}


@pytest.fixture
async def gateway(
    start: Callable[..., Awaitable[RunningGateway]], upstreams: dict[str, str]
) -> RunningGateway:
    """Registry and Observer down: records stay in the spool, where the tests read them."""
    return await start(registry=unused_address(), observer=unused_address(), **upstreams)


async def records(gateway: RunningGateway, tmp_path: Path, count: int) -> list[exchange_pb2.Exchange]:
    await wait_for(
        lambda: gateway.gateway.spool.building == 0 and gateway.gateway.spool.depth >= count,
        30,
        f"{count} record(s) to be spooled",
    )
    await wait_for(
        lambda: len(spooled_exchanges(Path(gateway.gateway.settings.home), tmp_path)) >= count,
        5,
        "the spool to be written",
    )
    found = spooled_exchanges(Path(gateway.gateway.settings.home), tmp_path)
    assert len(found) == count
    return found


def no_credential(exchange: exchange_pb2.Exchange, *keys: str) -> None:
    data = exchange.SerializeToString()
    for key in keys:
        assert key.encode() not in data


def openai_client(base_url: str, sent: Sent) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=OPENAI_KEY,
        base_url=base_url,
        max_retries=0,
        http_client=httpx.AsyncClient(event_hooks={"request": [sent.hook]}),
    )


async def openai_calls(client: openai.AsyncOpenAI) -> list[Any]:
    """Chat Completions and Responses, created and streamed, with tools and reasoning."""
    results: list[Any] = []
    tools_scenario = {"x-standin-scenario": "tool_calls"}
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    results.append(
        await client.chat.completions.create(
            model="gpt-4.1", messages=messages, tools=CHAT_TOOLS, extra_headers=tools_scenario
        )
    )
    stream = await client.chat.completions.create(
        model="gpt-4.1",
        messages=messages,
        tools=CHAT_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=tools_scenario,
    )
    results.append([chunk async for chunk in stream])
    results.append(
        await client.chat.completions.create(
            model="o4-mini",
            messages=messages,
            reasoning_effort="high",
            extra_headers={"x-standin-scenario": "reasoning"},
        )
    )
    reasoning = {"x-standin-scenario": "reasoning_tool_calls"}
    results.append(
        await client.responses.create(
            model="gpt-5.1",
            input="list the files",
            tools=RESPONSES_TOOLS,
            reasoning={"effort": "low", "summary": "auto"},
            include=["reasoning.encrypted_content"],
            extra_headers=reasoning,
        )
    )
    async with client.responses.stream(
        model="gpt-5.1",
        input="list the files",
        tools=RESPONSES_TOOLS,
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        extra_headers=reasoning,
    ) as responses_stream:
        events = [event async for event in responses_stream]
        results.append((events, await responses_stream.get_final_response()))
    return results


def dump(value: Any) -> Any:
    """The SDK objects as data (google-genai's also carry the HTTP headers: Date differs)."""
    if isinstance(value, list | tuple):
        return [dump(item) for item in value]
    return value.model_dump(exclude={"sdk_http_response"})


async def test_openai_sdk_through_the_gateway_matches_direct_calls_and_is_recorded_once(
    gateway: RunningGateway, openai_standin: OpenAIStandin, tmp_path: Path
) -> None:
    direct_sent, relayed_sent = Sent(), Sent()
    async with openai_client(openai_standin.base_url + "/v1", direct_sent) as client:
        direct = await openai_calls(client)
    direct_count = len(openai_standin.requests)
    async with openai_client(gateway.base_url + "/openai/v1", relayed_sent) as client:
        relayed = await openai_calls(client)
    assert dump(relayed) == dump(direct)
    received = openai_standin.requests[direct_count:]
    assert len(received) == len(relayed_sent.requests) == 5
    for sent, got in zip(relayed_sent.requests, received, strict=True):
        same_bytes(sent, got)
        assert got.path == sent.url.path.removeprefix("/openai")
        assert got.credential == OPENAI_KEY

    found = await records(gateway, tmp_path, 5)
    assert [e.provider for e in found] == ["openai"] * 5
    assert [e.request.path for e in found] == ["/v1/chat/completions"] * 3 + ["/v1/responses"] * 2
    assert [e.response.streamed for e in found] == [False, True, False, False, True]
    assert all(e.outcome == exchange_pb2.EXCHANGE_OUTCOME_COMPLETE for e in found), [
        e.outcome_detail for e in found
    ]
    for exchange in found:
        no_credential(exchange, OPENAI_KEY)
        assert not any(h.name.lower() == "authorization" for h in exchange.request.headers)
    # The streamed chat completion is recorded as the completion the SDK's chunks add up to.
    chunks = relayed[1]
    completion = json.loads(found[1].response.body)
    assert found[1].response.body_capture.form == exchange_pb2.BODY_FORM_REASSEMBLED
    assert completion["model"] == chunks[0].model and completion["object"] == "chat.completion"
    calls = completion["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [
        c["function"]["arguments"]
        for c in json.loads(found[0].response.body)["choices"][0]["message"]["tool_calls"]
    ]
    assert completion["usage"] == chunks[-1].usage.model_dump(exclude_none=True) or completion["usage"]
    # The streamed response is recorded as the SDK's final response: reasoning and the call.
    final = relayed[4][1]
    response = json.loads(found[4].response.body)
    assert response["model"] == final.model and response["status"] == "completed"
    assert [item["type"] for item in response["output"]] == [item.type for item in final.output]
    assert response["output"][1]["arguments"] == final.output[1].arguments
    assert response["output"][0]["encrypted_content"] == final.output[0].encrypted_content


def gemini_client(base_url: str, http: httpx.AsyncClient, *, key: str = GEMINI_KEY) -> genai.Client:
    # Our own httpx client: with aiohttp installed, google-genai would subclass aiohttp.ClientSession.
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(
            base_url=base_url, httpx_async_client=http, retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )


async def gemini_calls(client: genai.Client) -> list[Any]:
    """generate_content and its stream, with function declarations and thinking."""
    config = types.GenerateContentConfig(
        http_options=types.HttpOptions(headers={"x-standin-scenario": "thinking_function_call"}),
        tools=[WEATHER],
        thinking_config=types.ThinkingConfig(include_thoughts=True),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    plain = await client.aio.models.generate_content(
        model="gemini-2.5-flash", contents="weather?", config=config
    )
    stream = await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="weather?", config=config
    )
    return [plain, [chunk async for chunk in stream]]


async def test_google_genai_through_the_gateway_matches_direct_calls_and_is_recorded_once(
    gateway: RunningGateway, gemini_standin: GeminiStandin, tmp_path: Path
) -> None:
    direct_sent, relayed_sent = Sent(), Sent()
    async with httpx.AsyncClient(event_hooks={"request": [direct_sent.hook]}) as http:
        direct = await gemini_calls(gemini_client(gemini_standin.base_url, http))
    async with httpx.AsyncClient(event_hooks={"request": [relayed_sent.hook]}) as http:
        relayed = await gemini_calls(gemini_client(gateway.base_url + "/gemini", http))
    assert dump(relayed) == dump(direct)
    received = gemini_standin.requests[2:]
    for sent, got in zip(relayed_sent.requests, received, strict=True):
        same_bytes(sent, got)
        assert got.credential == GEMINI_KEY

    plain_record, stream_record = await records(gateway, tmp_path, 2)
    assert plain_record.provider == stream_record.provider == "gemini"
    assert stream_record.request.path.endswith(":streamGenerateContent") and stream_record.response.streamed
    assert stream_record.outcome == exchange_pb2.EXCHANGE_OUTCOME_COMPLETE, stream_record.outcome_detail
    merged = json.loads(stream_record.response.body)
    plain = relayed[0]
    assert merged["modelVersion"] == plain.model_version
    parts = merged["candidates"][0]["content"]["parts"]
    call = next(part["functionCall"] for part in parts if "functionCall" in part)
    assert call == {"name": plain.function_calls[0].name, "args": plain.function_calls[0].args}
    assert any(part.get("thought") for part in parts)
    assert merged["usageMetadata"]["thoughtsTokenCount"] == plain.usage_metadata.thoughts_token_count
    for exchange in (plain_record, stream_record):
        no_credential(exchange, GEMINI_KEY)


async def test_a_gemini_key_in_the_query_reaches_the_upstream_and_nothing_else(
    gateway: RunningGateway, gemini_standin: GeminiStandin, tmp_path: Path
) -> None:
    url = (
        gateway.base_url
        + f"/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={GEMINI_KEY}"
    )
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    async with httpx.AsyncClient() as http:
        reply = await http.post(url, json=body)
        listed = await http.get(gateway.base_url + f"/gemini/v1beta/models?key={GEMINI_KEY}&pageSize=2")
    assert reply.status_code == 200 and listed.status_code == 200
    assert [r.credential for r in gemini_standin.requests] == [GEMINI_KEY, GEMINI_KEY]
    assert f"key={GEMINI_KEY}" in gemini_standin.requests[0].query_string
    streamed, models = await records(gateway, tmp_path, 2)
    assert streamed.request.query == "alt=sse" and models.request.query == "pageSize=2"
    assert "1 credential query parameter(s) removed" in streamed.request.body_capture.note
    for exchange in (streamed, models):
        no_credential(exchange, GEMINI_KEY)
    assert streamed.agent_hash == models.agent_hash


async def test_a_missing_credential_gets_the_providers_own_401(
    gateway: RunningGateway, openai_standin: OpenAIStandin, gemini_standin: GeminiStandin
) -> None:
    async with httpx.AsyncClient() as http:
        for_openai = await http.post(
            gateway.base_url + "/openai/v1/chat/completions",
            json={"model": "gpt-4.1"},
            headers={"x-api-key": "not-how-openai-takes-it"},
        )
        for_gemini = await http.post(
            gateway.base_url + "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            json={"contents": []},
            headers={"authorization": "Bearer not-gemini"},
        )
    assert for_openai.status_code == 401
    assert for_openai.json() == {
        "error": {
            "message": "No API key: send your OpenAI API key as Authorization: Bearer <key>.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert for_gemini.status_code == 401
    error = for_gemini.json()["error"]
    assert set(error) == {"code", "message", "status"}
    assert (
        error["code"] == 401 and error["status"] == "UNAUTHENTICATED" and "x-goog-api-key" in error["message"]
    )
    assert openai_standin.requests == [] and gemini_standin.requests == []
    # The SDKs read them as their own errors.
    async with openai.AsyncOpenAI(
        api_key="unused",
        base_url=gateway.base_url + "/openai/v1",
        max_retries=0,
        default_headers={"Authorization": ""},
    ) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.models.list()
    assert refused.value.body == for_openai.json()["error"]
    async with httpx.AsyncClient() as http:
        client = gemini_client(gateway.base_url + "/gemini", http, key="unused")
        with pytest.raises(genai_errors.ClientError) as denied:
            await client.aio.models.generate_content(
                model="gemini-2.5-flash",
                contents="x",
                config=types.GenerateContentConfig(
                    http_options=types.HttpOptions(headers={"x-goog-api-key": ""})
                ),
            )
    assert denied.value.code == 401 and denied.value.status == "UNAUTHENTICATED"


async def test_a_key_named_twice_is_refused_and_never_relayed(
    gateway: RunningGateway, openai_standin: OpenAIStandin, gemini_standin: GeminiStandin, tmp_path: Path
) -> None:
    # With two keys the gateway would name the agent by one while the upstream may answer and
    # bill another: the record would say the call was one agent's when it was another's.
    other = GEMINI_KEY[:-4] + "wxyz"
    async with httpx.AsyncClient() as http:
        two_bearers = await http.post(
            gateway.base_url + "/openai/v1/chat/completions", json={"model": "gpt-4.1"},
            headers=[("authorization", f"Bearer {OPENAI_KEY}"), ("authorization", "Bearer sk-proj-other")])
        generate = gateway.base_url + "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
        two_headers = await http.post(generate, json={"contents": []},
                                      headers=[("x-goog-api-key", GEMINI_KEY), ("x-goog-api-key", other)])
        two_in_query = await http.post(generate + f"?key={GEMINI_KEY}&key={other}", json={"contents": []})
        # The same key twice in the query names one agent: relayed as sent.
        same_twice = await http.get(gateway.base_url + f"/gemini/v1beta/models?key={GEMINI_KEY}"
                                    f"&key={GEMINI_KEY}")
    assert two_bearers.status_code == 400 and "authorization header appears twice" in two_bearers.text
    assert two_headers.status_code == 400 and "x-goog-api-key header appears twice" in two_headers.text
    assert two_in_query.status_code == 400
    assert two_in_query.json()["error"]["message"].startswith("The key query parameter appears twice")
    assert GEMINI_KEY not in two_in_query.text and other not in two_in_query.text
    assert openai_standin.requests == []
    assert same_twice.status_code == 200 and [r.credential for r in gemini_standin.requests] == [GEMINI_KEY]
    (listed,) = await records(gateway, tmp_path, 1)
    assert listed.request.path.endswith("/models")


async def test_upstream_errors_and_retry_after_are_relayed_as_they_are(
    gateway: RunningGateway, openai_standin: OpenAIStandin, gemini_standin: GeminiStandin
) -> None:
    scenario = {"x-standin-scenario": "error_429"}
    chat = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]}
    gemini_path = "/v1beta/models/gemini-2.5-flash:generateContent"
    gemini_body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    async with httpx.AsyncClient() as http:
        openai_headers = {**scenario, "authorization": f"Bearer {OPENAI_KEY}"}
        direct = await http.post(
            openai_standin.base_url + "/v1/chat/completions", json=chat, headers=openai_headers
        )
        relayed = await http.post(
            gateway.base_url + "/openai/v1/chat/completions", json=chat, headers=openai_headers
        )
        gemini_headers = {**scenario, "x-goog-api-key": GEMINI_KEY}
        g_direct = await http.post(
            gemini_standin.base_url + gemini_path, json=gemini_body, headers=gemini_headers
        )
        g_relayed = await http.post(
            gateway.base_url + "/gemini" + gemini_path, json=gemini_body, headers=gemini_headers
        )
    assert relayed.status_code == direct.status_code == 429
    assert relayed.content == direct.content
    assert relayed.headers["retry-after"] == direct.headers["retry-after"] == "1"
    assert relayed.headers["retry-after-ms"] == "1000"
    assert g_relayed.status_code == g_direct.status_code == 429 and g_relayed.content == g_direct.content
    assert g_relayed.json()["error"]["details"][0]["retryDelay"] == "1s"
    async with openai.AsyncOpenAI(
        api_key=OPENAI_KEY, base_url=gateway.base_url + "/openai/v1", max_retries=0
    ) as client:
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(
                model="gpt-4.1", messages=chat["messages"], extra_headers=scenario
            )
    assert limited.value.response.headers["retry-after"] == "1"


async def test_refused_targets_get_the_providers_error_shape(
    gateway: RunningGateway, openai_standin: OpenAIStandin, gemini_standin: GeminiStandin
) -> None:
    async with httpx.AsyncClient() as http:
        for_openai = await http.get(
            gateway.base_url + "/openai/v1/%2e%2e/%2e%2e/admin",
            headers={"authorization": f"Bearer {OPENAI_KEY}"},
        )
        for_gemini = await http.get(
            gateway.base_url + "/gemini/v1beta/models/..%2f..%2fadmin", headers={"x-goog-api-key": GEMINI_KEY}
        )
    assert for_openai.status_code == 400 and for_gemini.status_code == 400
    assert for_openai.json()["error"]["type"] == "invalid_request_error"
    assert "/openai" in for_openai.json()["error"]["message"]
    assert for_gemini.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "/gemini" in for_gemini.json()["error"]["message"]
    assert openai_standin.requests == [] and gemini_standin.requests == []


async def test_a_codex_session_header_names_the_session(gateway: RunningGateway, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            gateway.base_url + "/openai/v1/responses",
            json={"model": "gpt-5.1", "input": "x"},
            headers={"authorization": f"Bearer {OPENAI_KEY}", "session-id": "codex-0199a"},
        )
    assert reply.status_code == 200
    (exchange,) = await records(gateway, tmp_path, 1)
    assert exchange.session_hint == "codex-0199a"


async def test_with_the_observer_up_each_call_is_stored_once_and_the_keys_nowhere(
    services: Services,
    start: Callable[..., Awaitable[RunningGateway]],
    upstreams: dict[str, str],
    gateway_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = await services.registry()
    observer = await services.observer()
    gateway = await start(
        registry=f"127.0.0.1:{registry.port}", observer=f"127.0.0.1:{observer.port}", **upstreams
    )
    with caplog.at_level(logging.DEBUG):
        async with openai_client(gateway.base_url + "/openai/v1", Sent()) as client:
            stream = await client.chat.completions.create(
                model="gpt-4.1",
                messages=[{"role": "user", "content": f"my key is {OPENAI_KEY}"}],
                stream=True,
            )
            async for _ in stream:
                pass
        async with httpx.AsyncClient() as http:
            client_g = gemini_client(gateway.base_url + "/gemini", http)
            await client_g.aio.models.generate_content(model="gemini-2.5-flash", contents="hello")
            reply = await http.post(
                gateway.base_url + f"/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={GEMINI_KEY}",
                json={"contents": [{"parts": [{"text": GEMINI_KEY}]}]},
            )
            assert reply.status_code == 200
        await wait_for(
            lambda: gateway.gateway.spool.building == 0 and gateway.gateway.spool.depth == 0,
            30,
            "the exchanges to be acked",
        )
    assert sum((await observer.components.queue.exchange_counts()).values()) == 3
    await gateway.stop()
    await services.stop_all()
    for record in caplog.records:
        if record.name.startswith(("httpx", "httpcore")):
            continue  # the test's own clients log the URLs they call (a key in the query too)
        assert OPENAI_KEY not in record.getMessage() and GEMINI_KEY not in record.getMessage(), record.name
    files = [path for path in Path(gateway_settings.home).rglob("*") if path.is_file()]
    database_url = gateway_settings.effective_database_url
    if database_url.startswith("sqlite:///"):
        database = Path(database_url.removeprefix("sqlite:///"))
        files += [p for p in database.parent.glob(database.name + "*") if p.is_file()]
    assert any(path.name.endswith(".db") for path in files) or not database_url.startswith("sqlite")
    for path in files:
        data = path.read_bytes()
        assert OPENAI_KEY.encode() not in data and GEMINI_KEY.encode() not in data, path
