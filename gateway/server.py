"""The gateway's HTTP/1.1 server toward the agents: asyncio Protocols, llhttp parsing (httptools).

It replaced aiohttp's server, the largest layer of the relay's CPU per call once the upstream
side was our own (docs/benchmarks.md, "Gateway"). `HttpServer` runs one async handler per
request; the handler gets a `Request` (method, target as sent, headers, body) and returns a
`Response` (sent whole) or a `StreamResponse` it has already prepared and written (both in
http_messages.py, re-exported here).

What it guarantees (aiohttp's server gave the relay the same, but where said):

- Keep-alive and pipelining: requests on one connection are handled one at a time, answered in
  the order they came; reading pauses while a request waits its turn. A request that closes the
  connection (HTTP/1.0, `Connection: close`) is the last read: what was pipelined after it is
  left unanswered, for the client to send again (aiohttp answered it with a 400).
- Request bodies framed by Content-Length, chunked, or none; `Expect: 100-continue` (HTTP/1.1)
  is answered when the handler first reads the body (a request refused before, for its size or
  credential, never has its body sent). A body over `max_body` makes `read()` raise
  `BodyTooLarge`. An answer given before the body is in says `Connection: close`: the rest is
  read and dropped (up to `linger` seconds) so the client gets the answer, then it closes.
- Parsed strictly (llhttp without leniencies): Content-Length with Transfer-Encoding, a
  duplicate or invalid Content-Length, a folded header line, a bad chunk size, a bare CR or LF,
  a NUL or other control byte in a header: a 400 naming the problem, and the connection closed;
  a transfer coding other than chunked: a 501 (RFC 9112 §6.1; llhttp took "gzip, chunked" as
  chunked). Nothing of such a request reaches a handler (a body that turns out malformed after
  its handler started makes `read()` raise `BadRequestBody`). The request line and each header
  field are bounded by `max_field` (414 / 431), at most 128 headers, the whole head by 16 x
  `max_field`. Nothing of a refused request is logged (it may hold a credential).
- No upgrade is granted: a request asking for one is served as it is, its body read (httptools
  skips it), and the connection goes on; after a CONNECT it closes.
- Slow clients: a head must arrive whole within `head_timeout` (else a 408), a body must not
  stall for `body_timeout` (`read()` raises `BodyTimeout`, a 408): nginx's defaults; aiohttp had
  neither. An idle connection closes after `keepalive_timeout`.
- Header bytes that are not UTF-8 are kept: names and values are str with surrogate escapes,
  and a response header's surrogate escapes are written back as the bytes they stand for.
- Response framing: Content-Length for a whole body; for a stream, its length when known, else
  chunked (HTTP/1.0: up to the close); no body for HEAD, 1xx, 204 and 304.
- Streams are written chunk by chunk as the handler writes them; `write()` waits while the
  client reads slower than the gateway writes (the transport's high-water mark). A client that
  goes away cancels its handler (the relay then closes the upstream request); so does one that
  half-closes, as aiohttp and nginx read it (its FIN cannot be told from a close).
- `shutdown(grace)`: stops accepting, closes idle connections, lets requests in flight finish
  (up to the grace), then cancels what is left and closes every connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from smoltbot.core.identity import KEY_HEADERS

from .http_messages import (
    REASONS,
    BadRequestBody,
    Request,
    StreamResponse,
    http_date,
)

__all__ = ["HttpServer"]

logger = logging.getLogger(__name__)

#: aiohttp's server bounds: headers per request, keep-alive idle time, lingering read after an answer.
_MAX_HEADERS = 128
_KEEPALIVE = 3630.0
_LINGER = 10.0
#: nginx's client_header_timeout and client_body_timeout (aiohttp's server had neither: a client
#: could trickle a head or a body for ever, holding its connection and, for a body, its handler).
_HEAD_TIMEOUT = 60.0
_BODY_TIMEOUT = 60.0
#: Fields a request may carry once, refused when repeated, as aiohttp's server refused them (its
#: SINGLETON_HEADERS): with two Host or Content-Type fields the gateway could read one and the
#: upstream act on the other, so the record would say what the call did not do.
#: So may the headers an agent's key is read from (`KEY_HEADERS`).
_SINGLETONS = frozenset({b"content-length", b"content-location", b"content-range", b"content-type",
                         b"etag", b"host", b"max-forwards", b"server", b"transfer-encoding",
                         b"user-agent", *(name.encode() for name in KEY_HEADERS)})
#: A request body buffered while its handler does not read it pauses reading at this size.
_BODY_HIGH_WATER = 256 * 1024


class _Refused(Exception):
    """A request the server answers itself (status, message) before any handler sees it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[Request], Awaitable[StreamResponse]]


class _Connection(asyncio.Protocol):
    """One client connection: requests parsed as they come, handled one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._parsing: Request | None = None
        self._current: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._pipeline: collections.deque[Request] = collections.deque()
        #: A refusal found while another request was being handled: answered after it, then closed.
        self._refusal: _Refused | None = None
        #: Bytes from here on are not read: past a CONNECT or upgrade, a refusal, a malformed body.
        self._broken = False
        self._lingering = False
        self._closing = False
        self.lost = False
        self._paused_reading = False
        self._paused_writing = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        #: The framing of a request asking to upgrade whose body httptools would skip, and
        #: whether that framing is being fed to a fresh parser (`_read_body_past_upgrade`).
        self._upgrade_framing: bytes | None = None
        self._synthetic = False
        #: A request that closes the connection was read whole: nothing after it is read.
        self._last_request_in = False
        #: A head has begun and not ended (the head timeout runs); a request ended in this read.
        self._in_head = self._ended_in_read = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are no subclass
        self._server.connections.add(self)
        if self._server.closing:
            transport.close()
            return
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return  # past a CONNECT or an upgrade, or past a refused request: not HTTP we read
        if self._lingering:
            self._linger_feed(data)
            return
        try:
            self._ended_in_read = False
            self._parser.feed_data(data)
            if self._in_head:
                # Counted after the feed, for the head not yet whole alone (a read that holds
                # requests and the start of another is no long head): httptools hands a header
                # over only once it is whole, so a head that never ends is bounded here, not
                # after it is in memory. A head begun in this read after another request ended
                # in it: what of it was parsed.
                if self._head_bytes < 0 and self._ended_in_read:
                    self._head_bytes = len(self._url) + sum(len(n) + len(v) for n, v in self._headers)
                elif self._head_bytes < 0:
                    self._head_bytes = len(data)
                else:
                    self._head_bytes += len(data)
                if self._idle_timer is None and self._current is None:
                    self._arm_idle()  # a head left unfinished by a read: the head timeout runs
                if self._head_bytes > 16 * self._server.max_field:
                    raise _Refused(431, "the request's header block is too large")
        except httptools.HttpParserUpgrade as upgrade:
            if self._upgrade_framing is not None:
                self._read_body_past_upgrade(data[upgrade.args[0]:])
                return
            # CONNECT, or an Upgrade the gateway never grants: the request is answered, the
            # connection closed after it (what follows is not HTTP).
            self._broken = True
            self._keep_alive_off()
        except httptools.HttpParserError as error:
            if self._last_request_in:
                # Bytes after a request that closes the connection (HTTP/1.0, Connection: close)
                # are dropped unanswered: a 400 would read as that request's answer, and a
                # client that pipelined it must send it again on a new connection.
                return
            cause = error.__context__
            self._refuse(cause if isinstance(cause, _Refused)
                         else _Refused(400, _parse_error_message(error)))
        except _Refused as refused:
            self._refuse(refused)

    def _read_body_past_upgrade(self, rest: bytes) -> None:
        """An Upgrade (never granted) on a request with a body: httptools skips the body of any
        request that asks to upgrade, so the request would reach its handler with none (aiohttp's
        parser read it). A fresh parser is given the request's framing alone, then the bytes
        after the head: the body goes to the request, and what follows is parsed as HTTP again."""
        framing, self._upgrade_framing = self._upgrade_framing or b"", None
        self._parser = httptools.HttpRequestParser(self)
        self._synthetic = True
        try:
            self._parser.feed_data(b"POST / HTTP/1.1\r\n%b\r\n\r\n" % framing)
        finally:
            self._synthetic = False
        if rest:
            self.data_received(rest)

    def eof_received(self) -> bool:
        return False  # a client that half-closes has gone away (see the module's docstring)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._server.connections.discard(self)
        self._cancel_idle()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("the client closed the connection"))
        self._pipeline.clear()
        if self._task is not None and not self._task.done():
            # A client that goes away cancels its handler, and so its upstream request.
            self._task.cancel()

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self._synthetic:
            return
        self._url = b""
        self._headers = []
        self._head_bytes = -1  # begun in this read (see data_received)
        self._in_head = True
        self._cancel_idle()

    def on_url(self, url: bytes) -> None:
        if self._synthetic:
            return
        self._url += url
        if len(self._url) > self._server.max_field:
            raise _Refused(414, f"the request target is longer than {self._server.max_field} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._synthetic:
            return
        max_field = self._server.max_field
        if len(value) > max_field or len(name) > max_field:
            raise _Refused(431, f"a header field is longer than {max_field} bytes")
        if len(self._headers) >= _MAX_HEADERS:
            raise _Refused(431, f"more than {_MAX_HEADERS} header fields")
        # llhttp strips the whitespace before a value, not after it (RFC 9110 §5.5: not part of it).
        self._headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        if self._synthetic:
            return
        if self._lingering or self._broken:
            self._in_head = False
            return  # a request after one answered early: never handled (the connection closes)
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise _Refused(400, f"HTTP/{version} is not served: the gateway speaks HTTP/1.1 (and 1.0)")
        headers = CIMultiDict[str]()
        expect = False
        once: set[bytes] = set()
        for name, value in self._headers:
            text = value.decode("utf-8", "surrogateescape")
            headers.add(name.decode("utf-8", "surrogateescape"), text)
            lowered = name.lower()
            if lowered in _SINGLETONS:
                if lowered in once:
                    raise _Refused(400, f"the {name.decode('ascii', 'replace')} header appears twice; "
                                        "it may appear once (RFC 9110)")
                once.add(lowered)
            if lowered == b"expect" and text.lower() == "100-continue":
                expect = version == "1.1"  # never a 1xx to an HTTP/1.0 client (RFC 9110 §10.1.1)
            elif lowered == b"transfer-encoding" and any(
                    coding.strip().lower() != "chunked" for coding in text.split(",")):
                # llhttp reads "gzip, chunked" as chunked; relayed without its header the body
                # would reach the upstream, and the record, still gzip-coded (RFC 9112 §6.1).
                raise _Refused(501, "the gateway takes no transfer coding but chunked: send the body "
                                    "as it is, or say its compression with Content-Encoding")
        self._headers = []
        self._in_head = False  # the head is over: its bound no longer applies
        self._cancel_idle()
        request = Request(self, parser.get_method().decode("ascii", "replace"),
                          self._url.decode("utf-8", "surrogateescape"), CIMultiDictProxy(headers),
                          version, parser.should_keep_alive() and not self._server.closing,
                          expect)
        if parser.should_upgrade() and request.method != "CONNECT":
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._upgrade_framing = b"Transfer-Encoding: chunked"
            elif request.content_length:
                self._upgrade_framing = b"Content-Length: %d" % request.content_length
        self._parsing = request
        if self._current is None:
            self._start(request)
        else:
            self._pipeline.append(request)
            self._pause_reading()  # one request waiting its turn is enough

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        if request is None:
            return
        request.feed(body, self._server.max_body)
        if (request._buffered > _BODY_HIGH_WATER and request is not self._reading
                and not request.too_large):
            self._pause_reading()

    def on_message_complete(self) -> None:
        if self._upgrade_framing is not None:
            return  # the body was skipped: read by the parser that follows (_read_body_past_upgrade)
        request, self._parsing = self._parsing, None
        self._ended_in_read = True
        if request is not None:
            request.body_done = True
            request.wake()
            if not request.keep_alive:
                self._last_request_in = self._broken = True

    # ------------------------------------------------------------------ handling

    _reading: Request | None = None

    @property
    def body_timeout(self) -> float:
        return self._server.body_timeout

    def reading_body(self, request: Request) -> None:
        """The handler reads `request`'s body: bytes may flow until it is in."""
        self._reading = request
        if request is self._parsing or not request.body_done:
            self._resume_reading()

    def _start(self, request: Request) -> None:
        self._current = request
        self._task = self._loop.create_task(self._handle(request))

    async def _handle(self, request: Request) -> None:
        try:
            response = await self._server.handler(request)
            if not response.prepared:
                await response.prepare(request)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            self.abort()  # the client went away (or the server stops after its grace)
            return
        except Exception:
            logger.exception("the gateway's handler failed")
            self._fail_request(request)
            return
        self._done(request)

    def _fail_request(self, request: Request) -> None:
        """A handler bug: a 500 if nothing was sent yet, else the connection is cut."""
        if self.lost:
            return
        if not request.answered:
            self.write(_plain(500, "the gateway failed to handle the request", close=True))
        self.close()

    def _done(self, request: Request) -> None:
        self._current = None
        self._task = None
        self._reading = None
        if self.lost:
            return
        if not request.body_done and not self._broken:
            # Answered before its body was read whole (a 413, a 401): the rest is read and dropped
            # so that the client, still writing, gets the answer; then the connection closes.
            self._linger()
            return
        if self._pipeline and request.keep_alive and not self._closing and not self._server.closing:
            self._start(self._pipeline.popleft())
            if not self._pipeline:
                self._resume_reading()
            return
        if self._refusal is not None:
            # What came after the requests answered could not be parsed: said last, in order.
            refusal, self._refusal = self._refusal, None
            self._answer_and_drop(refusal)
            return
        if not request.keep_alive or self._closing or self._server.closing:
            if self._broken:
                self._drop_rest()  # the client may still be writing what could not be parsed
            else:
                self.close()
            return
        self._resume_reading()
        self._arm_idle()

    def _refuse(self, refused: _Refused) -> None:
        # Nothing of the request is logged: its head may hold a credential.
        logger.info("refused a request it could not read (%d: %s)", refused.status, refused)
        self._broken = True
        self._pause_reading()
        parsing, self._parsing = self._parsing, None
        if parsing is not None:
            # Its head was fine, its body is not: its handler's read() says so (in the provider's
            # shape), and the connection closes after its answer.
            parsing.error = BadRequestBody(f"the request body is malformed: {refused}")
            parsing.body_done = True
            parsing.wake()
            self._keep_alive_off()
            return
        if self._current is not None:
            self._refusal = refused  # answered after the requests before it, in order
            return
        self._answer_and_drop(refused)

    def _answer_and_drop(self, refused: _Refused) -> None:
        """Answers a refusal, then reads and drops what the client still sends (for up to
        `linger` seconds) before closing: closing with its bytes unread would reset the
        connection, and the client could lose the answer."""
        self.write(_plain(refused.status, str(refused), close=True))
        self._drop_rest()

    def _drop_rest(self) -> None:
        self._broken = True
        self._resume_reading()
        transport = self.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(self._server.linger, self.close)

    def _keep_alive_off(self) -> None:
        self._closing = True
        for request in (self._current, *self._pipeline):
            if request is not None:
                request.keep_alive = False

    # ------------------------------------------------------------------ lingering, idle, closing

    def _linger(self) -> None:
        self._lingering = True
        self._pipeline.clear()
        if self._parsing is not None:
            self._parsing.too_large = True  # dropped as it comes
        self._resume_reading()
        self._loop.call_later(self._server.linger, self.close)

    def _linger_feed(self, data: bytes) -> None:
        request = self._parsing
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            return
        if request is not None and request.body_done:
            self.close()

    def _arm_idle(self) -> None:
        """Nothing in flight: the connection waits on the client, for a new request (up to the
        keep-alive timeout, then closed) or for the rest of a head (up to the head timeout, then
        a 408: a client that trickles its head must not hold the connection for ever)."""
        self._cancel_idle()
        if self._in_head:
            self._idle_timer = self._loop.call_later(self._server.head_timeout, self._head_timed_out)
        else:
            self._idle_timer = self._loop.call_later(self._server.keepalive_timeout, self.close)

    def _head_timed_out(self) -> None:
        self._idle_timer = None
        if self._in_head and self._current is None and not (self._broken or self._lingering or self.lost):
            self._refuse(_Refused(408, f"the request's head did not arrive whole within "
                                       f"{self._server.head_timeout:g} s"))

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    @property
    def idle(self) -> bool:
        return self._current is None and self._parsing is None

    def shutdown(self) -> None:
        """The server stops: close now when idle, else after the request in flight."""
        self._keep_alive_off()
        if self.idle:
            self.close()

    def close(self) -> None:
        self._cancel_idle()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._cancel_idle()
        if self.transport is not None:
            self.transport.abort()

    def _pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None and not self.lost:
            self._paused_reading = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._paused_reading and self.transport is not None and not self.lost:
            self._paused_reading = False
            self.transport.resume_reading()

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("the client closed the connection")
        if not self._paused_writing:
            return
        self._drain_waiter = self._loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    def head(self, status: int, reason: str | None, headers: CIMultiDict[str],
             framing: list[tuple[str, str]], request: Request) -> bytes:
        """The status line and headers (framing and Connection ours; a header field holding CR or
        LF is dropped: it would let a value write headers, or a response, of its own)."""
        request.answered = True
        # Answered before its body is in (a 401, a 413): the rest is read and dropped, then the
        # connection closes (`_done`), so the answer says so, or the client would send another.
        keep_alive = (request.keep_alive and request.body_done and not self._closing
                      and not self._server.closing)
        if not keep_alive:
            request.keep_alive = False
        if reason is None:
            reason = REASONS.get(status, "")
        lines = [f"HTTP/1.1 {status} {reason}\r\n"]
        date = False
        for name, value in headers.items():
            low = name.lower()
            if low in ("content-length", "transfer-encoding", "connection"):
                continue
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                logger.warning("a response header %r holding a line break was not sent", name)
                continue
            if low == "date":
                date = True
            lines.append(f"{name}: {value}\r\n")
        for name, value in framing:
            lines.append(f"{name}: {value}\r\n")
        if not keep_alive:
            lines.append("Connection: close\r\n")
        elif request.version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        head = "".join(lines).encode("utf-8", "surrogateescape")
        return head + (b"\r\n" if date else b"Date: " + http_date() + b"\r\n\r\n")


def _plain(status: int, message: str, *, close: bool) -> bytes:
    body = f"{REASONS.get(status, 'Error')}: {message}\n".encode()
    return (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "")).encode() \
        + b"Date: " + http_date() + b"\r\n\r\n" + body


def _parse_error_message(error: httptools.HttpParserError) -> str:
    """llhttp's reason (a fixed text, never the request's bytes) with a word on what to fix."""
    text = str(error) or type(error).__name__
    return (f"the request is not HTTP/1.1 the gateway can read unambiguously ({text}): a header "
            "or chunk framed two ways, a control character or a bare CR or LF is refused")


class HttpServer:
    """Serves `handler` on a TCP port (`start`), until `shutdown`."""

    def __init__(self, handler: Handler, *, max_field: int, max_body: int,
                 keepalive_timeout: float = _KEEPALIVE, linger: float = _LINGER,
                 head_timeout: float = _HEAD_TIMEOUT, body_timeout: float = _BODY_TIMEOUT) -> None:
        self.handler = handler
        self.head_timeout = head_timeout
        #: A handler reading a body gets a 408 (`BodyTimeout`) after this long without a byte of it.
        self.body_timeout = body_timeout
        self.max_field = max_field
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.linger = linger
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024) -> int:
        """Listens on host:port (0: any free port; `reuse_port`: SO_REUSEPORT, shared with sibling
        processes) and returns the port."""
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), host, port, backlog=backlog, reuse_port=reuse_port or None)
        sockets = self._server.sockets
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def shutdown(self, grace: float) -> None:
        """Stops accepting, lets requests in flight finish for up to `grace` seconds, then closes
        every connection (idempotent)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(not conn.idle for conn in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        tasks = [conn._task for conn in self.connections if conn._task is not None and not conn._task.done()]
        for conn in list(self.connections):
            conn.abort()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._server = None
