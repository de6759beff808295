"""A local stand-in for the OpenAI API (Chat Completions, Responses, models, embeddings).

Written from the wire format of api.openai.com as openai-python reads it: `Authorization:
Bearer` credentials, `x-request-id` and ratelimit headers, OpenAI's error body
(``{"error": {"message", "type", "param", "code"}}``), Chat Completions chunks as ``data:``
lines ending with ``data: [DONE]`` (tool calls by index with their arguments in fragments,
the usage chunk of ``stream_options.include_usage``, an ``obfuscation`` field on every chunk),
and the Responses event family (``event:`` + ``data:``, every event numbered by
``sequence_number``).

Scenarios, by ``x-standin-scenario: NAME`` or ``[[scenario:NAME]]`` in the last user message:
``text`` (default), ``tool_calls`` (one call per request tool, at most two, or get_weather;
custom tools get a custom call), ``reasoning`` (Responses: a reasoning item with two summary
parts, plus ``encrypted_content`` when ``include`` asks; Chat: reasoning tokens in usage),
``reasoning_tool_calls``, ``web_search`` (Responses: a ``web_search_call`` item, then text with a
url citation), ``refusal``, ``length`` (Chat: finish_reason length; Responses: incomplete),
``failed`` (Responses: ``response.failed``), ``mid_stream_error``, ``drop``, ``tiny_deltas``
(``x-standin-deltas: N`` one-letter deltas, default 100,000), ``error_400``, ``error_401``,
``error_403``, ``error_404``, ``error_429`` (with ``retry-after``), ``error_500``, ``error_503``.
``tool_then_text`` is ``tool_calls`` while the conversation ends in a user message and ``text``
once it ends in a tool's output (an agent's loop: ask for a tool, read its result, answer).
``x-standin-tool-args: JSON`` sets the first tool call's arguments (e.g. a shell command);
``x-standin-tool-name: NAME`` calls that request tool alone (an agent that declares many tools).

Ids, texts and usage are functions of the request body (without ``stream`` and
``stream_options``), so a streamed and a plain call of one request give the same object.

Run standalone with ``python -m tests.support.openai_standin [--host H] [--port P]``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .openai_responses_wire import responses_events, responses_object
from .standin_server import (
    Seed,
    StandinError,
    StandinServer,
    canonical,
    marker_options,
    schema_value,
    serve_forever,
)

__all__ = ["CONTENT_SCENARIOS", "ERROR_SCENARIOS", "MODELS", "OpenAIStandin"]

ERROR_SCENARIOS: dict[str, tuple[int, str, str | None, str]] = {
    "error_400": (
        400,
        "invalid_request_error",
        None,
        "Invalid value for 'temperature': must be between 0 and 2.",
    ),
    "error_401": (
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-stand***in. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    "error_403": (
        403,
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    "error_404": (
        404,
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    "error_429": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} in organization org-standin on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 1s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
    ),
    "error_500": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "error_503": (503, "server_error", None, "The engine is currently overloaded, please try again later."),
}
CONTENT_SCENARIOS = frozenset(
    {
        "text",
        "tool_calls",
        "reasoning",
        "reasoning_tool_calls",
        "web_search",
        "refusal",
        "length",
        "failed",
        "mid_stream_error",
        "drop",
        "tiny_deltas",
        "tool_then_text",
    }
)
TINY_DELTAS_DEFAULT = 100_000
MODELS = ["gpt-5.1", "gpt-5.1-codex", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini", "text-embedding-3-small"]
_CREATED = 1_767_225_600  # model list dates; replies use a time derived from the request
_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
    "username) if you're accessing the API from your browser and are prompted for a username and "
    "password. You can obtain an API key from https://platform.openai.com/account/api-keys."
)
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
    "JSON. If you have trouble figuring out how to fix this, please contact us through our help "
    "center at help.openai.com.)"
)


@dataclass(slots=True)
class Call:
    """A tool call the stand-in makes: function (JSON arguments) or custom (free-form input)."""

    kind: str
    name: str
    arguments: str


@dataclass(slots=True)
class Plan:
    """What one reply says, whichever API carries it."""

    scenario: str
    seed: Seed
    model: str
    text: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    summary: list[list[str]] = field(default_factory=list)
    reasoning_tokens: int = 0
    refusal: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


def last_user_text(payload: dict[str, Any]) -> str:
    """The last user message's text, in Chat (`messages`) or Responses (`input`) form."""
    items = payload.get("messages") or payload.get("input") or []
    if isinstance(items, str):
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _tools(payload: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, name, schema) of each client tool, in the Chat or the Responses form."""
    found = []
    for tool in payload.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        spec = tool.get(kind) if isinstance(tool.get(kind), dict) else tool  # Chat nests, Responses does not
        if kind in ("function", "custom") and isinstance(spec.get("name"), str):
            found.append((kind, spec["name"], spec.get("parameters") or {}))
    return found


def _ends_with_tool_output(payload: dict[str, Any]) -> bool:
    """Whether the conversation's last item is a tool's output (Chat `tool` message, Responses
    `*_call_output` item)."""
    items = payload.get("messages") or payload.get("input")
    if not isinstance(items, list) or not items or not isinstance(items[-1], dict):
        return False
    last = items[-1]
    return last.get("role") in ("tool", "function") or str(last.get("type", "")).endswith("_call_output")


def plan_reply(scenario: str, seed: Seed, payload: dict[str, Any], headers: Any, body_size: int) -> Plan:
    if scenario == "tool_then_text":
        scenario = "text" if _ends_with_tool_output(payload) else "tool_calls"
    model = str(payload.get("model") or "gpt-4.1")
    fp = seed.fingerprint
    plan = Plan(scenario, seed, model, input_tokens=max(1, body_size // 4))
    plan.text = ["Hello!", " This is the", " OpenAI stand-in", f" answering request {fp}."]
    if scenario in ("reasoning", "reasoning_tool_calls"):
        plan.summary = [
            ["**Working out the request**\n\n", "The user wants", f" an answer to {fp}."],
            ["**Answering**\n\n", "I will answer", " briefly."],
        ]
        plan.reasoning_tokens = 64 + seed.number("reasoning", 0, 64)
    if scenario in ("tool_calls", "reasoning_tool_calls"):
        tools = _tools(payload) or [
            ("function", "get_weather", {"properties": {"location": {"type": "string"}}})
        ]
        if only := headers.get("x-standin-tool-name"):
            tools = [tool for tool in tools if tool[1] == only]
            if not tools:
                raise StandinError(400, f"x-standin-tool-name: the request declares no tool {only!r}")
        override = headers.get("x-standin-tool-args")
        for n, (kind, name, schema) in enumerate(tools[:2]):
            if kind == "custom":
                arguments = f"print('stand-in {fp}')"
            elif n == 0 and override:
                arguments = override
            else:
                properties = (schema or {}).get("properties") or {}
                arguments = json.dumps(
                    {k: schema_value(v) for k, v in properties.items()} or {"location": "Paris"}
                )
            plan.calls.append(Call(kind, name, arguments))
        plan.text = []
    if scenario == "refusal":
        plan.text, plan.refusal = [], ["I'm sorry,", " I can't help", " with that."]
    if scenario == "tiny_deltas":
        count = int(headers.get("x-standin-deltas", TINY_DELTAS_DEFAULT))
        letters = ("abcdefghij" * (count // 10 + 1))[:count]
        plan.text = list(letters)
    if "prompt_cache_key" in payload:
        plan.cached_tokens = plan.input_tokens // 2
    plan.output_tokens = (
        sum(len(t) for t in plan.text) // 4
        + sum(len(c.arguments) for c in plan.calls) // 4
        + plan.reasoning_tokens
        + 1
    )
    return plan


def fragments(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def sse(name: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return (f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode()


# --- Chat Completions -----------------------------------------------------------------------


def _chat_usage(plan: Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_finish(plan: Plan) -> str:
    if plan.scenario == "length":
        return "length"
    return "tool_calls" if plan.calls else "stop"


def _chat_tool_call(plan: Plan, n: int, call: Call) -> dict[str, Any]:
    call_id = "call_" + plan.seed.token(f"call{n}")
    if call.kind == "custom":
        return {"id": call_id, "type": "custom", "custom": {"name": call.name, "input": call.arguments}}
    return {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def chat_completion(plan: Plan) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(plan.text) if plan.text else None,
        "refusal": "".join(plan.refusal) if plan.refusal else None,
        "annotations": [],
    }
    if plan.calls:
        message["tool_calls"] = [_chat_tool_call(plan, n, call) for n, call in enumerate(plan.calls)]
    return {
        "id": "chatcmpl-" + plan.seed.token("completion", 29),
        "object": "chat.completion",
        "created": _CREATED + plan.seed.number("created", 0, 10_000_000),
        "model": plan.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _chat_finish(plan)}],
        "usage": _chat_usage(plan),
        "service_tier": "default",
        "system_fingerprint": "fp_" + plan.seed.hex("fingerprint", 10),
    }


def chat_chunks(plan: Plan, include_usage: bool) -> list[bytes]:
    """The SSE writes of a streamed Chat Completion: one chunk per write, then [DONE]."""
    whole = chat_completion(plan)
    head = {
        key: whole[key] for key in ("id", "object", "created", "model", "service_tier", "system_fingerprint")
    }
    head["object"] = "chat.completion.chunk"
    counter = itertools.count()

    def chunk(
        delta: dict[str, Any] | None, finish: str | None = None, *, usage: Any = None, choices: bool = True
    ) -> bytes:
        data: dict[str, Any] = {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if choices
            else [],
        }
        if include_usage:
            data["usage"] = usage
        data["obfuscation"] = plan.seed.token(f"obf{next(counter)}", 8)
        return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"

    first: dict[str, Any] = {"role": "assistant", "content": "" if plan.text else None, "refusal": None}
    out = [chunk(first)]
    out += [chunk({"content": piece}) for piece in plan.text]
    out += [chunk({"refusal": piece}) for piece in plan.refusal]
    for n, call in enumerate(plan.calls):
        full = _chat_tool_call(plan, n, call)
        key = "custom" if call.kind == "custom" else "function"
        field_name = "input" if call.kind == "custom" else "arguments"
        opening = {
            "index": n,
            "id": full["id"],
            "type": full["type"],
            key: {"name": call.name, field_name: ""},
        }
        pieces = fragments(call.arguments)
        if n and out:  # the next call opens in the same chunk as the last fragment of the one before
            last = json.loads(out.pop()[6:])
            last["choices"][0]["delta"]["tool_calls"].append(opening)
            out.append(b"data: " + json.dumps(last, separators=(",", ":")).encode() + b"\n\n")
        else:
            out.append(chunk({"tool_calls": [opening]}))
        for piece in pieces:
            out.append(chunk({"tool_calls": [{"index": n, key: {field_name: piece}}]}))
    if plan.scenario == "mid_stream_error":
        error = {
            "error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        return [*out[:3], b"data: " + json.dumps(error).encode() + b"\n\n"]
    out.append(chunk({}, _chat_finish(plan)))
    if include_usage:
        out.append(chunk(None, usage=_chat_usage(plan), choices=False))
    out.append(b"data: [DONE]\n\n")
    return out


# --- the server -----------------------------------------------------------------------------


class OpenAIStandin(StandinServer):
    def __post_init__(self) -> None:
        super().__post_init__()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(8).hex()

    def credential(self, request: web.BaseRequest) -> str | None:
        value = request.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def base_headers(self) -> dict[str, str]:
        return {
            "x-request-id": f"req_{self._id_prefix}{next(self._ids):016x}",
            "openai-version": "2020-10-01",
            "openai-organization": "user-standin",
            "openai-processing-ms": "12",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-tokens": "0s",
        }

    def error_response(self, error: StandinError, headers: dict[str, str]) -> web.Response:
        body = {
            "error": {
                "message": error.message,
                "type": error.kind or "invalid_request_error",
                "param": None,
                "code": error.code,
            }
        }
        return self.json_response(body, headers, error.status, indent=True)

    async def dispatch(
        self, request: web.BaseRequest, body: bytes, credential: str | None, headers: dict[str, str]
    ) -> web.StreamResponse:
        path, method = request.path, request.method
        at = path.find("/v1/")
        rest = path[at + 3 :] if at >= 0 else path
        routes = {
            ("POST", "/chat/completions"): self._chat,
            ("POST", "/responses"): self._responses,
            ("GET", "/models"): self._models,
            ("POST", "/embeddings"): self._embeddings,
        }
        handler = routes.get((method, rest))
        if handler is None and method == "GET" and rest.startswith("/models/"):
            handler = self._model
        if handler is None:
            raise StandinError(404, f"Invalid URL ({method} {path})")
        if credential is None:
            raise StandinError(401, _MISSING_KEY)
        if self.accepted_keys is not None and credential not in self.accepted_keys:
            shown = (
                credential[:8] + "*" * 4 + credential[-4:] if len(credential) > 12 else "*" * len(credential)
            )
            raise StandinError(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return await handler(request, body, headers)

    def _payload(self, body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except ValueError:
            raise StandinError(400, _BAD_JSON) from None
        if not isinstance(payload, dict):
            raise StandinError(400, _BAD_JSON)
        if not isinstance(payload.get("model"), str):
            raise StandinError(400, "you must provide a model parameter")
        return payload

    def _scenario(self, request: web.BaseRequest, payload: dict[str, Any]) -> tuple[str, int]:
        names, delay = marker_options(request.headers, last_user_text(payload))
        scenario = "text"
        for name in names:
            if name not in CONTENT_SCENARIOS and name not in ERROR_SCENARIOS:
                known = ", ".join(sorted(CONTENT_SCENARIOS | ERROR_SCENARIOS.keys()))
                raise StandinError(400, f"unknown stand-in scenario {name!r}; known: {known}")
            scenario = name
        if scenario in ERROR_SCENARIOS:
            status, kind, code, message = ERROR_SCENARIOS[scenario]
            extra = {"retry-after": "1", "retry-after-ms": "1000"} if status == 429 else {}
            raise StandinError(status, message.format(model=payload["model"]), kind, extra, code)
        return scenario, delay

    async def _chat(
        self, request: web.BaseRequest, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        payload = self._payload(body)
        if not isinstance(payload.get("messages"), list):
            raise StandinError(400, "Missing required parameter: 'messages'.")
        scenario, delay = self._scenario(request, payload)
        seed_body = canonical(payload, "stream", "stream_options")
        plan = plan_reply(scenario, Seed(seed_body), payload, request.headers, len(seed_body))
        if payload.get("stream") is True:
            include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
            chunks = chat_chunks(plan, include_usage)
            ending = {"drop": "drop", "mid_stream_error": "close"}.get(scenario, "stop")
            if scenario == "drop":
                chunks = chunks[: len(chunks) // 2]
            if scenario == "tiny_deltas":  # one write per 1,000 chunks
                chunks = [b"".join(chunks[i : i + 1000]) for i in range(0, len(chunks), 1000)]
            return await self.stream(request, headers, chunks, delay_ms=delay, ending=ending)
        if scenario == "mid_stream_error":
            raise StandinError(500, ERROR_SCENARIOS["error_500"][3], "server_error")
        return self.json_response(chat_completion(plan), headers, indent=True)

    async def _responses(
        self, request: web.BaseRequest, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        payload = self._payload(body)
        if "input" not in payload:
            raise StandinError(400, "Missing required parameter: 'input'.")
        scenario, delay = self._scenario(request, payload)
        seed_body = canonical(payload, "stream", "stream_options")
        plan = plan_reply(scenario, Seed(seed_body), payload, request.headers, len(seed_body))
        if payload.get("stream") is True:
            events = responses_events(plan, payload)
            if scenario == "tiny_deltas":
                events = [b"".join(events[i : i + 1000]) for i in range(0, len(events), 1000)]
            if scenario == "drop":
                events = events[: len(events) // 2]
            ending = {"drop": "drop", "mid_stream_error": "close"}.get(scenario, "stop")
            return await self.stream(request, headers, events, delay_ms=delay, ending=ending)
        if scenario == "mid_stream_error":
            raise StandinError(500, ERROR_SCENARIOS["error_500"][3], "server_error")
        return self.json_response(responses_object(plan, payload), headers, indent=True)

    async def _models(
        self, request: web.BaseRequest, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        data = [
            {"id": m, "object": "model", "created": _CREATED - n * 86400, "owned_by": "system"}
            for n, m in enumerate(MODELS)
        ]
        return self.json_response({"object": "list", "data": data}, headers)

    async def _model(
        self, request: web.BaseRequest, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        model = request.path.rsplit("/", 1)[1]
        if model not in MODELS:
            raise StandinError(404, f"The model '{model}' does not exist", code="model_not_found")
        return self.json_response(
            {
                "id": model,
                "object": "model",
                "created": _CREATED - MODELS.index(model) * 86400,
                "owned_by": "system",
            },
            headers,
        )

    async def _embeddings(
        self, request: web.BaseRequest, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        payload = self._payload(body)
        inputs = payload.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise StandinError(400, "'input' : input must be a string or an array of strings")
        dimensions = int(payload.get("dimensions") or 8)
        data, tokens = [], 0
        for n, item in enumerate(inputs):
            seed = Seed(json.dumps(item).encode())
            vector = [(seed.number(f"d{i}", 0, 2000) - 1000) / 1000 for i in range(dimensions)]
            tokens += max(1, len(json.dumps(item)) // 4)
            if payload.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": n, "embedding": encoded})
        return self.json_response(
            {
                "object": "list",
                "data": data,
                "model": payload["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers,
        )


def main(argv: list[str] | None = None) -> int:
    return serve_forever(OpenAIStandin, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
