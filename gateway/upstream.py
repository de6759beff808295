"""The relay's HTTP/1.1 client to the upstream APIs: asyncio Protocols, llhttp parsing (httptools),
a keep-alive pool of our own. It replaced aiohttp's ClientSession, which cost the gateway more CPU
per call than anything else it does (docs/benchmarks.md, "Gateway"); the response object offers
exactly what `proxy.py` used of aiohttp's (status, reason, headers, content_length, read(), chunk
iteration, close(), release()).

What it keeps of the relay's guarantees:

- Bodies are framed as the upstream framed them: Content-Length, chunked, or up to the close of
  the connection; a 1xx interim answer is passed over; 204, 304 and any answer to HEAD have no
  body (llhttp knows the first two; it does not know the request's method, so a HEAD answer ends
  at its headers here and its connection is closed rather than reused).
- Header values are sent and read as bytes: a value with non-UTF-8 bytes is kept exactly (str
  with surrogate escapes on our side, as the gateway's server hands them to the relay).
- Parsed as leniently as aiohttp's client parsed answers (folded header lines, bare LF, spaces
  after a chunk size; whitespace after a value dropped, a NUL refused), and no more: conflicting
  or duplicate lengths, Content-Length with chunked, a 101 nobody asked for and an over-long
  header block are an `UpstreamProtocolError` (the agent gets a 502), and the connection is closed.
- Bytes past the end of an answer (past its Content-Length, a 204 or 304 body, bytes on an idle
  connection) close its connection: they never become the next call's answer.
- An answer that comes while a large request body is still being written (a 413, a 401) stops
  the write and is handed over at once; its connection is not reused.
- A pooled connection the upstream closed while it was idle (the keep-alive race): a request that
  fails on a reused connection before any byte of the answer is sent again once on a fresh
  connection, when nothing can have reached the upstream (the connection was found closed before
  the write) or the method is idempotent (what aiohttp does).
- An upstream that drops the connection mid-answer surfaces as `UpstreamDisconnected` from
  `read()` or the chunk iteration; a response closed before its end (`close()`: the client went
  away) closes its connection, which never goes back to the pool.
- Timeouts: `connect` for the TCP (and TLS) connection, `read` for each wait for the upstream's
  next byte from the moment the request's head is written (aiohttp's sock_connect and
  sock_read); while a body is written, the upstream taking it counts as a byte.
- Large request bodies given as a file-like object are written in pieces, waiting for the socket
  to drain between them.
"""

from __future__ import annotations

import asyncio
import collections
import io
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["Origin", "UpstreamDisconnected", "UpstreamError", "UpstreamPool", "UpstreamProtocolError",
           "UpstreamResponse", "UpstreamTimeout", "UpstreamUnreachable"]

#: Methods a request may be sent again for after a keep-alive race (RFC 9110 §9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: Answer bytes buffered for a reader that is slower than the upstream before reading pauses.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
#: A file-like request body is written in pieces of this size.
_BODY_PIECE = 256 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached or broke the exchange."""


class UpstreamUnreachable(UpstreamError):
    """No connection to the upstream (refused, no route, DNS, TLS handshake)."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The upstream did not connect, or sent nothing for the read timeout."""


class UpstreamDisconnected(UpstreamError):
    """The upstream closed the connection before the end of its answer."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer is not HTTP/1.1 the parser accepts."""


@dataclass(frozen=True)
class Origin:
    """Where one upstream setting points: the pool key, the Host header, the base path."""

    scheme: str
    host: str
    port: int
    #: The setting's path (no trailing slash): request paths are appended to it.
    base_path: str
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http(s)://host[:port][/path], not {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        return cls(parts.scheme, host, port, parts.path, host_header)


class _Connection(asyncio.Protocol):
    """One connection to the upstream; it carries one exchange at a time (no pipelining)."""

    def __init__(self, pool: UpstreamPool, origin: Origin, max_field_size: int) -> None:
        self._pool = pool
        self.origin = origin
        self._max_field_size = max_field_size
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        # What aiohttp's response parser forgave (its lax mode), forgiven here too: folded header
        # lines, a bare LF for CRLF, spaces after a chunk size. Conflicting or duplicate lengths
        # and Content-Length with Transfer-Encoding stay refused (a 502): a body framed two ways
        # could end where the upstream did not mean it to.
        self.parser.set_dangerous_leniencies(lenient_headers=True, lenient_optional_cr_before_lf=True,
                                             lenient_spaces_after_chunk_size=True)
        self.response: UpstreamResponse | None = None
        self.reused = False
        self.closed = False
        self.idle_since = 0.0
        #: Whether the current answer's body ends with the connection (neither sized nor chunked).
        self._close_delimited = False
        self._header_bytes = 0
        #: Bytes of the answer received before its headers ended (the parser buffers a header
        #: line whole before it hands it over: bounded here, not after it is in memory).
        self._head_bytes = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_ready: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused_writing = False
        self._reason = b""
        self._loop = asyncio.get_running_loop()
        #: One timer per exchange, moved on lazily: a byte only notes the time it came.
        self._read_timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are no subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            # Bytes nobody asked for (or an answer after its exchange was given up): not reusable.
            self.abort()
            return
        response.got_bytes = True
        self._last_read = self._loop.time()
        try:
            self.parser.feed_data(data)
            if not response.headers_done:
                # Counted after the feed: a read that holds the headers and the body after them
                # is no long header block.
                self._head_bytes += len(data)
                if self._head_bytes > 17 * self._max_field_size:
                    self._fail(UpstreamProtocolError("the headers of the upstream's answer are too long"))
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as error:
            # A callback's own refusal (raised below) rides as the parser error's context.
            cause = error.__context__
            self._fail(cause if isinstance(cause, UpstreamError)
                       else UpstreamProtocolError(f"unparseable answer from the upstream: {error}"))

    def eof_received(self) -> bool:
        return False  # close the transport: an upstream's half-close ends the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_read_timer()
        self._pool.forget(self)
        response = self.response
        if self._drained is not None and not self._drained.done():
            if response is not None and (response.finished or response.headers_done):
                self._drained.set_result(None)  # it answered before taking the whole body
            else:
                # A timeout or a refused answer says more than the close that followed it.
                error = response.error if response is not None else None
                self._drained.set_exception(
                    error or UpstreamDisconnected("the upstream closed the connection"))
        if response is None:
            return
        if self._close_delimited and exc is None and response.headers_done:
            self._end_of_message()
            return
        self._fail(UpstreamDisconnected(
            "the upstream closed the connection" + (f": {exc}" if exc else "")
            + ("" if response.headers_done else " before answering")))

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        # The upstream is taking the request body: a sign of life for the read timeout too.
        self._last_read = self._loop.time()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.response is not None and self.response.finished:
            raise UpstreamProtocolError("the upstream sent more than one answer")
        self._headers = []
        self._header_bytes = 0
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status  # llhttp hands a reason split across reads over in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp strips the whitespace before a value, not after it (RFC 9110 §5.5: not part of it).
        value = value.rstrip(b" \t")
        if b"\0" in value:
            # Lenient header parsing (above) lets a NUL through; aiohttp refused it, and so do we:
            # it would reach the agent's client in a header.
            raise UpstreamProtocolError(f"the upstream's header {name!r} holds a NUL byte")
        self._header_bytes += len(name) + len(value)
        if (len(value) > self._max_field_size or len(name) > self._max_field_size
                or self._header_bytes > 16 * self._max_field_size):
            raise UpstreamProtocolError("the headers of the upstream's answer are too long")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        response = self.response
        if status == 101:
            # The relay never asks for an upgrade (Upgrade is hop-by-hop and not forwarded): a
            # 101 is not an answer the agent could use, and what follows it is not HTTP.
            raise UpstreamProtocolError("the upstream switched protocols (101) unasked")
        if response is None or 100 <= status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the final one follows
        decoded = CIMultiDict[str]()
        sized = chunked = False
        for name, value in self._headers:
            text_name = name.decode("utf-8", "surrogateescape")
            text_value = value.decode("utf-8", "surrogateescape")
            decoded.add(text_name, text_value)
            low = name.lower()
            if low == b"content-length":
                sized = True
            elif low == b"transfer-encoding":
                # Chunked only when it is the last coding (RFC 9112 §6.3): "chunked, gzip" is
                # a body that ends with the connection, as llhttp reads it.
                chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        response.status = status
        response.reason = self._reason.decode("latin-1")
        response.headers = CIMultiDictProxy(decoded)
        response.headers_done = True
        bodiless = response.method == "HEAD" or status in (204, 304)
        self._close_delimited = not bodiless and not sized and not chunked
        if not self.parser.should_keep_alive() or self._close_delimited:
            response.reusable = False
        if self._head_ready is not None and not self._head_ready.done():
            self._head_ready.set_result(None)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # answered while the body was being written: stop writing
        if response.method == "HEAD":
            # llhttp would wait for the body the headers announce: the answer ends here, and the
            # connection (its parser now out of step) is not reused.
            response.reusable = False
            self._end_of_message()

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            response.feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or not response.headers_done:
            return  # the end of an interim answer
        self._end_of_message()

    # ------------------------------------------------------------------ the exchange

    def _end_of_message(self) -> None:
        response = self.response
        self._cancel_read_timer()
        if response is None:
            return
        response.finished = True
        response.wake()
        if not response.reusable:
            self.abort()

    def _fail(self, error: UpstreamError) -> None:
        response = self.response
        self._cancel_read_timer()
        if response is not None and not response.finished:
            response.error = error
            if self._head_ready is not None and not self._head_ready.done():
                self._head_ready.set_exception(error)
            response.wake()
        self.abort()

    def _arm_read_timer(self) -> None:
        self._last_read = self._loop.time()
        if self._read_timer is None:
            self._read_timer = self._loop.call_at(self._last_read + self._pool.read_timeout, self._read_due)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_due(self) -> None:
        if self.response is not None and self.response.paused:
            # Reading is paused for a slow reader: the upstream is not the one keeping us waiting.
            self._last_read = self._loop.time()
        due = self._last_read + self._pool.read_timeout
        if self._loop.time() < due:
            self._read_timer = self._loop.call_at(due, self._read_due)
            return
        self._read_timer = None
        self._fail(UpstreamTimeout(f"no byte from the upstream for {self._pool.read_timeout:g} s"))

    def abort(self) -> None:
        self.closed = True
        self._cancel_read_timer()
        if self.transport is not None:
            self.transport.abort()

    async def send(self, head: bytes, body: bytes | io.BytesIO | None, response: UpstreamResponse) -> None:
        """Writes the request and waits for the answer's headers."""
        self.response = response
        self._head_ready = asyncio.get_running_loop().create_future()
        self._head_bytes = 0
        transport = self.transport
        assert transport is not None
        if isinstance(body, io.BytesIO):
            transport.write(head)
            # Timed from the head on: an upstream that neither takes the body nor answers is a
            # timeout, not a call that hangs (resume_writing counts as a sign of life).
            self._arm_read_timer()
            try:
                await self._write_body(body, response, transport)
            except BaseException:
                if self._head_ready.done() and not self._head_ready.cancelled():
                    self._head_ready.exception()  # the same error, raised here: not left unretrieved
                raise
        elif body:
            transport.write(head + body)
        else:
            transport.write(head)
        response.written = True
        if not self.closed:
            self._arm_read_timer()
        await self._head_ready

    async def _write_body(self, body: io.BytesIO, response: UpstreamResponse,
                          transport: asyncio.Transport) -> None:
        while piece := body.read(_BODY_PIECE):
            if self.closed or response.headers_done:
                # Answered (a 413, a 401) before it took the whole body: the answer is relayed
                # now, as aiohttp did; the framing is broken for a next call.
                response.reusable = False
                return
            transport.write(piece)
            if self._paused_writing:
                self._drained = asyncio.get_running_loop().create_future()
                await self._drained

    def release(self) -> None:
        """The exchange is over: back to the pool when the answer was read whole and may be reused."""
        response, self.response = self.response, None
        self._head_ready = None
        if response is not None and response.finished and response.reusable and not self.closed:
            self.reused = True
            self._pool.give_back(self)
        else:
            self.abort()


class UpstreamResponse:
    """The upstream's answer, as the relay reads it (the subset of aiohttp's ClientResponse it used)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.headers_done = False
        self.finished = False
        self.reusable = True
        self.written = False
        self.got_bytes = False
        self.error: UpstreamError | None = None
        self.connection: _Connection | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    # ------------------------------------------------------------------ fed by the connection

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self.paused and self.connection is not None:
            transport = self.connection.transport
            if transport is not None:
                self.paused = True
                transport.pause_reading()
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ read by the relay

    async def _next(self) -> bytes | None:
        """The next piece of the body as it came; None at its end."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.finished:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self.paused and self._buffered < _LOW_WATER and self.connection is not None:
            self.paused = False
            transport = self.connection.transport
            if transport is not None and not self.connection.closed:
                transport.resume_reading()
        return data

    async def read(self) -> bytes:
        """The whole body (raises UpstreamError when the upstream broke it off)."""
        pieces = []
        while (piece := await self._next()) is not None:
            pieces.append(piece)
        return b"".join(pieces)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body piece by piece as it arrives (aiohttp's `content.iter_any()`)."""
        while (piece := await self._next()) is not None:
            yield piece

    def close(self) -> None:
        """Gives the exchange up: its connection is closed, never reused."""
        self.reusable = False
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.response = None
            connection.abort()

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if it was read whole."""
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.release()


class UpstreamPool:
    """Keep-alive connections per upstream origin, opened on demand (as many at once as calls in
    flight, as the aiohttp connector was configured), at most `max_idle_per_host` kept idle per
    origin, each for up to `keepalive_timeout` seconds."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, max_field_size: int,
                 keepalive_timeout: float = 30.0, max_idle_per_host: int = 128,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._max_field_size = max_field_size
        self._keepalive = keepalive_timeout
        self._max_idle = max_idle_per_host
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # Built on first use (it reads the system's CA bundle from disk), as aiohttp's was.
            self._ssl = ssl.create_default_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin, self._max_field_size), origin.host, origin.port,
                    ssl=tls, server_hostname=origin.host if tls else None)
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to {origin.host}:{origin.port} timed out "
                                  f"after {self.connect_timeout:g} s") from None
        except (OSError, ssl.SSLError) as error:
            raise UpstreamUnreachable(f"cannot connect to {origin.host}:{origin.port}: {error}") from error
        if self._closed:
            # close() ran while this connection was being made: it would outlive the pool.
            connection.abort()
            raise UpstreamError("the upstream pool is closed")
        self._open.add(connection)
        return connection

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if (connection.closed or transport is None or transport.is_closing()
                    or now - connection.idle_since > self._keepalive):
                connection.abort()
                continue
            return connection
        return None

    def give_back(self, connection: _Connection) -> None:
        if self._closed:
            connection.abort()
            return
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self._max_idle:
            connection.abort()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def request(self, origin: Origin, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes | io.BytesIO | None = None) -> UpstreamResponse:
        """Sends `method target` (a path with its query, already encoded) with `headers` (end to
        end ones; Host and Content-Length are set here) and returns once the answer's headers
        are in. The caller reads the body, then calls `release()` (or `close()` to give it up)."""
        if self._closed:
            raise UpstreamError("the upstream pool is closed")
        head = self._head(origin, method, target, headers, body)
        start = body.tell() if isinstance(body, io.BytesIO) else 0
        connection = self._take_idle(origin)
        if connection is None:
            connection = await self._connect(origin)
        while True:
            response = UpstreamResponse(method)
            response.connection = connection
            try:
                await connection.send(head, body, response)
            except UpstreamDisconnected:
                # The keep-alive race: a reused connection the upstream had closed. Sent again
                # on a fresh connection only when nothing can have reached the upstream, or
                # sending it twice is harmless.
                connection.abort()
                if (not self._closed and connection.reused and not response.got_bytes
                        and (not response.written or method in _IDEMPOTENT)):
                    if isinstance(body, io.BytesIO):
                        body.seek(start)
                    connection = await self._connect(origin)
                    continue
                raise
            except BaseException:
                connection.response = None
                connection.abort()
                raise
            return response

    @staticmethod
    def _head(origin: Origin, method: str, target: str, headers: Iterable[tuple[str, str]],
              body: bytes | io.BytesIO | None) -> bytes:
        lines = [f"{method} {origin.base_path}{target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        for name, value in headers:
            # The gateway's server refuses CR and LF in header fields today; this client does not
            # rely on that: a line break in a field would let a caller write a header of its own
            # choosing, or a second request, on a connection the next call reuses.
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise UpstreamProtocolError(f"refused to send the header {name!r}: it holds a line break")
            lines.append(f"{name}: {value}\r\n")
        if isinstance(body, io.BytesIO):
            length = len(body.getbuffer()) - body.tell()
        else:
            length = len(body) if body else 0
        # aiohttp's rule: an empty body is announced (Content-Length: 0) except for methods without one.
        if length or method not in ("GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"):
            lines.append(f"Content-Length: {length}\r\n")
        lines.append("\r\n")
        # Surrogate escapes are the bytes the server could not read as UTF-8: sent back as they came.
        return "".join(lines).encode("utf-8", "surrogateescape")

    async def close(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection.abort()
        self._open.clear()
        self._idle.clear()
