"""The Gemini stand-in, driven by the official `google-genai` SDK: the SDK parses what the stand-in meant."""

from __future__ import annotations

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests.support.gemini_standin import GeminiStandin

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


@pytest.fixture
async def standin():
    async with GeminiStandin(accepted_keys={"g-good"}) as server:
        yield server


@pytest.fixture
async def http():
    # Our own httpx client: with aiohttp installed google-genai would subclass aiohttp.ClientSession,
    # which aiohttp deprecates (a warning, an error under our filters).
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def make_client(base_url: str, http: httpx.AsyncClient, key: str = "g-good") -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(
            base_url=base_url, httpx_async_client=http, retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )


@pytest.fixture
def client(standin, http):
    return make_client(standin.base_url, http)


def config(scenario: str, **fields: object) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        http_options=types.HttpOptions(headers={"x-standin-scenario": scenario}), **fields
    )


async def test_generate_and_stream_give_the_same_text_and_usage(client, standin) -> None:
    plain = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hello")
    chunks = [
        c
        async for c in await client.aio.models.generate_content_stream(
            model="gemini-2.5-flash", contents="hello"
        )
    ]
    assert plain.text == "".join(c.text or "" for c in chunks)
    assert plain.text.startswith("Hello! This is the Gemini stand-in answering request ")
    assert plain.usage_metadata == chunks[-1].usage_metadata and plain.response_id == chunks[-1].response_id
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP and len(chunks) == 4
    streamed = standin.requests[-1]
    assert streamed.path.endswith(":streamGenerateContent") and "alt=sse" in streamed.query_string
    assert streamed.credential == "g-good" and streamed.headers["x-goog-api-key"] == "g-good"


async def test_thinking_gives_thought_parts_signature_and_thought_tokens(client) -> None:
    cfg = config("thinking", thinking_config=types.ThinkingConfig(include_thoughts=True))
    chunks = [
        c
        async for c in await client.aio.models.generate_content_stream(
            model="gemini-2.5-pro", contents="think", config=cfg
        )
    ]
    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    assert "".join(p.text for p in parts if p.thought).startswith("**Reading the request**")
    assert [p.text for p in parts if p.thought_signature] == [""]  # the signature closes the turn
    assert chunks[-1].usage_metadata.thoughts_token_count > 0
    plain = await client.aio.models.generate_content(model="gemini-2.5-pro", contents="think", config=cfg)
    assert plain.candidates[0].content.parts[-1].thought_signature == parts[-1].thought_signature
    hidden = await client.aio.models.generate_content(
        model="gemini-2.5-pro", contents="think", config=config("thinking")
    )
    assert not any(p.thought for p in hidden.candidates[0].content.parts)


async def test_function_calls_with_thinking(client) -> None:
    cfg = config(
        "thinking_function_call",
        tools=[WEATHER],
        thinking_config=types.ThinkingConfig(include_thoughts=True),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    reply = await client.aio.models.generate_content(
        model="gemini-2.5-flash", contents="weather?", config=cfg
    )
    assert reply.function_calls[0].name == "get_weather" and reply.function_calls[0].args == {
        "city": "example",
        "days": 42,
    }
    call_part = next(p for p in reply.candidates[0].content.parts if p.function_call)
    assert call_part.thought_signature


async def test_cached_content_and_max_tokens(client) -> None:
    reply = await client.aio.models.generate_content(
        model="gemini-2.5-flash",
        contents="x",
        config=config("max_tokens", cached_content="cachedContents/abc"),
    )
    assert reply.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert reply.usage_metadata.cached_content_token_count > 0


async def test_models_are_listed_and_paged(client) -> None:
    names = [m.name async for m in await client.aio.models.list(config={"page_size": 2})]
    assert names[0] == "models/gemini-3-pro-preview" and len(names) == 4
    assert (await client.aio.models.get(model="gemini-2.5-flash")).input_token_limit == 1_048_576


async def test_credential_by_query_and_googles_refusals(standin, http) -> None:
    by_query = await http.get(standin.base_url + "/v1beta/models", params={"key": "g-good"})
    assert by_query.status_code == 200 and standin.requests[-1].credential == "g-good"
    missing = await http.get(standin.base_url + "/v1beta/models")
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    with pytest.raises(errors.ClientError) as refused:
        await make_client(standin.base_url, http, key="g-bad").aio.models.generate_content(
            model="gemini-2.5-flash", contents="x"
        )
    assert (
        refused.value.code == 400
        and refused.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    )


@pytest.mark.parametrize(
    ("name", "code", "status"),
    [
        ("error_401", 401, "UNAUTHENTICATED"),
        ("error_403", 403, "PERMISSION_DENIED"),
        ("error_429", 429, "RESOURCE_EXHAUSTED"),
        ("error_500", 500, "INTERNAL"),
        ("error_503", 503, "UNAVAILABLE"),
    ],
)
async def test_errors_in_googles_shape(client, name: str, code: int, status: str) -> None:
    with pytest.raises(errors.APIError) as failed:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="x", config=config(name))
    assert failed.value.code == code and failed.value.status == status
    if code == 429:
        assert failed.value.details["error"]["details"][0]["retryDelay"] == "1s"


async def test_mid_stream_error_reaches_the_sdk(client) -> None:
    seen = []
    with pytest.raises(errors.ServerError, match="INTERNAL"):
        async for chunk in await client.aio.models.generate_content_stream(
            model="gemini-2.5-flash", contents="x", config=config("mid_stream_error")
        ):
            seen.append(chunk.text)
    assert seen == ["Hello!", " This is the"]
