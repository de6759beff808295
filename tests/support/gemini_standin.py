"""A local stand-in for the Gemini API (generativelanguage.googleapis.com, v1beta).

Written from the wire format google-genai reads: ``POST /v1beta/models/{model}:generateContent``
and ``:streamGenerateContent`` (``?alt=sse``: ``data: {chunk}`` events separated by CRLF CRLF;
without it, one JSON array of the chunks), ``:countTokens``, ``GET /v1beta/models`` (paged by
``pageSize`` / ``pageToken``) and ``GET /v1beta/models/{model}``; the credential in
``x-goog-api-key`` or ``?key=``; Google's error body ``{"error": {"code", "message", "status",
"details"}}``, indented as Google sends it. As upstream: no credential is 403
PERMISSION_DENIED, a rejected one 400 INVALID_ARGUMENT with ErrorInfo API_KEY_INVALID.

Replies: text parts; thought parts (``thought: true``) when ``thinkingConfig.includeThoughts``,
with a ``thoughtSignature`` on the part that closes the turn (the first ``functionCall``, or the
last text part, which streams it in a final chunk with empty text); ``functionCall`` parts
(one per declared function, at most two, or get_weather); ``finishReason``;
``usageMetadata`` with ``thoughtsTokenCount`` and, when the request names ``cachedContent``,
``cachedContentTokenCount`` (cumulative in every chunk, as upstream). The non-streamed reply
is exactly the streamed chunks merged.

Scenarios (``x-standin-scenario`` or ``[[scenario:NAME]]`` in the last user text): ``text``,
``thinking``, ``function_call``, ``thinking_function_call``, ``max_tokens``, ``mid_stream_error``,
``drop``, ``tiny_deltas`` (``x-standin-deltas``, default 100,000), ``error_400``, ``error_401``,
``error_403``, ``error_404``, ``error_429`` (RESOURCE_EXHAUSTED with RetryInfo), ``error_500``,
``error_503``.

Run standalone with ``python -m tests.support.gemini_standin [--host H] [--port P]``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aiohttp import web

from .standin_server import (
    Seed,
    StandinError,
    StandinServer,
    canonical,
    marker_options,
    schema_value,
    serve_forever,
)

__all__ = [
    "CONTENT_SCENARIOS",
    "ERROR_SCENARIOS",
    "MODELS",
    "GeminiStandin",
    "gemini_chunks",
    "merged_response",
]

_RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
ERROR_SCENARIOS: dict[str, tuple[int, str, str]] = {
    "error_400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "error_401": (
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 "
        "access token, login cookie or other valid authentication credential.",
    ),
    "error_403": (403, "PERMISSION_DENIED", "The caller does not have permission"),
    "error_404": (
        404,
        "NOT_FOUND",
        "models/{model} is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and "
        "their supported methods.",
    ),
    "error_429": (
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. Please retry in 1s.",
    ),
    "error_500": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "error_503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
}
CONTENT_SCENARIOS = frozenset(
    {
        "text",
        "thinking",
        "function_call",
        "thinking_function_call",
        "max_tokens",
        "mid_stream_error",
        "drop",
        "tiny_deltas",
    }
)
TINY_DELTAS_DEFAULT = 100_000
MODELS = ["gemini-3-pro-preview", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"]
_MISSING_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). Please use "
    "API Key or other form of API consumer identity to call this API."
)


def _get(obj: Any, name: str) -> Any:
    """A field by its lowerCamel or its snake_case name: Google's JSON parsing accepts both
    (proto3 JSON mapping), and google-genai sends some fields in snake_case."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    return obj.get("".join("_" + c.lower() if c.isupper() else c for c in name))


def _last_user_text(payload: dict[str, Any]) -> str:
    for content in reversed(payload.get("contents") or []):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            return "".join(str(p.get("text", "")) for p in content.get("parts") or [] if isinstance(p, dict))
    return ""


def _declarations(payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for tool in payload.get("tools") or []:
        for declaration in _get(tool, "functionDeclarations") or []:
            schema = declaration.get("parameters") or _get(declaration, "parametersJsonSchema") or {}
            found.append((declaration.get("name", "tool"), schema))
    return found


def gemini_chunks(
    scenario: str, seed: Seed, payload: dict[str, Any], model: str, tiny: int = 0
) -> list[dict[str, Any]]:
    """The chunks of a reply, in order; the last carries finishReason and the final usage."""
    fp = seed.fingerprint
    config = _get(payload, "generationConfig") or {}
    thinking = scenario in ("thinking", "thinking_function_call")
    show_thoughts = thinking and bool(_get(_get(config, "thinkingConfig"), "includeThoughts"))
    signature = seed.blob("signature", 3) if thinking else None
    parts: list[list[dict[str, Any]]] = []  # per chunk
    if show_thoughts:
        parts += [
            [{"text": "**Reading the request**\n\n", "thought": True}],
            [{"text": f"The user wants an answer to {fp}.", "thought": True}],
        ]
    if scenario in ("function_call", "thinking_function_call"):
        declared = _declarations(payload) or [
            ("get_weather", {"properties": {"location": {"type": "STRING"}}})
        ]
        calls = []
        for n, (name, schema) in enumerate(declared[:2]):
            args = {k: schema_value(v) for k, v in (schema.get("properties") or {}).items()} or {
                "location": "Paris"
            }
            part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
            if n == 0 and signature:
                part["thoughtSignature"] = signature
            calls.append(part)
        parts.append(calls)
        finish = "STOP"
    else:
        if tiny:
            texts = list(("abcdefghij" * (tiny // 10 + 1))[:tiny])
        else:
            texts = ["Hello!", " This is the", " Gemini stand-in", f" answering request {fp}."]
        parts += [[{"text": t}] for t in texts]
        if signature:
            parts.append([{"text": "", "thoughtSignature": signature}])
        finish = "MAX_TOKENS" if scenario == "max_tokens" else "STOP"
    prompt = max(1, len(canonical(payload)) // 4)
    thoughts = 48 + seed.number("thoughts", 0, 64) if thinking else 0
    cached = prompt // 2 if _get(payload, "cachedContent") else 0
    response_id = seed.token("response", 22)
    chunks, produced = [], 0
    for n, chunk_parts in enumerate(parts):
        produced += sum(len(p.get("text", "")) // 4 + (4 if "functionCall" in p else 0) for p in chunk_parts)
        last = n == len(parts) - 1
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": produced,
            "totalTokenCount": prompt + produced + thoughts,
        }
        if cached:
            usage["cachedContentTokenCount"] = cached
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        candidate: dict[str, Any] = {"content": {"parts": chunk_parts, "role": "model"}}
        if last:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        chunks.append(
            {
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": model,
                "responseId": response_id,
            }
        )
    return chunks


def merged_response(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed reply: the chunks merged (text runs joined, a signature closing its part)."""
    merged_parts: list[dict[str, Any]] = []
    open_text = False
    for chunk in chunks:
        for part in chunk["candidates"][0]["content"]["parts"]:
            last = merged_parts[-1] if merged_parts else None
            if (
                "text" in part
                and open_text
                and last is not None
                and bool(last.get("thought")) == bool(part.get("thought"))
            ):
                last["text"] += part["text"]
                if "thoughtSignature" in part:
                    last["thoughtSignature"] = part["thoughtSignature"]
            else:
                merged_parts.append(dict(part))
            open_text = "text" in part and "thoughtSignature" not in part
    final = chunks[-1]
    candidate = {**final["candidates"][0], "content": {"parts": merged_parts, "role": "model"}}
    return {
        "candidates": [candidate],
        "usageMetadata": final["usageMetadata"],
        "modelVersion": final["modelVersion"],
        "responseId": final["responseId"],
    }


class GeminiStandin(StandinServer):
    def credential(self, request: web.BaseRequest) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key") or None

    def base_headers(self) -> dict[str, str]:
        return {
            "Vary": "Origin, X-Origin, Referer",
            "Server": "scaffolding on HTTPServer2",
            "X-XSS-Protection": "0",
            "X-Frame-Options": "SAMEORIGIN",
            "X-Content-Type-Options": "nosniff",
        }

    def error_response(self, error: StandinError, headers: dict[str, str]) -> web.Response:
        status = error.kind or {
            400: "INVALID_ARGUMENT",
            403: "PERMISSION_DENIED",
            404: "NOT_FOUND",
            413: "INVALID_ARGUMENT",
        }.get(error.status, "INTERNAL")
        body: dict[str, Any] = {"code": error.status, "message": error.message, "status": status}
        if error.code == "API_KEY_INVALID":
            body["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
        elif error.status == 429:
            body["details"] = [_RETRY_INFO]
        return self.json_response({"error": body}, headers, error.status, indent=True)

    async def dispatch(
        self, request: web.BaseRequest, body: bytes, credential: str | None, headers: dict[str, str]
    ) -> web.StreamResponse:
        path, method = request.path, request.method
        at = max(path.find("/v1beta/"), path.find("/v1/"))
        rest = path[path.index("/", at + 1) :] if at >= 0 else path
        if not rest.startswith("/models"):
            raise StandinError(404, f"The requested URL {path} was not found on this server.", "NOT_FOUND")
        if credential is None:
            raise StandinError(403, _MISSING_KEY, "PERMISSION_DENIED")
        if self.accepted_keys is not None and credential not in self.accepted_keys:
            raise StandinError(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
                code="API_KEY_INVALID",
            )
        if method == "GET" and rest == "/models":
            return self._list_models(request, headers)
        name, _, action = rest[len("/models/") :].partition(":")
        if method == "GET" and name and not action:
            if name not in MODELS:
                raise StandinError(404, f"models/{name} is not found for API version v1beta", "NOT_FOUND")
            return self.json_response(_model_info(name), headers, indent=True)
        if method == "POST" and action in ("generateContent", "streamGenerateContent", "countTokens"):
            return await self._generate(request, body, headers, name, action)
        raise StandinError(404, f"The requested URL {path} was not found on this server.", "NOT_FOUND")

    def _list_models(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
        try:
            size = int(request.query.get("pageSize", "50"))
        except ValueError:
            raise StandinError(400, "Invalid value at 'page_size' (TYPE_INT32)") from None
        start = (
            int(request.query.get("pageToken") or 0)
            if (request.query.get("pageToken") or "0").isdigit()
            else 0
        )
        page = MODELS[start : start + max(1, size)]
        data: dict[str, Any] = {"models": [_model_info(m) for m in page]}
        if start + len(page) < len(MODELS):
            data["nextPageToken"] = str(start + len(page))
        return self.json_response(data, headers, indent=True)

    async def _generate(
        self, request: web.BaseRequest, body: bytes, headers: dict[str, str], model: str, action: str
    ) -> web.StreamResponse:
        try:
            payload = json.loads(body)
        except ValueError:
            raise StandinError(400, "Invalid JSON payload received. Unexpected token.") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("contents"), list):
            raise StandinError(400, "* GenerateContentRequest.contents: contents is not specified")
        if action == "countTokens":
            return self.json_response({"totalTokens": max(1, len(body) // 4)}, headers, indent=True)
        names, delay = marker_options(request.headers, _last_user_text(payload))
        scenario = "text"
        for name in names:
            if name not in CONTENT_SCENARIOS and name not in ERROR_SCENARIOS:
                known = ", ".join(sorted(CONTENT_SCENARIOS | ERROR_SCENARIOS.keys()))
                raise StandinError(400, f"unknown stand-in scenario {name!r}; known: {known}")
            scenario = name
        if scenario in ERROR_SCENARIOS:
            status, kind, message = ERROR_SCENARIOS[scenario]
            raise StandinError(status, message.format(model=model), kind)
        tiny = 0
        if scenario == "tiny_deltas":
            tiny = int(request.headers.get("x-standin-deltas", TINY_DELTAS_DEFAULT))
        chunks = gemini_chunks(scenario, Seed(canonical(payload)), payload, model, tiny)
        if action == "generateContent":
            if scenario == "mid_stream_error":
                raise StandinError(500, ERROR_SCENARIOS["error_500"][2], "INTERNAL")
            return self.json_response(merged_response(chunks), headers, indent=True)
        sse = request.query.get("alt") == "sse"
        encoded = [json.dumps(c, separators=(",", ":"), ensure_ascii=False).encode() for c in chunks]
        ending = "stop"
        if scenario == "mid_stream_error":
            error = {"error": {"code": 500, "message": ERROR_SCENARIOS["error_500"][2], "status": "INTERNAL"}}
            encoded = [*encoded[:2], json.dumps(error).encode()]
            ending = "close"
        elif scenario == "drop":
            encoded, ending = encoded[: len(encoded) // 2], "drop"
        if sse:
            writes = [b"data: " + item + b"\r\n\r\n" for item in encoded]
            content_type = "text/event-stream"
        else:
            writes = [(b"[" if n == 0 else b"\n,\r\n") + item for n, item in enumerate(encoded)]
            if ending == "stop":
                writes.append(b"\n]")
            content_type = "application/json; charset=UTF-8"
        if tiny:
            writes = [b"".join(writes[i : i + 1000]) for i in range(0, len(writes), 1000)]
        return await self.stream(
            request, headers, writes, delay_ms=delay, ending=ending, content_type=content_type
        )


def _model_info(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name.replace("-", " ").title(),
        "description": "A Gemini model served by the stand-in.",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": [
            "generateContent",
            "countTokens",
            "createCachedContent",
            "batchGenerateContent",
        ],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": True,
    }


def main(argv: list[str] | None = None) -> int:
    return serve_forever(GeminiStandin, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
