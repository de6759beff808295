"""The gateway's own HTTP/1.1 server (gateway/server.py) against hostile, buggy and slow agents, on
raw sockets: framing and smuggling variants, resource exhaustion, lifecycle races; each compared
with what aiohttp's server did and with RFC 9112, and, where a call is relayed, checked on the
one record it leaves (through a real gateway to an upstream scripted at the byte level)."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smoltbot.gateway.http_messages import Request, RequestBodyError, Response, StreamResponse
from smoltbot.gateway.server import HttpServer
from smoltbot.v1 import exchange_pb2
from tests.integration.gateway.helpers import CREDENTIAL, wait_for_spooled
from tests.integration.gateway.test_gateway_server import App, closed, connect, read_response
from tests.integration.gateway.test_gateway_upstream_odd import read_request, upstream_for  # noqa: F401

pytestmark = pytest.mark.timeout(30)

MAX_FIELD = 1024
MAX_BODY = 64 * 1024
TIMEOUT = 0.3  # the head and body timeouts of the servers below
BODY = b'{"model":"m"}'
ABORT = exchange_pb2.EXCHANGE_OUTCOME_CLIENT_ABORT


class StrictApp(App):
    """The echo app, with a body error answered in its own status (a 408 for a body that stopped)."""

    async def handle(self, request: Request) -> StreamResponse:
        if request.path != "/echo":
            return await super().handle(request)
        self.seen.append(f"{request.method} {request.raw_path}")
        try:
            body = await request.read()
        except RequestBodyError as error:
            return Response(error.status, body=str(error).encode())
        return Response(200, body=b"echo " + body)


@pytest.fixture
async def app() -> App:
    return StrictApp()


@pytest.fixture
async def server(app: App) -> AsyncIterator[HttpServer]:
    running = HttpServer(app.handle, max_field=MAX_FIELD, max_body=MAX_BODY, linger=1.0,
                         head_timeout=TIMEOUT, body_timeout=TIMEOUT)
    await running.start("127.0.0.1", 0)
    yield running
    await running.shutdown(1.0)


async def read_all(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    """Everything until the server closes (ConnectionError: what came before it)."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            data += chunk
    except ConnectionError:
        pass
    return data


def call(path: str = "/anthropic/v1/messages", extra: bytes = b"", body: bytes = BODY) -> bytes:
    return (b"POST %b HTTP/1.1\r\nHost: g\r\nx-api-key: %b\r\ncontent-type: application/json\r\n%b"
            b"content-length: %d\r\n\r\n%b" % (path.encode(), CREDENTIAL.encode(), extra, len(body), body))


# ---------------------------------------------------------------- framing: defects found and fixed


@pytest.mark.parametrize("framing", [b"Content-Length: 5\r\n\r\nhello",
                                     b"Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"],
                         ids=["content-length", "chunked"])
async def test_a_request_asking_to_upgrade_keeps_its_body(server: HttpServer, framing: bytes) -> None:
    # httptools skips the body of a request with Upgrade + Connection: upgrade; the handler got
    # an empty body (aiohttp's server read it). The gateway never upgrades: the request is an
    # ordinary one, and the connection goes on.
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: g\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + framing
                 + b"GET /next HTTP/1.1\r\nHost: g\r\n\r\n")
    assert (await read_response(reader))[:3:2] == (200, b"echo hello")
    assert (await read_response(reader))[2] == b"GET /next "
    writer.close()


async def test_an_upgrade_asked_with_a_body_is_relayed_with_it_and_recorded(
        upstream_for, tmp_path: Path) -> None:  # noqa: F811
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        seen.append(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(5)

    _, gateway = await upstream_for(answer)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(call(extra=b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                            b"HTTP2-Settings: AAMA\r\n"))
    status, _, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, b"{}") and seen == [BODY]
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    assert exchange.request.body == BODY


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"xchunked", b"identity", b"deflate,chunked"])
async def test_a_transfer_coding_other_than_chunked_is_a_501(server: HttpServer, app: App,
                                                            coding: bytes) -> None:
    # llhttp reads "gzip, chunked" as chunked: the body reached the handler (and, through the
    # relay, the upstream and the record) still gzip-coded, the coding dropped with its header.
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: %b\r\n\r\n"
                 b"3\r\nabc\r\n0\r\n\r\n" % coding)
    status, headers, body = await read_response(reader)
    assert status == 501 and headers[b"connection"] == b"close" and b"Content-Encoding" in body
    assert app.seen == [] and await closed(reader)
    writer.close()


@pytest.mark.parametrize("field", [b"Host", b"User-Agent", b"Content-Type"])
async def test_a_field_that_may_appear_once_appearing_twice_is_a_400(server: HttpServer, app: App,
                                                                     field: bytes) -> None:
    # aiohttp's server refused these (its SINGLETON_HEADERS); the record fuzz test found the new
    # server relaying them: the gateway could read one value and the upstream act on the other.
    reader, writer = await connect(server)
    extra = b"" if field == b"Host" else b"Host: g\r\n"
    writer.write(b"GET /echo HTTP/1.1\r\n%b%b: a\r\n%b: b\r\n\r\n" % (extra, field, field))
    status, _headers, body = await read_response(reader)
    assert status == 400 and field in body and b"twice" in body
    assert app.seen == [] and await closed(reader)
    writer.close()


async def test_an_http10_client_gets_no_100_continue(server: HttpServer) -> None:
    # RFC 9110 §10.1.1: a server must not send a 1xx to an HTTP/1.0 client (aiohttp did not).
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    await asyncio.sleep(0.1)
    writer.write(b"ok")
    data = await read_all(reader)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"echo ok") and b" 100 " not in data
    writer.close()


@pytest.mark.parametrize("first", [b"GET /a HTTP/1.0\r\n\r\n",
                                   b"GET /a HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n"],
                         ids=["http10", "connection-close"])
async def test_requests_pipelined_after_one_that_closes_are_left_unanswered(
        server: HttpServer, app: App, first: bytes) -> None:
    # They used to get a 400 "Data after Connection: close", which a pipelining client reads as
    # their answer; unanswered, it sends them again on a new connection (RFC 9112 §9.6).
    reader, writer = await connect(server)
    writer.write(first + b"POST /b HTTP/1.1\r\nHost: g\r\nContent-Length: 1\r\n\r\nx")
    data = await read_all(reader)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"GET /a "), data
    assert data.count(b"HTTP/1.1 ") == 1 and app.seen == ["GET /a"]
    writer.close()


async def test_an_answer_given_before_the_body_is_in_says_the_connection_closes(
        server: HttpServer, app: App) -> None:
    # The server drops the rest of such a body and closes; the answer used to say keep-alive, so
    # a client sent its next request on a connection about to close, and lost it.
    reader, writer = await connect(server)
    writer.write(b"POST /refuse-early HTTP/1.1\r\nHost: g\r\nContent-Length: 10\r\n\r\nabc")
    status, headers, _ = await read_response(reader)
    assert status == 401 and headers[b"connection"] == b"close"
    writer.write(b"defghijGET /next HTTP/1.1\r\nHost: g\r\n\r\n")
    assert await read_all(reader) == b"" and app.seen == ["POST /refuse-early"]
    writer.close()


# ---------------------------------------------------------------- slow clients: defects found and fixed


async def test_a_head_trickled_past_the_head_timeout_gets_a_408(server: HttpServer, app: App) -> None:
    # aiohttp's server had no head timeout: a client sending a byte now and then held its
    # connection for ever (slowloris). Both on a new connection and on a kept-alive one.
    reader, writer = await connect(server)
    writer.write(b"GET /first HTTP/1.1\r\nHost: g\r\n\r\n")
    assert (await read_response(reader))[2] == b"GET /first "
    writer.write(b"GET /second HTTP/1.1\r\nHo")
    for _ in range(6):
        await asyncio.sleep(TIMEOUT / 3)
        writer.write(b"s")  # a byte now and then does not keep it alive
    status, headers, body = await read_response(reader)
    assert status == 408 and headers[b"connection"] == b"close" and b"within 0.3 s" in body
    assert await closed(reader) and app.seen == ["GET /first"]
    writer.close()
    reader, writer = await connect(server)
    writer.write(b"G")
    assert (await read_response(reader))[0] == 408
    writer.close()


async def test_an_idle_connection_waits_the_keep_alive_timeout_not_the_head_timeout(app: App) -> None:
    server = HttpServer(app.handle, max_field=MAX_FIELD, max_body=MAX_BODY, head_timeout=TIMEOUT,
                        keepalive_timeout=4 * TIMEOUT)
    await server.start("127.0.0.1", 0)
    reader, writer = await connect(server)
    await asyncio.sleep(2 * TIMEOUT)  # nothing sent yet: idle, not a head in progress
    writer.write(b"GET /late HTTP/1.1\r\nHost: g\r\n\r\n")
    assert (await read_response(reader))[2] == b"GET /late "
    # Then closed once idle for the keep-alive timeout, with no bytes (no 408 for no request).
    assert await asyncio.wait_for(reader.read(), 8 * TIMEOUT) == b""
    writer.close()
    await server.shutdown(1.0)


async def test_the_head_timeout_never_cuts_a_call_in_flight(server: HttpServer, app: App) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: g\r\n\r\nGET /next HTTP/1.1\r\nHo")
    await asyncio.sleep(3 * TIMEOUT)  # the next head is incomplete all along: the call goes on
    app.release.set()
    assert (await read_response(reader))[2] == b"slow done"
    # The incomplete head waits its own timeout from now on.
    assert (await read_response(reader))[0] == 408
    writer.close()


async def test_a_body_that_stops_coming_gets_a_408_and_a_steady_trickle_does_not(
        server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: g\r\nContent-Length: 6\r\n\r\n")
    for byte in b"steady":
        await asyncio.sleep(TIMEOUT / 3)
        writer.write(bytes([byte]))
    assert (await read_response(reader))[2] == b"echo steady"
    writer.write(b"POST /echo HTTP/1.1\r\nHost: g\r\nContent-Length: 6\r\n\r\nsto")
    status, headers, body = await read_response(reader)
    assert status == 408 and headers[b"connection"] == b"close" and b"for 0.3 s" in body
    writer.close()


async def test_a_stalled_body_is_a_provider_shaped_408_and_never_relayed(upstream_for) -> None:  # noqa: F811
    async def must_not_be_called(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)

    upstream, gateway = await upstream_for(must_not_be_called)
    gateway.server.body_timeout = TIMEOUT
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(call(body=BODY)[:-4])
    status, headers, body = await read_response(reader)
    writer.close()
    assert status == 408 and headers[b"connection"] == b"close"
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert upstream.connections == 0 and gateway.gateway.spool.depth == 0


# ---------------------------------------------------------------- framing: already right (pinned)


ACCEPTED = {
    "chunked-in-any-case": b"Transfer-Encoding: ChUnKeD\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "chunked-with-spaces": b"Transfer-Encoding:  chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "length-with-leading-zeros": b"Content-Length: 0003\r\n\r\nabc",
    "chunk-extensions": b"Transfer-Encoding: chunked\r\n\r\n3;a=b;c=\"d\"\r\nabc\r\n0\r\n\r\n",
    # Trailers are read and dropped (RFC 9112 §7.1.2 lets a recipient discard them; aiohttp did).
    "trailers": b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Digest: 1\r\n\r\n",
}


@pytest.mark.parametrize("case", list(ACCEPTED))
async def test_framing_variants_rfc_9112_allows_are_read_and_the_connection_goes_on(
        server: HttpServer, case: str) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: g\r\n" + ACCEPTED[case]
                 + b"GET /next HTTP/1.1\r\nHost: g\r\n\r\n")
    assert (await read_response(reader))[:3:2] == (200, b"echo abc")
    assert (await read_response(reader))[2] == b"GET /next "
    writer.close()


REFUSED = {
    "chunked-then-identity": b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "chunked-twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "equal-lengths-twice": b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "length-list": b"Content-Length: 3, 3\r\n\r\nabc",
    "negative-length": b"Content-Length: -3\r\n\r\nabc",
    "length-overflow": b"Content-Length: 99999999999999999999999\r\n\r\nabc",
    "chunk-size-overflow": b"Transfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n",
    "negative-chunk-size": b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "hex-prefixed-chunk-size": b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "bare-lf-after-chunk-size": b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    "bare-lf-after-chunk-data": b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
    "length-in-trailers": b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n",
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_framing_read_two_ways_or_overflowing_is_a_400_and_the_connection_closes(
        server: HttpServer, case: str) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: g\r\n" + REFUSED[case]
                 + b"GET /smuggled HTTP/1.1\r\nHost: g\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 400 and headers[b"connection"] == b"close"
    assert await read_all(reader) == b""  # the bytes after it are never a request
    writer.close()


@pytest.mark.parametrize("target", [b"http://api.anthropic.com/anthropic/v1/messages", b"*",
                                    b"api.anthropic.com:443"], ids=["absolute", "asterisk", "authority"])
async def test_targets_that_are_no_path_are_refused_by_the_gateway(upstream_for, target: bytes) -> None:  # noqa: F811
    upstream, gateway = await upstream_for(lambda *_: asyncio.sleep(0))
    method = b"CONNECT" if target.endswith(b":443") else b"OPTIONS" if target == b"*" else b"POST"
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"%b %b HTTP/1.1\r\nHost: g\r\nx-api-key: %b\r\n\r\n"
                 % (method, target, CREDENTIAL.encode()))
    status, _, body = await read_response(reader)
    writer.close()
    assert status == 400 and b"not" in body and upstream.connections == 0


# ---------------------------------------------------------------- resource exhaustion


async def test_a_flood_of_pipelined_requests_is_answered_in_order_reading_a_window_at_a_time(
        server: HttpServer, app: App) -> None:
    queued: list[int] = []
    handle = app.handle

    async def counting(request: Request) -> StreamResponse:
        queued.append(sum(len(conn._pipeline) for conn in server.connections))
        return await handle(request)

    server.handler = counting
    count = 20_000  # ~700 KB of requests, sent at once
    reader, writer = await connect(server)
    writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: g\r\n\r\n" % n for n in range(count)))
    for n in range(count):
        assert (await read_response(reader))[2] == b"GET /%d " % n
    writer.close()
    # Reading pauses once a request waits its turn: at most one read's worth (256 KiB) queued.
    assert max(queued) < count // 2, max(queued)


async def test_a_10_mb_request_line_is_refused_once_over_the_bound(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /" + b"a" * 10_000_000 + b" HTTP/1.1\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 414 and headers[b"connection"] == b"close"
    writer.close()


async def test_a_head_at_the_bounds_is_served_and_one_byte_over_is_not(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /x HTTP/1.1\r\nX-Big: " + b"h" * MAX_FIELD + b"\r\n"
                 + b"".join(b"X-H%d: v\r\n" % i for i in range(127)) + b"\r\n")
    assert (await read_response(reader))[0] == 200
    writer.write(b"GET /x HTTP/1.1\r\nX-Big: " + b"h" * (MAX_FIELD + 1) + b"\r\n\r\n")
    assert (await read_response(reader))[0] == 431
    writer.close()


async def test_many_idle_connections_do_not_stop_a_new_call_and_shutdown_closes_them_all(app: App) -> None:
    server = HttpServer(app.handle, max_field=MAX_FIELD, max_body=MAX_BODY)
    await server.start("127.0.0.1", 0)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(1000, (soft - 100) // 2)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(count)]
    reader, writer = await connect(server)
    writer.write(b"GET /still HTTP/1.1\r\nHost: g\r\n\r\n")
    assert (await read_response(reader))[2] == b"GET /still "
    await asyncio.wait_for(server.shutdown(1.0), 5)
    assert not server.connections
    assert all(await asyncio.gather(*(closed(r) for r, _ in idle[:50])))
    for _, w in idle:
        w.close()
    writer.close()


async def test_a_client_that_never_reads_a_large_answer_holds_one_buffer_not_the_answer(
        server: HttpServer, app: App) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: g\r\nx-mode: flood\r\n\r\n")
    await asyncio.sleep(0.5)
    [conn] = server.connections
    assert conn.transport is not None and conn.transport.get_write_buffer_size() < 1024 * 1024
    sock.close()
    await asyncio.wait_for(app.cancelled.wait(), 5)


# ---------------------------------------------------------------- lifecycle


def reset(writer: asyncio.StreamWriter) -> None:
    """Closes with an RST (SO_LINGER 0), as a killed client's kernel may."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_client_reset_mid_stream_leaves_one_client_abort_record(upstream_for, tmp_path: Path) -> None:  # noqa: F811
    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\nd\r\ndata: first\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(10)

    _, gateway = await upstream_for(stream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(call())
    await asyncio.wait_for(reader.readuntil(b"data: first\n\n"), 5)
    reset(writer)
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    assert exchange.outcome == ABORT and exchange.response.status == 200
    await asyncio.sleep(0.3)
    assert gateway.gateway.spool.depth == 1


async def test_a_client_reset_mid_body_is_never_relayed(upstream_for) -> None:  # noqa: F811
    upstream, gateway = await upstream_for(lambda *_: asyncio.sleep(0))
    _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(call()[:-5])
    await asyncio.sleep(0.1)
    reset(writer)
    await asyncio.sleep(0.3)
    assert upstream.connections == 0 and gateway.gateway.spool.depth == 0
    assert not gateway.server.connections


async def test_a_half_close_after_a_whole_request_is_a_client_abort_with_one_record(
        upstream_for, tmp_path: Path) -> None:  # noqa: F811
    # As aiohttp's server and nginx read it: a FIN cannot be told from a client that closed for
    # good, and cancelling is what ends an abandoned model call upstream. The record says so.
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    _, gateway = await upstream_for(slow)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(call())
    await asyncio.sleep(0.2)
    writer.write_eof()
    assert await read_all(reader) == b""
    writer.close()
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    assert exchange.outcome == ABORT


async def test_shutdown_answers_the_call_in_flight_and_leaves_pipelined_ones_unanswered(app: App) -> None:
    server = HttpServer(app.handle, max_field=MAX_FIELD, max_body=MAX_BODY)
    await server.start("127.0.0.1", 0)
    reader, writer = await connect(server)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: g\r\n\r\nGET /queued HTTP/1.1\r\nHost: g\r\n\r\n")
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(server.shutdown(5.0))
    await asyncio.sleep(0.1)
    app.release.set()
    data = await read_all(reader)
    assert data.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in data and data.endswith(b"slow done")
    assert app.seen == ["GET /slow"]  # the client sends /queued again elsewhere
    await asyncio.wait_for(stopping, 5)
    writer.close()
