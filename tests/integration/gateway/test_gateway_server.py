"""The gateway's own HTTP/1.1 server (gateway/server.py) at the byte level, on raw sockets: the
contracts aiohttp's server gave the relay (keep-alive and pipelining order, body framings,
Expect: 100-continue, request-smuggling defences, size bounds, response framing, streams with
backpressure and client abort, graceful shutdown, SO_REUSEPORT), each against a small handler."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from smoltbot.gateway.http_messages import BodyTooLarge, Request, RequestBodyError, Response, StreamResponse
from smoltbot.gateway.server import HttpServer

pytestmark = pytest.mark.timeout(30)

MAX_FIELD = 1024
MAX_BODY = 64 * 1024


class App:
    """Echoes what it got; a few paths do something else (see `handle`)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.stream_writes = 0

    async def handle(self, request: Request) -> StreamResponse:
        self.seen.append(f"{request.method} {request.raw_path}")
        path = request.path
        if path == "/refuse-early":
            return Response(401, body=b"no")
        if path == "/head-echo":
            value = request.headers.get("x-note", "")
            return Response(200, headers=[("x-note", value)], body=b"ok")
        if path.startswith("/status/"):
            response = StreamResponse(int(path.rsplit("/", 1)[1]))
            response.content_length = 5
            await response.prepare(request)
            await response.write(b"hello")
            return response
        if path == "/stream":
            return await self._stream(request)
        if path == "/slow":
            await self.release.wait()
            return Response(200, body=b"slow done")
        if path == "/hang":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        try:
            body = await request.read()
        except BodyTooLarge:
            return Response(413, body=b"too large")
        except RequestBodyError as error:
            return Response(400, body=str(error).encode())
        return Response(200, body=b"%s %s %s" % (request.method.encode(), request.raw_path.encode(), body))

    async def _stream(self, request: Request) -> StreamResponse:
        response = StreamResponse(200, headers=[("content-type", "text/event-stream")])
        await response.prepare(request)
        try:
            if request.headers.get("x-mode") == "flood":
                while True:  # the client does not read: write() must wait, not buffer without end
                    await response.write(b"x" * 65536)
                    self.stream_writes += 1
            await response.write(b"data: one\n\n")
            await self.release.wait()
            await response.write(b"data: two\n\n")
            await response.write_eof()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return response


@pytest.fixture
async def app() -> App:
    return App()


@pytest.fixture
async def server(app: App) -> AsyncIterator[HttpServer]:
    running = HttpServer(app.handle, max_field=MAX_FIELD, max_body=MAX_BODY, linger=2.0)
    await running.start("127.0.0.1", 0)
    yield running
    await running.shutdown(1.0)


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response: status, headers (lower-case names), body (un-chunked)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if not size:
                break
            body += chunk[:-2]
    return status, headers, body


async def exchange(server: HttpServer, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    reader, writer = await connect(server)
    writer.write(data)
    try:
        return await read_response(reader)
    finally:
        writer.close()


async def closed(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionError):
        return await asyncio.wait_for(reader.read(1), 5) == b""
    return True


# ---------------------------------------------------------------- keep-alive, pipelining, bodies

async def test_pipelined_requests_are_answered_in_order_with_each_body_framing(server: HttpServer,
                                                                               app: App) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /a?x=1 HTTP/1.1\r\nHost: g\r\n\r\n"
                 b"POST /b HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n\r\nhello"
                 b"POST /c HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                 b"GET /slow HTTP/1.1\r\nHost: g\r\n\r\n"
                 b"POST /d HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n")
    assert (await read_response(reader))[2] == b"GET /a?x=1 "
    assert (await read_response(reader))[2] == b"POST /b hello"
    assert (await read_response(reader))[2] == b"POST /c abcde"
    await asyncio.sleep(0.1)
    assert app.seen[-1] == "GET /slow", "a request behind one in flight was handled before its turn"
    app.release.set()
    assert (await read_response(reader))[2] == b"slow done"
    status, headers, body = await read_response(reader)
    assert (status, body) == (200, b"POST /d ")
    assert b"connection" not in headers  # still keep-alive
    writer.write(b"GET /again HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert body == b"GET /again " and headers[b"connection"] == b"close"
    assert await closed(reader)
    writer.close()


async def test_http10_closes_unless_kept_alive_and_streams_to_the_close(server: HttpServer, app: App) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    _status, headers, body = await read_response(reader)
    assert body == b"GET /one " and headers[b"connection"] == b"keep-alive"
    app.release.set()
    writer.write(b"GET /stream HTTP/1.0\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert await asyncio.wait_for(reader.read(), 5) == b"data: one\n\ndata: two\n\n"
    writer.close()


async def test_expect_100_continue_is_answered_when_the_body_is_read(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: g\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"body")
    assert (await read_response(reader))[2] == b"POST /echo body"
    # Refused before its body is read: no 100, the final answer at once.
    writer.write(b"POST /refuse-early HTTP/1.1\r\nHost: g\r\nContent-Length: 4\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    status, _, body = await read_response(reader)
    assert (status, body) == (401, b"no")
    writer.close()


async def test_a_body_over_the_limit_is_refused_while_the_client_still_writes(server: HttpServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    big = b"y" * (4 * MAX_BODY)
    request = (b"POST /echo HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n%b\r\n0\r\n\r\n" % (len(big), big))
    # The whole request is written before anything is read (as a simple client does): the
    # server reads and drops the rest so that the write ends and the answer arrives.
    await asyncio.to_thread(sock.sendall, request)
    data = await asyncio.to_thread(sock.recv, 65536)
    assert data.startswith(b"HTTP/1.1 413 ") and data.endswith(b"too large"), data
    sock.close()


# ---------------------------------------------------------------- what is refused

SMUGGLING = {
    "content-length-and-chunked": b"POST /x HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate-content-length": b"POST /x HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\n"
                                b"Content-Length: 4\r\n\r\nabcd",
    "invalid-content-length": b"POST /x HTTP/1.1\r\nHost: g\r\nContent-Length: 3x\r\n\r\nabc",
    "signed-content-length": b"POST /x HTTP/1.1\r\nHost: g\r\nContent-Length: +3\r\n\r\nabc",
    "obs-fold": b"GET /x HTTP/1.1\r\nHost: g\r\nX-A: a\r\n b\r\n\r\n",
    "bare-lf": b"GET /x HTTP/1.1\nHost: g\n\n",
    "bare-cr-in-value": b"GET /x HTTP/1.1\r\nHost: g\r\nX-A: a\rb\r\n\r\n",
    "nul-in-value": b"GET /x HTTP/1.1\r\nHost: g\r\nX-A: a\x00b\r\n\r\n",
    "space-before-colon": b"GET /x HTTP/1.1\r\nHost: g\r\nX-A : b\r\n\r\n",
    "transfer-encoding-not-chunked-last": b"POST /x HTTP/1.1\r\nHost: g\r\n"
                                          b"Transfer-Encoding: chunked, gzip\r\n\r\n",
    "http-0.9": b"GET /x\r\n\r\n",
}


@pytest.mark.parametrize("case", list(SMUGGLING))
async def test_ambiguous_framing_is_a_400_that_says_why_and_reaches_no_handler(
        server: HttpServer, app: App, case: str) -> None:
    reader, writer = await connect(server)
    writer.write(SMUGGLING[case])
    status, headers, body = await read_response(reader)
    assert status == 400 and headers[b"connection"] == b"close", (status, body)
    assert b"unambiguously" in body or b"HTTP/0.9 is not served" in body, body
    assert app.seen == []
    assert await closed(reader)
    writer.close()


async def test_a_bad_chunk_size_is_refused_by_the_handler_reading_the_body(server: HttpServer) -> None:
    status, headers, body = await exchange(
        server, b"POST /x HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
    assert status == 400 and b"malformed" in body and headers[b"connection"] == b"close"


async def test_garbage_after_a_good_request_is_answered_after_it(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /good HTTP/1.1\r\nHost: g\r\n\r\nGE{T} / HTTP/1.1\r\n\r\n")
    assert (await read_response(reader))[2] == b"GET /good "
    assert (await read_response(reader))[0] == 400
    writer.close()


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /" + b"u" * MAX_FIELD + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"h" * (MAX_FIELD + 1) + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(129)) + b"\r\n", 431),
], ids=["request-line", "header-field", "too-many-headers"])
async def test_heads_over_the_bounds_are_refused(server: HttpServer, data: bytes, status: int) -> None:
    assert (await exchange(server, data))[0] == status


async def test_a_head_that_never_ends_is_refused_before_it_is_buffered(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nX-A: ")
    for _ in range(40):  # over 16 x max_field, in one header value that never ends
        writer.write(b"v" * MAX_FIELD)
    assert (await read_response(reader))[0] == 431
    writer.close()


# ---------------------------------------------------------------- headers and response framing

async def test_header_bytes_that_are_not_utf8_pass_both_ways_exactly(server: HttpServer) -> None:
    _, headers, _ = await exchange(
        server, b"GET /head-echo HTTP/1.1\r\nHost: g\r\nX-Note: caf\xe9 \xff\xfe\r\n\r\n")
    assert headers[b"x-note"] == b"caf\xe9 \xff\xfe"


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_head_204_and_304_answers_carry_no_body(server: HttpServer, method: str, status: int) -> None:
    reader, writer = await connect(server)
    writer.write(f"{method} /status/{status} HTTP/1.1\r\nHost: g\r\n\r\nGET /next HTTP/1.1\r\nHost: g\r\n\r\n"
                 .encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"transfer-encoding" not in head.lower()
    assert (b"content-length: 5" in head.lower()) == (method == "HEAD")
    # The next answer follows at once: no body bytes in between.
    assert (await read_response(reader))[2] == b"GET /next "
    writer.close()


# ---------------------------------------------------------------- streams

async def test_a_stream_chunk_is_sent_as_it_is_written(server: HttpServer, app: App) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: g\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"transfer-encoding: chunked" in head.lower()
    assert await asyncio.wait_for(reader.readuntil(b"\n\n\r\n"), 5) == b"b\r\ndata: one\n\n\r\n"
    app.release.set()
    assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5) == b"b\r\ndata: two\n\n\r\n0\r\n\r\n"
    writer.close()


async def test_a_slow_reader_holds_the_writer_back_and_its_abort_cancels_the_handler(
        server: HttpServer, app: App) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: g\r\nx-mode: flood\r\n\r\n")
    await asyncio.sleep(0.5)
    writes = app.stream_writes
    await asyncio.sleep(0.3)
    # Waiting on the client: a few writes fill the socket buffers, then none (not hundreds of MB).
    assert writes == app.stream_writes and writes < 200, writes
    sock.close()
    await asyncio.wait_for(app.cancelled.wait(), 5)


async def test_a_client_gone_mid_call_cancels_its_handler(server: HttpServer, app: App) -> None:
    _reader, writer = await connect(server)
    writer.write(b"GET /hang HTTP/1.1\r\nHost: g\r\n\r\n")
    await asyncio.sleep(0.1)
    writer.close()
    await asyncio.wait_for(app.cancelled.wait(), 5)


# ---------------------------------------------------------------- shutdown, shared ports

async def test_shutdown_finishes_calls_in_flight_closes_idle_ones_and_stops_accepting(app: App) -> None:
    server = HttpServer(app.handle, max_field=MAX_FIELD, max_body=MAX_BODY)
    port = await server.start("127.0.0.1", 0)
    busy_reader, busy_writer = await connect(server)
    busy_writer.write(b"GET /slow HTTP/1.1\r\nHost: g\r\n\r\n")
    idle_reader, idle_writer = await connect(server)
    idle_writer.write(b"GET /idle HTTP/1.1\r\nHost: g\r\n\r\n")
    await read_response(idle_reader)
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(server.shutdown(5.0))
    await asyncio.sleep(0.1)
    assert await closed(idle_reader)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    assert not stopping.done()
    app.release.set()
    status, headers, body = await read_response(busy_reader)
    assert (status, body, headers[b"connection"]) == (200, b"slow done", b"close")
    await asyncio.wait_for(stopping, 5)
    busy_writer.close()
    idle_writer.close()


async def test_shutdown_cancels_what_outlives_the_grace(app: App) -> None:
    server = HttpServer(app.handle, max_field=MAX_FIELD, max_body=MAX_BODY)
    await server.start("127.0.0.1", 0)
    reader, writer = await connect(server)
    writer.write(b"GET /hang HTTP/1.1\r\nHost: g\r\n\r\n")
    await asyncio.sleep(0.1)
    await asyncio.wait_for(server.shutdown(0.3), 5)
    assert app.cancelled.is_set() and await closed(reader)
    writer.close()


async def test_two_servers_share_a_port_with_reuse_port(app: App) -> None:
    first = HttpServer(app.handle, max_field=MAX_FIELD, max_body=MAX_BODY)
    port = await first.start("127.0.0.1", 0, reuse_port=True)
    second = HttpServer(app.handle, max_field=MAX_FIELD, max_body=MAX_BODY)
    assert await second.start("127.0.0.1", port, reuse_port=True) == port
    await first.shutdown(1.0)
    assert (await exchange(second, b"GET /x HTTP/1.1\r\nHost: g\r\n\r\n"))[2] == b"GET /x "
    await second.shutdown(1.0)
