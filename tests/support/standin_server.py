"""What the OpenAI and Gemini stand-ins share: an aiohttp server on port 0 that records what it
received, scenario markers, request-derived ids, and streamed replies written one event per
write (with a delay, a dropped connection or an abrupt close when a scenario asks).

Behaviour is chosen per request by ``x-standin-scenario: NAME`` (or a ``[[scenario:NAME]]``
marker in the last user message) and ``x-standin-delay-ms: N`` (or ``[[delay:N]]``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "MAX_DELAY_MS",
    "RecordedRequest",
    "Seed",
    "StandinError",
    "StandinServer",
    "marker_options",
    "schema_value",
    "serve_forever",
]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_DELAY_MS = 60_000
_MARKER = re.compile(r"\[\[(scenario|delay):\s*([A-Za-z0-9_,+\-]+)\s*\]\]")
_ID_CHARS = bytes.maketrans(b"+/", b"xZ")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the stand-in received it."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes
    credential: str | None

    def json(self) -> Any:
        return json.loads(self.body)


class StandinError(Exception):
    """An error reply in the provider's own shape (built by the stand-in's `error_body`)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "",
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        self.headers = headers or {}


class Seed:
    """Deterministic strings derived from a request body."""

    __slots__ = ("digest", "fingerprint")

    def __init__(self, body: bytes) -> None:
        self.digest = hashlib.sha256(body).digest()
        self.fingerprint = self.digest[:4].hex()

    def token(self, salt: str, length: int = 24) -> str:
        raw = hashlib.sha256(self.digest + salt.encode()).digest()
        return base64.b64encode(raw).translate(_ID_CHARS, b"=").decode()[:length]

    def hex(self, salt: str, length: int = 32) -> str:
        return hashlib.sha256(self.digest + salt.encode()).hexdigest()[:length]

    def blob(self, salt: str, repeat: int) -> str:
        raw = b"".join(hashlib.sha256(self.digest + f"{salt}{i}".encode()).digest() for i in range(repeat))
        return base64.b64encode(raw).decode()

    def number(self, salt: str, low: int, high: int) -> int:
        return low + int.from_bytes(hashlib.sha256(self.digest + salt.encode()).digest()[:4]) % (
            high - low + 1
        )


def canonical(payload: dict[str, Any], *drop: str) -> bytes:
    """The request body as a seed: sorted, compact, without the keys that only change the form
    of the reply (stream, stream_options), so a streamed and a plain call give the same object."""
    return json.dumps(
        {k: v for k, v in payload.items() if k not in drop},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def marker_options(headers: CIMultiDictProxy[str], text: str) -> tuple[list[str], int]:
    """The scenario names and the delay (ms) a request asks for."""
    spec, delay = headers.get("x-standin-scenario"), headers.get("x-standin-delay-ms")
    if (spec is None or delay is None) and "[[" in text:
        for kind, value in _MARKER.findall(text):
            if kind == "scenario" and spec is None:
                spec = value
            elif kind == "delay" and delay is None:
                delay = value
    names = [name.strip().lower() for name in re.split(r"[,+]", spec or "") if name.strip()]
    try:
        delay_ms = max(0, min(int(delay), MAX_DELAY_MS)) if delay is not None else 0
    except ValueError:
        raise StandinError(400, f"x-standin-delay-ms must be an integer, got {delay!r}") from None
    return names, delay_ms


def schema_value(schema: Any) -> Any:
    """A value that fits a JSON schema's type (the first enum value when there is one)."""
    if not isinstance(schema, dict):
        return "example"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if isinstance(kind, str):
        kind = kind.lower()  # Gemini's Schema spells types in capitals
    if kind == "array":
        return [schema_value(schema.get("items"))] if schema.get("items") else []
    if kind == "object" and schema.get("properties"):
        return {k: schema_value(v) for k, v in schema["properties"].items()}
    return {
        "string": "example",
        "number": 42,
        "integer": 42,
        "boolean": True,
        "object": {},
        "null": None,
    }.get(kind, "example")


Handler = Callable[[web.BaseRequest, bytes, str | None], Awaitable[web.StreamResponse]]


@dataclass
class StandinServer:
    """The server plumbing; subclasses implement `dispatch` and `error_response`."""

    host: str = "127.0.0.1"
    port: int = 0
    record: bool = True
    #: When set, only these credentials are accepted; any other gets the provider's refusal.
    accepted_keys: set[str] | frozenset[str] | None = None
    base_url: str = field(default="", init=False)
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    disconnects: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._runner: web.ServerRunner | None = None

    async def start(self) -> str:
        loop = asyncio.get_running_loop()

        def request_factory(*args: Any) -> web.BaseRequest:
            return web.BaseRequest(*args, loop, client_max_size=MAX_BODY_BYTES)

        server = web.Server(
            self._handle, request_factory=request_factory, handler_cancellation=True, access_log=None
        )
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- what a provider's stand-in implements

    def credential(self, request: web.BaseRequest) -> str | None:
        raise NotImplementedError

    def base_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def error_response(self, error: StandinError, headers: dict[str, str]) -> web.Response:
        raise NotImplementedError

    async def dispatch(
        self, request: web.BaseRequest, body: bytes, credential: str | None, headers: dict[str, str]
    ) -> web.StreamResponse:
        raise NotImplementedError

    # --- plumbing

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = self.base_headers()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self.error_response(StandinError(413, "Request body too large."), headers)
        credential = self.credential(request)
        if self.record:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    request.query_string,
                    CIMultiDictProxy(CIMultiDict(request.headers)),
                    body,
                    credential,
                )
            )
        try:
            return await self.dispatch(request, body, credential, headers)
        except StandinError as error:
            headers.update(error.headers)
            return self.error_response(error, headers)

    @staticmethod
    def json_response(
        data: Any, headers: dict[str, str], status: int = 200, *, indent: bool = False
    ) -> web.Response:
        if indent:
            body = json.dumps(data, indent=2, ensure_ascii=False).encode()
        else:
            body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {**headers, "Content-Type": "application/json; charset=utf-8"}
        return web.Response(body=body, status=status, headers=headers)

    async def stream(
        self,
        request: web.BaseRequest,
        headers: dict[str, str],
        chunks: list[bytes],
        *,
        delay_ms: int = 0,
        ending: str = "stop",
        content_type: str = "text/event-stream; charset=utf-8",
    ) -> web.StreamResponse:
        """Writes each chunk as one transport write. `ending`: stop (a clean end), drop (the
        connection cut with no terminating chunk) or close (a clean end, then the connection closed)."""
        response = web.StreamResponse(
            headers={**headers, "Content-Type": content_type, "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            for n, chunk in enumerate(chunks):
                if delay_ms and n:
                    await asyncio.sleep(delay_ms / 1000)
                await response.write(chunk)
        except ConnectionResetError:
            self.disconnects += 1
            return response
        except asyncio.CancelledError:
            self.disconnects += 1
            raise
        if ending == "drop":
            transport = request.transport
            if transport is not None:
                transport.close()
        elif ending == "close":
            response.force_close()
        return response


async def _serve(factory: Callable[..., StandinServer], host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with factory(host=host, port=port, record=False) as standin:
        print(f"LISTENING {standin.base_url}", flush=True)
        await stop.wait()


def serve_forever(factory: Callable[..., StandinServer], description: str, argv: list[str] | None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_serve(factory, args.host, args.port))
    return 0
