"""The relay: `/anthropic/{path}` to `{upstream_url}/{path}`, as if the gateway were not there.

Headers pass unchanged but for hop-by-hop ones (and `Host`, which names the upstream); bodies
pass byte for byte (nothing is decompressed on the way); upstream errors of any status are
relayed as they are. Streams are relayed chunk by chunk as they arrive. A client that goes
away cancels the upstream request; an upstream that drops a stream drops the client's
connection (no clean end of the chunked body, so the client knows it was cut).

The credential is read once to compute the agent hash and then only forwarded upstream. An
agent exists only for a credential the upstream accepted: a call whose identity is not cached
is resolved in the Registry (which creates the agent) after the upstream's status is known,
and not at all when that status is 401 or 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from smoltbot.core.identity import agent_hash, credential_from_headers
from smoltbot.core.outcomes import ExchangeOutcome as Outcome

from .capture import Capture

if TYPE_CHECKING:
    from .identity_cache import IdentityCache
    from .metrics import GatewayMetrics

__all__ = [
    "CREDENTIAL_REFUSED", "HOP_BY_HOP", "PREFIX", "Proxy", "TargetRefused", "anthropic_error", "check_target",
    "refuse_foreign_targets",
]

logger = logging.getLogger(__name__)

PREFIX = "/anthropic"
#: Connection-level headers (RFC 9110 §7.6.1) plus the ones the gateway sets itself.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "trailers", "upgrade",
    "proxy-connection", "proxy-authenticate", "proxy-authorization", "host", "content-length", "expect",
})
#: Upstream statuses that refuse the credential: such a call creates no agent (its exchange
#: is still recorded, under the credential's hash alone).
CREDENTIAL_REFUSED = frozenset({401, 403})
#: Responses up to this size (with a Content-Length) are read whole and sent in one write;
#: larger or unsized ones are relayed chunk by chunk.
_BUFFER_LIMIT = 1024 * 1024
_NO_CREDENTIAL = (
    "No API key: send your Anthropic API key in the x-api-key header, "
    "or as Authorization: Bearer <key>."
)


def anthropic_error(status: int, error_type: str, message: str,
                    headers: Iterable[tuple[str, str]] = ()) -> web.Response:
    """An error in the Messages API's shape, so SDKs and Claude Code read it as usual."""
    body = json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()
    response = web.Response(status=status, body=body, content_type="application/json")
    for name, value in headers:
        response.headers[name] = value
    return response


# ---------------------------------------------------------------------- request targets
#
# The upstream URL is the upstream setting plus the request's path and query, nothing else. That
# holds only for an origin-form target (RFC 9112 §3.2.1) whose path cannot be normalised, by us,
# by a server or proxy in between, or by the upstream, into something outside the prefix. aiohttp
# hands handlers the target as sent (`raw_path`: the whole URL for absolute-form, the authority
# for CONNECT, `*`) while it routes on the percent-decoded path, so `GET http://host/anthropic/...`,
# `GET /%61nthropic/...` and `GET /anthropic/%2e%2e/...` all reach the relay; each is refused
# here, before anything is read or forwarded, by one check every request goes through.

_FIX = "Send requests to the gateway as plain paths under /anthropic (ANTHROPIC_BASE_URL=http://<gateway>/anthropic)"
#: Paths made only of these need no closer look (the common case: /v1/messages and friends).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/_\-]*")
_PERCENT_ROUNDS = 3  # a path decoded this often by the hops on the way is decoded as often here


class TargetRefused(ValueError):
    """A request target the gateway will not relay; the message says what to send instead."""


def check_target(raw_target: str) -> None:
    """Raises TargetRefused unless `raw_target` is origin-form with a path no one would normalise.

    Refused: absolute-form (with or without userinfo), authority-form (CONNECT), asterisk-form,
    `//` at the start (a scheme-relative reference), fragments, and a path with a dot segment
    (`.`/`..`, percent-encoded in any case, with `;params`, full-width), an encoded `/` or `\\`,
    a literal backslash, control characters or bytes that are not UTF-8 once decoded.
    """
    if not raw_target.startswith("/") or raw_target.startswith("//"):
        if raw_target == "*":
            form = "the asterisk form (OPTIONS *)"
        elif "://" in raw_target:
            form = "an absolute URL (the gateway is not an HTTP proxy)"
        elif raw_target.startswith("//"):
            form = "a scheme-relative reference (//host/...)"
        else:
            form = "an authority (CONNECT host:port; the gateway is not an HTTP proxy)"
        raise TargetRefused(f"The request target must be a path, not {form}. {_FIX}.")
    if "#" in raw_target:
        raise TargetRefused(f"The request target must not carry a fragment (#...). {_FIX}.")
    path = raw_target.partition("?")[0]
    if _PLAIN_PATH.fullmatch(path):
        return
    if "\\" in path:
        raise TargetRefused(f"The request path must not contain a backslash. {_FIX}.")
    for segment in path.split("/"):
        _check_segment(segment)


def _check_segment(segment: str) -> None:
    shown = segment if len(segment) <= 64 else segment[:61] + "..."
    value = segment
    for _ in range(_PERCENT_ROUNDS):
        if "%" not in value:
            break
        try:
            value = unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TargetRefused(
                f"The request path must be UTF-8 once percent-decoded (segment {shown!r}). {_FIX}.") from None
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise TargetRefused(f"The request path must not contain control characters. {_FIX}.")
    # NFKC: full-width dots and solidi are read as '.' and '/' by some servers.
    normalised = unicodedata.normalize("NFKC", value)
    if "/" in normalised or "\\" in normalised:
        raise TargetRefused(
            f"The request path must not encode '/' or '\\' inside a segment (segment {shown!r}). {_FIX}.")
    if normalised.partition(";")[0] in (".", ".."):
        raise TargetRefused(
            f"The request path must not contain dot segments ('.' or '..', encoded or not; "
            f"segment {shown!r}): "
            f"the gateway relays only under its prefix. {_FIX}.")


@web.middleware
async def refuse_foreign_targets(request: web.Request,
                                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                 ) -> web.StreamResponse:
    """Every request, whatever route it matched (or none, as CONNECT and `*`), passes `check_target`."""
    try:
        if request.method == "CONNECT":
            # Whatever its target (aiohttp reads even a path as an authority here): no tunnels.
            raise TargetRefused(f"CONNECT is not served: the gateway is not an HTTP proxy. {_FIX}.")
        check_target(request.raw_path)
    except TargetRefused as refused:
        return anthropic_error(400, "invalid_request_error", str(refused))
    return await handler(request)


#: Headers a client names its session in, most specific first: ours, Claude Code's, and the
#: affinity header OpenClaw's Anthropic transport sends with its session id.
SESSION_HINT_HEADERS = ("x-smoltbot-session", "x-claude-code-session-id", "x-session-affinity")


#: The Registry's limit on a session id.
_MAX_HINT = 256


def _session_hint(headers: CIMultiDictProxy[str]) -> str:
    for name in SESSION_HINT_HEADERS:
        value = headers.get(name)
        if value:
            return _usable_hint(value)
    return ""


def _usable_hint(value: str) -> str:
    """The hint as the Registry (and protobuf) can take it: printable UTF-8 of at most 256
    characters as sent; anything else (non-UTF-8 bytes, which aiohttp hands over as surrogates,
    control characters, a longer name) by a digest of its bytes, so its calls still share one
    session and a lookup is not refused again on every call."""
    if len(value) <= _MAX_HINT and value.isprintable():
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _forwardable(headers: Iterable[tuple[str, str]], connection: str | None) -> list[tuple[str, str]]:
    named: frozenset[str] = frozenset()
    if connection:
        named = frozenset(token.strip().lower() for token in connection.split(","))
    return [
        (name, value) for name, value in headers
        if (low := name.lower()) not in HOP_BY_HOP and not low.startswith("proxy-") and low not in named
    ]


class Proxy:
    """The `/anthropic/...` handler and what it needs, bound once per app."""

    def __init__(self, *, upstream_url: str, session_factory: Callable[[], aiohttp.ClientSession],
                 secret: bytes, max_request_bytes: int, identity: IdentityCache,
                 submit: Callable[[Capture], None], metrics: GatewayMetrics) -> None:
        self._upstream = upstream_url.rstrip("/")
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None
        self._secret = secret
        self._max_request_bytes = max_request_bytes
        self._identity = identity
        self._submit = submit
        self._metrics = metrics

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started_ns = time.time_ns()
        t0 = time.perf_counter()
        headers = request.headers
        if not request.raw_path.startswith(PREFIX + "/"):
            # Routed here on the decoded path (`/%61nthropic/...`): the raw one is what would be relayed.
            return self._done(anthropic_error(
                400, "invalid_request_error",
                f"The request path must start with {PREFIX}/ as sent, without percent-encoding. {_FIX}."), t0)
        credential = credential_from_headers(headers)
        if credential is None:
            return self._done(anthropic_error(401, "authentication_error", _NO_CREDENTIAL), t0)
        length = request.content_length
        if length is not None and length > self._max_request_bytes:
            return self._done(self._too_large(), t0)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._done(self._too_large(), t0)
        hashed = agent_hash(credential, self._secret)
        hint = _session_hint(headers)
        path, _, query = request.raw_path[len(PREFIX):].partition("?")
        capture = Capture(
            agent_hash=hashed, session_hint=hint, method=request.method, path=path, query=query,
            request_headers=headers.items(), request_body=body, started_ns=started_ns, credential=credential,
        )
        # A warm identity costs nothing; a cold one is looked up only once the upstream has
        # accepted the credential (below), so a refused key creates no agent and no session.
        identity = self._identity.warm(hashed, hint)
        if identity is not None:
            capture.agent_id, capture.session_id = identity
        forward = CIMultiDict(_forwardable(headers.items(), headers.get("connection")))
        session = self._session
        if session is None:
            session = self._session = self._session_factory()
        # check_target and the prefix check above make `path` start with "/" and hold nothing a
        # hop would normalise, so the upstream's scheme, host and base path cannot change.
        target = URL(self._upstream + path + (f"?{query}" if query else ""), encoded=True)
        try:
            upstream = await session.request(
                request.method, target, headers=forward, data=body if body else None, allow_redirects=False,
            )
        except asyncio.CancelledError:
            self._finish(capture, Outcome.CLIENT_ABORT, "client went away before upstream answered", 0, t0)
            raise
        except TimeoutError:
            self._finish(capture, Outcome.UPSTREAM_UNREACHABLE, "timed out connecting to upstream", 504, t0)
            return anthropic_error(504, "timeout_error", "The gateway timed out reaching the upstream API.")
        except aiohttp.ClientError as error:
            detail = f"upstream unreachable: {type(error).__name__}: {error}"
            self._finish(capture, Outcome.UPSTREAM_UNREACHABLE, detail, 502, t0)
            logger.warning("exchange %s: %s", capture.exchange_id, detail)
            return anthropic_error(502, "api_error", "The gateway could not reach the upstream API.")
        capture.first_byte_ns = time.time_ns()
        capture.status = status = upstream.status
        if identity is None:
            if status in CREDENTIAL_REFUSED:
                identity = ("", "")
            else:
                try:
                    identity = await self._identity.resolve(hashed, hint)
                except asyncio.CancelledError:
                    upstream.close()
                    self._finish(capture, Outcome.CLIENT_ABORT, "client went away in identity lookup", 0, t0)
                    raise
            capture.agent_id, capture.session_id = identity
        capture.response_headers = list(upstream.headers.items())
        out_headers = CIMultiDict(_forwardable(capture.response_headers, upstream.headers.get("connection")))
        agent_id, session_id = identity
        if agent_id:
            out_headers["x-smoltbot-agent"] = agent_id
        if session_id:
            out_headers["x-smoltbot-session"] = session_id
        outcome = Outcome.COMPLETE if status < 400 else Outcome.UPSTREAM_ERROR
        content_type = upstream.headers.get("content-type", "")
        size = upstream.content_length
        if not content_type.startswith("text/event-stream") and (
            (size is not None and size <= _BUFFER_LIMIT) or request.method == "HEAD" or status in (204, 304)
        ):
            return await self._relay_whole(request, upstream, capture, out_headers, outcome, t0)
        return await self._relay_stream(request, upstream, capture, out_headers, outcome, t0,
                                        content_type.startswith("text/event-stream"))

    async def _relay_whole(self, request: web.Request, upstream: aiohttp.ClientResponse, capture: Capture,
                           out_headers: CIMultiDict[str], outcome: Outcome, t0: float) -> web.StreamResponse:
        try:
            data = await upstream.read()
        except asyncio.CancelledError:
            upstream.close()
            self._finish(capture, Outcome.CLIENT_ABORT, "client went away while upstream answered", 0, t0)
            raise
        except (TimeoutError, aiohttp.ClientError) as error:
            upstream.close()
            detail = f"upstream dropped the response: {type(error).__name__}"
            self._finish(capture, Outcome.UPSTREAM_DROPPED, detail, 502, t0)
            return anthropic_error(502, "api_error", "The upstream API closed the connection mid-response.")
        finally:
            upstream.release()
        capture.add_chunk(data)
        if request.method == "HEAD":
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out_headers)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
        else:
            response = web.Response(status=upstream.status, reason=upstream.reason, headers=out_headers, body=data)
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError) as error:
            self._finish(capture, Outcome.CLIENT_ABORT, "client went away before the response was sent", 0, t0)
            if isinstance(error, asyncio.CancelledError):
                raise
            return response
        self._finish(capture, outcome, "", upstream.status, t0)
        return response

    async def _relay_stream(self, request: web.Request, upstream: aiohttp.ClientResponse, capture: Capture,
                            out_headers: CIMultiDict[str], outcome: Outcome, t0: float,
                            sse: bool) -> web.StreamResponse:
        capture.streamed = sse
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out_headers)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        metrics = self._metrics
        metrics.active_streams.inc()
        try:
            await response.prepare(request)
            chunks = upstream.content.iter_any().__aiter__()
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except (TimeoutError, aiohttp.ClientError) as error:
                    return self._upstream_dropped(request, upstream, capture, response, error, t0)
                await response.write(chunk)
                capture.add_chunk(chunk)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError) as error:
            upstream.close()
            self._finish(capture, Outcome.CLIENT_ABORT, "client went away mid-response", 0, t0)
            if isinstance(error, asyncio.CancelledError):
                raise
            return response
        finally:
            metrics.active_streams.dec()
            upstream.release()
        self._finish(capture, outcome, "", upstream.status, t0)
        return response

    def _upstream_dropped(self, request: web.Request, upstream: aiohttp.ClientResponse, capture: Capture,
                          response: web.StreamResponse, error: BaseException, t0: float) -> web.StreamResponse:
        upstream.close()
        # Cut the client's connection too: a clean end of the chunked body would tell it the
        # response was whole.
        transport = request.transport
        if transport is not None:
            transport.abort()
        detail = f"upstream dropped the stream: {type(error).__name__}"
        self._finish(capture, Outcome.UPSTREAM_DROPPED, detail, upstream.status, t0)
        return response

    # ------------------------------------------------------------------ helpers

    def _too_large(self) -> web.Response:
        return anthropic_error(
            413, "request_too_large",
            f"Request exceeds the gateway's limit of {self._max_request_bytes} bytes.",
        )

    def _done(self, response: web.Response, t0: float) -> web.Response:
        self._metrics.count_request(response.status)
        self._metrics.latency.observe(time.perf_counter() - t0)
        return response

    def _finish(self, capture: Capture, outcome: Outcome, detail: str, status: int, t0: float) -> None:
        capture.finish(outcome, detail)
        self._metrics.count_request(status)
        self._metrics.latency.observe(time.perf_counter() - t0)
        self._submit(capture)
