"""The relay: `/{provider}/{path}` to `{that provider's upstream}/{path}`, as if the gateway were not there.

One relay serves every provider (`providers.SPECS`: `/anthropic`, `/openai`, `/gemini`); a
provider's spec says only what differs (its upstream setting, where its credential is, the shape
of the errors the gateway answers with itself, its stream formats).

Headers pass unchanged but for hop-by-hop ones (and `Host`, which names the upstream); bodies
pass byte for byte (nothing is decompressed on the way); upstream errors of any status are
relayed as they are. Streams are relayed chunk by chunk as they arrive. A client that goes
away cancels the upstream request; an upstream that drops a stream drops the client's
connection (no clean end of the chunked body, so the client knows it was cut).

The credential is read once to compute the agent hash and then only forwarded upstream. An
agent exists only for a credential the upstream accepted: a call whose identity is not cached
is resolved in the Registry (which creates the agent) after the upstream's status is known,
and not at all when that status is 401 or 403.

The session is named by the one ladder of `smoltbot.core.sessions` (the same the Observer
applies): the operator's header, Claude Code's header and `metadata.user_id`, Codex's headers,
OpenClaw's affinity header.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy

from smoltbot.core.identity import AmbiguousCredential, agent_hash
from smoltbot.core.outcomes import ExchangeOutcome as Outcome
from smoltbot.core.sessions import RESPONSE_ID_SCAN_BYTES, ResponseChains, name_session, response_id_in

from .capture import Capture, CaptureLimits
from .http_messages import BodyTooLarge, Request, RequestBodyError, Response, StreamResponse, json_response
from .providers import SPECS, GatewayError, ProviderSpec
from .scrub import Scrubber
from .targets import refusal
from .upstream import Origin, UpstreamError, UpstreamPool, UpstreamResponse

if TYPE_CHECKING:
    from .enforce import Enforcer, ResponseFilter
    from .identity_cache import IdentityCache
    from .metrics import GatewayMetrics

__all__ = ["CREDENTIAL_REFUSED", "HOP_BY_HOP", "Proxy", "capture_spec", "provider_error"]

logger = logging.getLogger(__name__)

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
#: Request bodies above this go to the upstream pool as a file-like object: written in pieces,
#: each after the socket has drained.
_BODY_AS_FILE = 1024 * 1024
#: Bodies up to this size are parsed on the event loop to name the session (Claude Code's
#: `metadata.user_id`, when no header named it); larger ones on a worker thread.
_PARSE_INLINE = 256 * 1024

def capture_spec(capture: Capture) -> ProviderSpec:
    return SPECS.get(capture.provider) or SPECS["anthropic"]


def provider_error(spec: ProviderSpec, status: int, error: GatewayError, message: str) -> Response:
    """An error the gateway answers with, in the provider's shape (`ProviderSpec.error`'s body)."""
    return json_response(status, spec.error_shape(status, error, message))


def _forwardable(headers: Iterable[tuple[str, str]], connection: str | None) -> list[tuple[str, str]]:
    named: frozenset[str] = frozenset()
    if connection:
        named = frozenset(token.strip().lower() for token in connection.split(","))
    return [
        (name, value) for name, value in headers
        if (low := name.lower()) not in HOP_BY_HOP and not low.startswith("proxy-") and low not in named
    ]


async def _session_hint(headers: CIMultiDictProxy[str], body: bytes, chained: Callable[[str], str]) -> str:
    """The session the request names (core.sessions' ladder), "" when none. The body is read
    only when no header named it and it may hold Claude Code's `metadata.user_id` or a Responses
    call's `previous_response_id` (looked up in `chained`)."""
    named = name_session(headers)
    if named.session_id or (b'"user_id"' not in body and b'"previous_response_id"' not in body):
        # The body rungs are `metadata.user_id` and `previous_response_id`; a body without those
        # keys cannot name a session (a client that escapes the keys' letters is read by the
        # Observer's ladder alone).
        return named.session_id
    if len(body) <= _PARSE_INLINE:
        return name_session(headers, body, chained=chained).session_id
    return (await asyncio.to_thread(name_session, headers, body, chained=chained)).session_id


class Proxy:
    """The handler of every provider prefix and what it needs, bound once per app."""

    def __init__(self, *, upstreams: dict[str, str], pool_factory: Callable[[], UpstreamPool],
                 secret: bytes, max_request_bytes: int, identity: IdentityCache,
                 submit: Callable[[Capture], None], metrics: GatewayMetrics,
                 capture_limits: CaptureLimits, enforcer: Enforcer | None = None) -> None:
        #: provider name -> where its calls go (None: the setting is no http(s) URL; calls get a 502).
        self._origins: dict[str, Origin | None] = {}
        for name, url in upstreams.items():
            try:
                self._origins[name] = Origin.parse(url)
            except ValueError:
                self._origins[name] = None
        self._pool_factory = pool_factory
        self._pool: UpstreamPool | None = None
        self._secret = secret
        self._max_request_bytes = max_request_bytes
        self._identity = identity
        self._submit = submit
        self._metrics = metrics
        self.capture_limits = capture_limits
        #: The card's enforce and nudge modes (gateway/enforce); None: every answer as it came.
        self._enforcer = enforcer
        #: The session each recent Responses reply was given (the previous_response_id rung).
        self._chains = ResponseChains()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def handle(self, request: Request, spec: ProviderSpec) -> StreamResponse:
        started_ns = time.time_ns()
        t0 = time.perf_counter()
        headers = request.headers
        prefix = spec.prefix
        if not request.raw_path.startswith(prefix + "/"):
            # Routed here on the decoded path (`/%61nthropic/...`): the raw one is what would be relayed.
            return self._done(refusal(
                spec, f"The request path must start with {prefix}/ as sent, without percent-encoding."), t0)
        path, _, query = request.raw_path[len(prefix):].partition("?")
        try:
            credential = spec.credential(headers, query)
        except AmbiguousCredential as ambiguous:
            return self._done(
                provider_error(spec, 400, GatewayError.INVALID_REQUEST, f"{ambiguous}."), t0)
        if credential is None:
            return self._done(
                provider_error(spec, 401, GatewayError.AUTHENTICATION, spec.missing_credential), t0)
        length = request.content_length
        if length is not None and length > self._max_request_bytes:
            return self._done(self._too_large(spec), t0)
        try:
            body = await request.read()
        except BodyTooLarge:
            return self._done(self._too_large(spec), t0)
        except RequestBodyError as error:
            # A body whose framing broke (a bad chunk size), or that stopped coming (408): never relayed.
            return self._done(
                provider_error(spec, error.status, GatewayError.INVALID_REQUEST, f"{error}."), t0)
        hashed = agent_hash(credential, self._secret)
        hint = await _session_hint(headers, body, self._chains.lookup(hashed))
        capture = Capture(
            agent_hash=hashed, session_hint=hint, method=request.method, path=path, query=query,
            request_headers=headers.items(), request_body=body, started_ns=started_ns, credential=credential,
            limits=self.capture_limits, provider=spec.name,
        )
        # A warm identity costs nothing; a cold one is looked up only once the upstream has
        # accepted the credential (below), so a refused key creates no agent and no session.
        identity = self._identity.warm(hashed, hint)
        if identity is not None:
            capture.agent_id, capture.session_id = identity
            if self._enforcer is not None:
                body = self._enforcer.note_request(capture, body, headers)
        forward = _forwardable(headers.items(), headers.get("connection"))
        pool = self._pool
        if pool is None:
            pool = self._pool = self._pool_factory()
        # check_target and the prefix check above make `path` start with "/" and hold nothing a
        # hop would normalise, so the upstream's scheme, host and base path cannot change.
        target = path + (f"?{query}" if query else "")
        data: bytes | io.BytesIO | None = None
        if body:
            data = io.BytesIO(body) if len(body) > _BODY_AS_FILE else body
        origin = self._origins[spec.name]
        try:
            if origin is None:
                raise UpstreamError(f"the {spec.name} upstream setting is not an http(s) URL")
            upstream = await pool.request(origin, request.method, target, forward, data)
        except asyncio.CancelledError:
            self._finish(capture, Outcome.CLIENT_ABORT, "client went away before upstream answered", 0, t0)
            raise
        except TimeoutError as error:
            # Connecting, or waiting for the answer's headers: the error says which.
            detail = f"upstream timed out: {Scrubber(credential).text(str(error))}"
            self._finish(capture, Outcome.UPSTREAM_UNREACHABLE, detail, 504, t0)
            return provider_error(spec, 504, GatewayError.TIMEOUT,
                                  "The gateway timed out reaching the upstream API.")
        except UpstreamError as error:
            # An error's text can quote the URL, and a Gemini key can ride in its query.
            reason = Scrubber(credential).text(str(error))
            detail = f"upstream unreachable: {type(error).__name__}: {reason}"
            self._finish(capture, Outcome.UPSTREAM_UNREACHABLE, detail, 502, t0)
            logger.warning("exchange %s: %s", capture.exchange_id, detail)
            return provider_error(spec, 502, GatewayError.UPSTREAM,
                                  "The gateway could not reach the upstream API.")
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
        sse = content_type.startswith("text/event-stream")
        # A stream for capture: server-sent events, or a provider's JSON stream (Gemini's array).
        streamed = sse or (status < 300 and spec.streams_as_json(path, query))
        size = upstream.content_length
        # The answer's one filter (enforcement), chosen per call: None relays it as it came.
        answer_filter = None
        if self._enforcer is not None:
            answer_filter = await self._enforcer.response_filter(capture, status, upstream.headers,
                                                                 out_headers)
        if not streamed and (
            (size is not None and size <= _BUFFER_LIMIT) or request.method == "HEAD" or status in (204, 304)
        ):
            return await self._relay_whole(request, upstream, capture, out_headers, outcome, t0,
                                           answer_filter)
        return await self._relay_stream(request, upstream, capture, out_headers, outcome, t0, streamed,
                                        answer_filter)

    async def _relay_whole(self, request: Request, upstream: UpstreamResponse, capture: Capture,
                           out_headers: CIMultiDict[str], outcome: Outcome, t0: float,
                           answer_filter: ResponseFilter | None = None) -> StreamResponse:
        try:
            data = await upstream.read()
        except asyncio.CancelledError:
            upstream.close()
            self._finish(capture, Outcome.CLIENT_ABORT, "client went away while upstream answered", 0, t0)
            raise
        except UpstreamError as error:
            upstream.close()
            detail = f"upstream dropped the response: {type(error).__name__}"
            self._finish(capture, Outcome.UPSTREAM_DROPPED, detail, 502, t0)
            return provider_error(capture_spec(capture), 502, GatewayError.UPSTREAM,
                                  "The upstream API closed the connection mid-response.")
        finally:
            upstream.release()
        capture.add_chunk(data)
        self._remember_response(capture, data)
        if answer_filter is not None:
            data = answer_filter.whole(data)
        if request.method == "HEAD":
            response = StreamResponse(status=upstream.status, reason=upstream.reason, headers=out_headers)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
        else:
            response = Response(status=upstream.status, reason=upstream.reason, headers=out_headers,
                                body=data)
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError) as error:
            self._finish(capture, Outcome.CLIENT_ABORT, "client went away before the response was sent",
                         0, t0)
            if isinstance(error, asyncio.CancelledError):
                raise
            return response
        self._finish(capture, outcome, "", upstream.status, t0)
        return response

    async def _relay_stream(self, request: Request, upstream: UpstreamResponse, capture: Capture,
                            out_headers: CIMultiDict[str], outcome: Outcome, t0: float,
                            streamed: bool,
                            answer_filter: ResponseFilter | None = None) -> StreamResponse:
        capture.streamed = streamed
        response = StreamResponse(status=upstream.status, reason=upstream.reason, headers=out_headers)
        if upstream.content_length is not None and answer_filter is None:
            response.content_length = upstream.content_length
        metrics = self._metrics
        metrics.active_streams.inc()
        try:
            await response.prepare(request)
            chunks = upstream.iter_chunks().__aiter__()
            head = b"" if self._chains_response(capture) else None
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except UpstreamError as error:
                    return self._upstream_dropped(request, upstream, capture, response, error, t0)
                if answer_filter is None:
                    await response.write(chunk)
                elif out := answer_filter.feed(chunk):
                    await response.write(out)
                capture.add_chunk(chunk)
                if head is not None:
                    head += chunk
                    if self._remember_response(capture, head) or len(head) >= RESPONSE_ID_SCAN_BYTES:
                        head = None
            if answer_filter is not None and (out := answer_filter.end()):
                await response.write(out)
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

    def _upstream_dropped(self, request: Request, upstream: UpstreamResponse, capture: Capture,
                          response: StreamResponse, error: BaseException,
                          t0: float) -> StreamResponse:
        upstream.close()
        # Cut the client's connection too: a clean end of the chunked body would tell it the
        # response was whole.
        request.abort()
        detail = f"upstream dropped the stream: {type(error).__name__}"
        self._finish(capture, Outcome.UPSTREAM_DROPPED, detail, upstream.status, t0)
        return response

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _chains_response(capture: Capture) -> bool:
        """Whether this call's reply is a Responses API response a later call may continue."""
        return (capture.method == "POST" and capture.status == 200 and bool(capture.session_id)
                and capture.path.endswith("/responses"))

    def _remember_response(self, capture: Capture, head: bytes) -> bool:
        """Remembers the session of the Responses reply whose first bytes are `head`; True once done."""
        if not self._chains_response(capture):
            return False
        response_id = response_id_in(head)
        if response_id:
            self._chains.remember(capture.agent_hash, response_id, capture.session_id)
        return bool(response_id)

    def _too_large(self, spec: ProviderSpec) -> Response:
        return provider_error(spec, 413, GatewayError.TOO_LARGE,
                          f"Request exceeds the gateway's limit of {self._max_request_bytes} bytes.")

    def _done(self, response: Response, t0: float) -> Response:
        self._metrics.count_request(response.status)
        self._metrics.latency.observe(time.perf_counter() - t0)
        return response

    def _finish(self, capture: Capture, outcome: Outcome, detail: str, status: int, t0: float) -> None:
        capture.finish(outcome, detail)
        self._metrics.count_request(status)
        self._metrics.latency.observe(time.perf_counter() - t0)
        self._submit(capture)
