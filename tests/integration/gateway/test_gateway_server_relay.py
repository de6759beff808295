"""The gateway's own server (gateway/server.py) in the whole relay: raw bytes from the agent's side,
an upstream scripted at the byte level on the other, checked on both ends and on the record."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.integration.gateway.helpers import CREDENTIAL, wait_for_spooled
from tests.integration.gateway.test_gateway_upstream_odd import read_request, upstream_for  # noqa: F401

pytestmark = pytest.mark.timeout(60)

BODY = b'{"model":"m"}'


def call(path: str = "/anthropic/v1/messages", extra: bytes = b"", body: bytes = BODY) -> bytes:
    return (b"POST %b HTTP/1.1\r\nHost: g\r\nx-api-key: %b\r\ncontent-type: application/json\r\n%b"
            b"content-length: %d\r\n\r\n%b" % (path.encode(), CREDENTIAL.encode(), extra, len(body), body))


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head, await reader.readexactly(length)


async def test_header_bytes_that_are_not_utf8_reach_each_side_exactly(upstream_for, tmp_path: Path) -> None:  # noqa: F811
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-upstream-note: caf\xe9 \xff\r\n"
                     b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(5)

    _, gateway = await upstream_for(answer)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(call(extra=b"x-agent-note: na\xefve \xfe\r\n"))
    head, body = await read_answer(reader)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"{}"
    # aiohttp's server left such a header out of the agent's answer; it is relayed as it came.
    assert b"\r\nx-upstream-note: caf\xe9 \xff\r\n" in head
    assert b"\r\nx-agent-note: na\xefve \xfe\r\n" in seen[0]
    [exchange] = await wait_for_spooled(gateway, 1, tmp_path)
    note = next(h for h in exchange.response.headers if h.name == "x-upstream-note")
    assert note.raw_value == b"caf\xe9 \xff"


async def test_pipelined_calls_are_relayed_and_answered_in_order(upstream_for) -> None:  # noqa: F811
    async def numbered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            head = await read_request(reader)
            n = head.split(b" ")[1].rsplit(b"/", 1)[1]
            await asyncio.sleep(0.05 if n == b"1" else 0)  # the first answer is the slowest
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(n), n))
            await writer.drain()

    _, gateway = await upstream_for(numbered)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"".join(call(f"/anthropic/v1/n/{n}") for n in (1, 2, 3)))
    answers = [(await read_answer(reader))[1] for _ in range(3)]
    writer.close()
    assert answers == [b"1", b"2", b"3"]


@pytest.mark.parametrize("request_bytes", [
    b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: g\r\nx-api-key: %b\r\ncontent-length: 5\r\n"
    b"transfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /anthropic/v1/smuggled HTTP/1.1\r\nHost: g\r\n\r\n",
    b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: g\r\nx-api-key: %b\r\ncontent-length: 5\r\n"
    b"content-length: 40\r\n\r\nhello",
    b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: g\r\nx-api-key: %b\r\ntransfer-encoding: chunked\r\n\r\n"
    b"5;\x00\r\nhello\r\n0\r\n\r\n",
], ids=["content-length-and-chunked", "two-lengths", "bad-chunk-size"])
async def test_a_request_framed_two_ways_is_refused_and_never_relayed(
        upstream_for, tmp_path: Path, request_bytes: bytes) -> None:  # noqa: F811
    async def must_not_be_called(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()

    upstream, gateway = await upstream_for(must_not_be_called)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(request_bytes % CREDENTIAL.encode())
    head, body = await read_answer(reader)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400 ") and b"connection: close" in head.lower(), head
    if b"application/json" in head:  # refused by the relay reading the body: the provider's shape
        assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert upstream.connections == 0
    await asyncio.sleep(0.2)
    assert gateway.gateway.spool.depth == 0  # nothing was relayed, so there is no exchange to record
