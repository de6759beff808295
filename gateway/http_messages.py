"""The request and the responses of the gateway's HTTP/1.1 server (server.py), as the app sees them.

A handler gets a `Request` (method, target as sent, headers, `read()` for the body) and returns
a `Response` (sent whole, in one write) or a `StreamResponse` it has prepared and written chunk
by chunk (`write()` waits while the client reads slower than the gateway writes). The framing
of each (Content-Length, chunked, none for HEAD/1xx/204/304) is decided here; the connection
(`Wire`: server.py's `_Connection`) writes the head and the bytes.
"""

from __future__ import annotations

import asyncio
import http
import json
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Protocol
from urllib.parse import unquote

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["REASONS", "BadRequestBody", "BodyTimeout", "BodyTooLarge", "Request", "RequestBodyError",
           "Response", "StreamResponse", "Wire", "http_date", "json_response"]

REASONS = {status.value: status.phrase for status in http.HTTPStatus}
_NO_BODY_STATUS = frozenset({204, 304})


class Wire(Protocol):
    """What a request and its response need of their connection."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def head(self, status: int, reason: str | None, headers: CIMultiDict[str],
             framing: list[tuple[str, str]], request: Request) -> bytes: ...

    def reading_body(self, request: Request) -> None: ...

    def abort(self) -> None: ...

    @property
    def body_timeout(self) -> float: ...


class RequestBodyError(Exception):
    """The request's body cannot be read whole; the message says why (for the client), `status`
    is the answer's."""

    status = 400


class BodyTooLarge(RequestBodyError):
    """The request body is larger than the server takes."""

    status = 413


class BadRequestBody(RequestBodyError):
    """The request body is not framed as HTTP/1.1 has it (a bad chunk size, say)."""


class BodyTimeout(RequestBodyError):
    """No byte of the request body came for the server's body timeout."""

    status = 408


class Request:
    """One request as the handler sees it."""

    __slots__ = ("_body", "_buffered", "_conn", "_continue", "_waiter", "answered", "body_done",
                 "content_length", "error", "headers", "keep_alive", "method", "raw_path", "received",
                 "too_large", "version")

    def __init__(self, conn: Wire, method: str, raw_path: str, headers: CIMultiDictProxy[str],
                 version: str, keep_alive: bool, expect_continue: bool) -> None:
        self._conn = conn
        self.method = method
        #: The request target exactly as sent (str, surrogate escapes for bytes that are not UTF-8).
        self.raw_path = raw_path
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        length = headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self._continue = expect_continue
        self._body: list[bytes] = []
        self._buffered = 0
        self.received = 0
        self.too_large = False
        self.body_done = False
        #: Whether the response's head was written (a handler failing after it cannot send a 500).
        self.answered = False
        self.error: RequestBodyError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def path(self) -> str:
        """The target's path, percent-decoded (what routing reads; the relay forwards `raw_path`)."""
        path = self.raw_path.partition("?")[0]
        return unquote(path, errors="surrogateescape") if "%" in path else path

    async def read(self) -> bytes:
        """The whole body (b"" when none); raises `RequestBodyError` when it cannot be had whole."""
        conn = self._conn
        if self._continue:
            self._continue = False
            if not self.body_done and not self.too_large:
                conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.reading_body(self)
        while not self.body_done and self.error is None and not self.too_large:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(conn.body_timeout, self._timed_out, conn.body_timeout)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self.too_large:
            raise BodyTooLarge("the request body is too large")
        if self.error is not None:
            raise self.error
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body = [body]
        return body

    def _timed_out(self, timeout: float) -> None:
        self.error = BodyTimeout(f"no byte of the request body came for {timeout:g} s")
        self.wake()

    def abort(self) -> None:
        """Cuts the client's connection (no clean end of a stream: the client knows it was cut)."""
        self._conn.abort()

    # ------------------------------------------------------------------ fed by the connection

    def feed(self, data: bytes, max_body: int) -> None:
        self.received += len(data)
        if self.too_large:
            return
        if self.received > max_body:
            self.too_large = True
            self._body = []
            self._buffered = 0
        else:
            self._body.append(data)
            self._buffered += len(data)
        self.wake()

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class StreamResponse:
    """A response written as it is produced: `prepare(request)`, `write(chunk)`..., `write_eof()`."""

    def __init__(self, status: int = 200, reason: str | None = None,
                 headers: Iterable[tuple[str, str]] | CIMultiDict[str] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.headers: CIMultiDict[str] = (headers if isinstance(headers, CIMultiDict)
                                          else CIMultiDict(headers or ()))
        self.content_length: int | None = None
        self._request: Request | None = None
        self._chunked = False
        self._bodiless = False
        self._eof = False

    @property
    def prepared(self) -> bool:
        return self._request is not None

    async def prepare(self, request: Request) -> None:
        if self._request is not None:
            return
        self._request = request
        self._bodiless = request.method == "HEAD" or self.status in _NO_BODY_STATUS or self.status < 200
        length = self.content_length
        framing: list[tuple[str, str]] = []
        if self.status in _NO_BODY_STATUS or self.status < 200:
            pass
        elif length is not None:
            framing.append(("Content-Length", str(length)))
        elif not self._bodiless:
            if request.version == "1.1":
                self._chunked = True
                framing.append(("Transfer-Encoding", "chunked"))
            else:
                request.keep_alive = False  # HTTP/1.0: the body ends with the connection
        conn = request._conn
        conn.write(conn.head(self.status, self.reason, self.headers, framing, request))
        await conn.drain()

    async def write(self, data: bytes) -> None:
        request = self._request
        if request is None:
            raise RuntimeError("write() before prepare()")
        if not data or self._bodiless:
            return
        conn = request._conn
        if self._chunked:
            conn.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            conn.write(data)
        await conn.drain()

    async def write_eof(self) -> None:
        request = self._request
        if request is None or self._eof:
            return
        self._eof = True
        if self._chunked:
            request._conn.write(b"0\r\n\r\n")
            await request._conn.drain()


class Response(StreamResponse):
    """A response with its whole body, sent in one write."""

    def __init__(self, status: int = 200, reason: str | None = None,
                 headers: Iterable[tuple[str, str]] | CIMultiDict[str] | None = None, body: bytes = b"",
                 content_type: str | None = None) -> None:
        super().__init__(status, reason, headers)
        self.body = body
        if content_type is not None:
            self.headers["Content-Type"] = content_type

    async def prepare(self, request: Request) -> None:
        if self._request is not None:
            return
        self._request = request
        self._eof = True
        conn = request._conn
        bodiless = request.method == "HEAD" or self.status in _NO_BODY_STATUS or self.status < 200
        framing = [] if self.status in _NO_BODY_STATUS or self.status < 200 else [
            ("Content-Length", str(len(self.body) if self.content_length is None or not bodiless
                                   else self.content_length))]
        head = conn.head(self.status, self.reason, self.headers, framing, request)
        conn.write(head if bodiless or not self.body else head + self.body)
        await conn.drain()


def json_response(status: int, data: object) -> Response:
    return Response(status, body=json.dumps(data).encode(), content_type="application/json")



class _Date:
    """The Date header's value, formatted at most once a second."""

    value = b""
    second = -1

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.value = formatdate(second, usegmt=True).encode()
        return cls.value


def http_date() -> bytes:
    """The Date header's value now."""
    return _Date.now()
