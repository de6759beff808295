"""Odd and hostile upstreams against the relay's own client (gateway/upstream.py), compared with
what aiohttp's client did: each through a real gateway to an upstream scripted at the byte level
on a real socket, and each checked on what the agent got and on the one record the call left."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from smoltbot.gateway import RunningGateway
from smoltbot.gateway.upstream import Origin, UpstreamError, UpstreamPool
from smoltbot.v1 import exchange_pb2
from tests.integration.gateway.helpers import CREDENTIAL, unused_address, wait_for_spooled

pytestmark = pytest.mark.timeout(60)

HEADERS = {"x-api-key": CREDENTIAL, "anthropic-version": "2023-06-01", "content-type": "application/json"}
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
COMPLETE = exchange_pb2.EXCHANGE_OUTCOME_COMPLETE
UNREACHABLE = exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE

#: One connection of the scripted upstream: (reader, writer, index of the connection).
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader, body: bool = True) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if body:
        await reader.readexactly(length)
    return head


def answering(*answers: bytes) -> Handler:
    """The upstream's n-th request, on whichever connection, gets the n-th of `answers` (the last
    one repeats)."""
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        nonlocal served
        while True:
            try:
                await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(answers[min(served, len(answers) - 1)])
            served += 1
            await writer.drain()

    return handler


class RawUpstream:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index, self.connections = self.connections, self.connections + 1
        try:
            await self.handler(reader, writer, index)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the relay hung up, or the test is over
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


@pytest.fixture
async def upstream_for(start: Callable[..., Awaitable[RunningGateway]]) -> AsyncIterator[
        Callable[..., Awaitable[tuple[RawUpstream, RunningGateway]]]]:
    upstreams: list[RawUpstream] = []

    async def _upstream_for(handler: Handler, **overrides: object) -> tuple[RawUpstream, RunningGateway]:
        upstream = RawUpstream(handler)
        url = await upstream.start()
        upstreams.append(upstream)
        gateway = await start(registry=unused_address(), observer=unused_address(), upstream_url=url,
                              **overrides)
        return upstream, gateway

    yield _upstream_for
    for upstream in upstreams:
        await upstream.stop()


async def post(http: httpx.AsyncClient, gateway: RunningGateway,
               body: bytes = b'{"model":"m"}') -> httpx.Response:
    return await http.post(gateway.base_url + "/anthropic/v1/messages", content=body, headers=HEADERS)


# ---------------------------------------------------------------- a large body answered early


async def test_an_answer_sent_before_a_large_body_was_taken_reaches_the_agent_at_once(
        upstream_for, tmp_path: Path) -> None:
    # The upstream refuses on the headers (too large, bad key) and stops reading, keeping the
    # connection open: the relay used to wait forever to finish writing the body.
    async def refuse_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, body=False)
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
                     b"content-length: 17\r\n\r\n{\"error\":\"large\"}")
        await writer.drain()
        await asyncio.sleep(30)

    _, gateway = await upstream_for(refuse_early)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with httpx.AsyncClient(timeout=10) as http:
        response = await post(http, gateway, b"x" * (24 * 1024 * 1024))
    assert response.status_code == 413 and response.json() == {"error": "large"}
    assert loop.time() - started < 5
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    assert exchange.outcome == exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR
    assert exchange.response.status == 413


async def test_an_upstream_that_neither_takes_a_large_body_nor_answers_is_a_504(
        upstream_for, tmp_path: Path) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader, body=False)
        await asyncio.sleep(30)

    _, gateway = await upstream_for(stall, upstream_idle_timeout=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with httpx.AsyncClient(timeout=10) as http:
        response = await post(http, gateway, b"x" * (24 * 1024 * 1024))
    assert response.status_code == 504, response.text
    assert loop.time() - started < 5
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    # Nothing came from the upstream: no status in the record, and a detail that says why.
    assert exchange.outcome == UNREACHABLE and exchange.response.status == 0
    assert exchange.outcome_detail == "upstream timed out: no byte from the upstream for 0.5 s"


# ---------------------------------------------------------------- what aiohttp forgave


@pytest.mark.parametrize("answer, header, body", [
    # A folded header line (obs-fold): read as one value.
    (b"HTTP/1.1 200 OK\r\nx-note: one\r\n two\r\ncontent-length: 2\r\n\r\nok", ("x-note", "one two"), b"ok"),
    # Bare LF line ends.
    (b"HTTP/1.1 200 OK\nx-note: lf\ncontent-length: 2\n\nok", ("x-note", "lf"), b"ok"),
    # Spaces after a chunk size.
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2  \r\nok\r\n0\r\n\r\n", None, b"ok"),
], ids=["obs-fold", "bare-lf", "chunk-size-spaces"])
async def test_wire_shapes_aiohttp_forgave_are_relayed(upstream_for, tmp_path: Path, answer: bytes,
                                                       header: tuple[str, str] | None, body: bytes) -> None:
    _, gateway = await upstream_for(answering(answer))
    async with httpx.AsyncClient(timeout=10) as http:
        response = await post(http, gateway)
    assert response.status_code == 200 and response.content == body
    if header is not None:
        name, value = header
        assert " ".join(response.headers[name].split()) == value
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    assert exchange.outcome == COMPLETE and exchange.response.status == 200


async def test_whitespace_after_a_header_value_is_not_part_of_it(upstream_for, tmp_path: Path) -> None:
    _, gateway = await upstream_for(answering(
        b"HTTP/1.1 200 OK\r\nrequest-id: req_1 \t \r\ncontent-length: 2\r\n\r\nok"))
    async with httpx.AsyncClient(timeout=10) as http:
        response = await post(http, gateway)
    assert response.headers["request-id"] == "req_1"
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    assert ("request-id", "req_1") in [(h.name, h.value) for h in exchange.response.headers]


async def test_a_body_whose_last_coding_is_not_chunked_ends_with_the_connection(
        upstream_for, tmp_path: Path) -> None:
    # RFC 9112 §6.3: "chunked, gzip" is not chunked framing; the body runs to the close.
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                     b"transfer-encoding: chunked, gzip\r\n\r\nruns to the close")

    _, gateway = await upstream_for(close_delimited)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await post(http, gateway)
    assert response.status_code == 200 and response.content == b"runs to the close"
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    assert exchange.outcome == COMPLETE


async def test_a_reason_phrase_split_across_reads_is_relayed_whole(upstream_for) -> None:
    async def split(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 Every")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"thing Fine\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    _, gateway = await upstream_for(split)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await post(http, gateway)
    assert response.status_code == 200 and response.reason_phrase == "Everything Fine"


# ---------------------------------------------------------------- refused, with one honest record


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\nnot http",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"x-filler: " + b"a" * 60 + b"\r\n" * 1 + b"x-big: " + b"b" * 4_000_000
    + b"\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nx-note: a\x00b\r\ncontent-length: 2\r\n\r\nok",
], ids=["101-unasked", "conflicting-lengths", "length-and-chunked", "huge-header-block", "nul-in-header"])
async def test_answers_the_relay_cannot_frame_are_a_502_and_the_next_call_is_clean(
        upstream_for, tmp_path: Path, answer: bytes) -> None:
    upstream, gateway = await upstream_for(answering(answer, OK))
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await post(http, gateway)
        after = await post(http, gateway)
    assert refused.status_code == 502 and refused.json()["error"]["type"] == "api_error"
    assert after.status_code == 200 and after.json() == {"ok": True}
    assert upstream.connections == 2  # the refused answer's connection is never reused
    first, second = await wait_for_spooled(gateway, 2, tmp_path)
    assert (first.outcome, first.response.status) == (UNREACHABLE, 0)
    assert "UpstreamProtocolError" in first.outcome_detail
    assert (second.outcome, second.response.status) == (COMPLETE, 200)


# ---------------------------------------------------------------- never the next call's answer


@pytest.mark.parametrize("first", [
    OK + b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",  # more than its Content-Length
    b"HTTP/1.1 204 No Content\r\ncontent-length: 6\r\n\r\nforged",  # a 204 with a body
    b"HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",
], ids=["past-content-length", "204-with-body", "304-with-body"])
async def test_bytes_past_an_answer_never_become_the_next_calls_answer(upstream_for, first: bytes) -> None:
    upstream, gateway = await upstream_for(answering(first, OK))
    async with httpx.AsyncClient(timeout=10) as http:
        await post(http, gateway)
        second = await post(http, gateway)
    assert second.status_code == 200 and second.json() == {"ok": True}
    assert upstream.connections == 2


async def test_bytes_an_idle_connection_receives_retire_it(upstream_for) -> None:
    async def unasked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        if index == 0:
            await asyncio.sleep(0.2)  # idle in the pool by now
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged")
            await writer.drain()
        await asyncio.sleep(5)

    upstream, gateway = await upstream_for(unasked)
    async with httpx.AsyncClient(timeout=10) as http:
        await post(http, gateway)
        await asyncio.sleep(0.5)
        second = await post(http, gateway)
    assert second.status_code == 200 and second.json() == {"ok": True}
    assert upstream.connections == 2


# ---------------------------------------------------------------- one record per call, honest


DROPPED = exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_DROPPED


@pytest.mark.parametrize("answer, agent_status, outcome, status", [
    (b"", 502, UNREACHABLE, 0),  # an empty reply, then the close
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", 502, DROPPED, 200),  # cut inside its length
    (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
     b"5\r\nevent\r\n", None, DROPPED, 200),  # a stream cut between chunks: the agent's connection is cut
    (b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nto the close", 200, COMPLETE, 200),
    (b"HTTP/1.1 200\r\ncontent-length: 2\r\n\r\nok", 200, COMPLETE, 200),  # no reason phrase
], ids=["empty-reply", "short-of-length", "stream-cut", "http10-to-close", "no-reason"])
async def test_each_call_leaves_one_record_with_the_outcome_the_upstream_caused(
        upstream_for, tmp_path: Path, answer: bytes, agent_status: int | None, outcome: int,
        status: int) -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    _, gateway = await upstream_for(once)
    async with httpx.AsyncClient(timeout=10) as http:
        if agent_status is None:
            with pytest.raises(httpx.HTTPError):  # a clean end would tell the agent it was whole
                await post(http, gateway)
        else:
            assert (await post(http, gateway)).status_code == agent_status
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    assert (exchange.outcome, exchange.response.status) == (outcome, status)
    await asyncio.sleep(0.3)  # nothing more arrives for the same call
    assert gateway.gateway.spool.depth == 1


# ---------------------------------------------------------------- the pool itself


async def test_concurrent_calls_never_share_a_connection_and_close_ends_calls_in_flight() -> None:
    async def echo_tag(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            head = await read_request(reader)
            [tag] = [line[6:].strip() for line in head.split(b"\r\n") if line.startswith(b"x-tag:")]
            if tag == b"hold":
                await asyncio.sleep(30)
            await asyncio.sleep(0.01)  # long enough for calls to overlap
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(tag), tag))
            await writer.drain()

    upstream = RawUpstream(echo_tag)
    origin = Origin.parse(await upstream.start())
    pool = UpstreamPool(connect_timeout=5, read_timeout=5, max_field_size=8190)

    async def call(tag: str) -> bytes:
        response = await pool.request(origin, "GET", "/v1/models", [("x-tag", tag)])
        body = await response.read()
        response.release()
        return body

    try:
        for _ in range(2):  # the second round runs on the pooled connections
            tags = [str(n) for n in range(40)]
            assert await asyncio.gather(*(call(tag) for tag in tags)) == [tag.encode() for tag in tags]
        assert upstream.connections == 40
        # Calls on pooled connections: close() must end them, not send them again on fresh ones
        # (the keep-alive race retry would, for a GET) that outlive the pool.
        held = [asyncio.create_task(call("hold")) for _ in range(3)]
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await pool.close()
        results = await asyncio.gather(*held, return_exceptions=True)
        assert all(isinstance(result, UpstreamError) for result in results), results

        assert loop.time() - started < 1
        assert upstream.connections == 40
        with pytest.raises(UpstreamError, match="closed"):
            await call("1")
    finally:
        await pool.close()
        await upstream.stop()
