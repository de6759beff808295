"""A relay core on asyncio's Protocol API with llhttp parsing both ways (httptools) and uvloop:
the ceiling `bench/gateway_latency.py` measures beside nginx, for the gateway's next relay core.

    python bench/protocol_relay.py PORT UPSTREAM_URL [--no-uvloop] [--record OBSERVER_ADDRESS]

What it does: parses each client request with httptools, forwards it (path under /anthropic,
end-to-end headers, body) on a keep-alive upstream connection from its own pool, parses the
answer with httptools and relays it: sized answers in one write, others re-framed chunk by
chunk as they arrive. What it does not (yet) do, and the gateway's relay must: capture and
shipping, identity, target checks, 1xx/HEAD/204/304 rules, Expect, request smuggling
defences beyond llhttp's, upstream TLS, timeouts, client abort handling. It is a measurement of
the floor, not a relay to run.

`--record`: the floor with the full record on. Each call also gets what the gateway does for
its record, with the gateway's own code: the agent hash of its credential, a `Capture` of the
request and the answer, the record built on the loop and encoded (`encode_ingest_request`), then
spooled and shipped (`Spool`, `Shipper`, batched Ingest to OBSERVER_ADDRESS, acks erased). What
this costs over the bare relay is the record's share of any relay's CPU per call in CPython.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httptools

_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                         b"proxy-connection", b"host", b"content-length", b"expect"})
_PREFIX = b"/anthropic"


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream; answers go to the client it is lent to."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: Client | None = None
        self.capture: Any = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.sized = False
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are no subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.discard(self)
        if self.client is not None:
            self.client.upstream_failed()

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if self.capture is not None:
            self.capture.first_byte_ns = time.time_ns()
            self.capture.status = status
            self.capture.response_headers = [(n.decode("latin-1"), v.decode("latin-1"))
                                             for n, v in self.headers]
        out = [b"HTTP/1.1 %d \r\n" % status]
        length = None
        for name, value in self.headers:
            low = name.lower()
            if low == b"content-length":
                length = value
            elif low not in _HOP_BY_HOP:
                out.append(name + b": " + value + b"\r\n")
        self.sized = length is not None
        if self.sized:
            out.append(b"content-length: " + length + b"\r\n\r\n")  # type: ignore[operator]
            self.body = [b"".join(out)]
        else:
            out.append(b"transfer-encoding: chunked\r\n\r\n")
            assert self.client is not None
            self.client.write(b"".join(out))

    def on_body(self, data: bytes) -> None:
        if self.capture is not None:
            self.capture.add_chunk(data)
        if self.sized:
            self.body.append(data)
        elif self.client is not None:
            self.client.write(b"%x\r\n%b\r\n" % (len(data), data))

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        client.write(b"".join(self.body) if self.sized else b"0\r\n\r\n")
        self.body = []
        if self.capture is not None and RECORDER is not None:
            capture, self.capture = self.capture, None
            RECORDER.submit(capture)
        self.pool.release(self)
        client.answered()


class Pool:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: collections.deque[Upstream] = collections.deque()

    async def get(self) -> Upstream:
        while self.idle:
            upstream = self.idle.pop()
            if upstream.transport is not None and not upstream.transport.is_closing():
                return upstream
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: Upstream(self), self.host, self.port)
        return protocol

    def release(self, upstream: Upstream) -> None:
        self.idle.append(upstream)

    def discard(self, upstream: Upstream) -> None:
        if upstream in self.idle:
            self.idle.remove(upstream)


class Client(asyncio.Protocol):
    """One client connection: one request at a time (no pipelining), relayed as it completes."""

    def __init__(self, pool: Pool, host_header: bytes) -> None:
        self.pool = pool
        self.host_header = host_header
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.raw_headers = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if RECORDER is not None:
            self.raw_headers.append((name, value))
        if name.lower() not in _HOP_BY_HOP:
            self.headers.append(name + b": " + value + b"\r\n")

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        body = b"".join(self.body)
        head = b"%b %b HTTP/1.1\r\nhost: %b\r\ncontent-length: %d\r\n%b\r\n" % (
            self.parser.get_method(), self.url.removeprefix(_PREFIX), self.host_header, len(body),
            b"".join(self.headers))
        capture = None
        if RECORDER is not None:
            capture = RECORDER.capture(self.parser.get_method(), self.url, self.raw_headers, body)
        asyncio.get_running_loop().create_task(self._forward(head + body, capture))

    async def _forward(self, request: bytes, capture: Any = None) -> None:
        upstream = await self.pool.get()
        upstream.client = self
        upstream.capture = capture
        assert upstream.transport is not None
        upstream.transport.write(request)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def answered(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def upstream_failed(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Recorder:
    """The gateway's record of each call (its own modules), without the rest of the gateway."""

    def __init__(self, observer_address: str) -> None:
        from smoltbot.core.identity import agent_hash
        from smoltbot.core.outcomes import ExchangeOutcome
        from smoltbot.gateway.capture import Capture
        from smoltbot.gateway.shipper import Shipper, encode_ingest_request
        from smoltbot.gateway.spool import Spool

        self._agent_hash, self._capture, self._encode = agent_hash, Capture, encode_ingest_request
        self._complete = ExchangeOutcome.COMPLETE
        self.spool = Spool(Path(tempfile.mkdtemp(prefix="protocol-relay-spool-")), 1 << 30)
        self.spool.open()
        self.shipper = Shipper(self.spool, observer_address)

    def capture(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
        text = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
        credential = next((v for n, v in text if n.lower() == "x-api-key"), "")
        path, _, query = url.decode("latin-1").removeprefix("/anthropic").partition("?")
        return self._capture(agent_hash=self._agent_hash(credential, b"bench"), session_hint="",
                             method=method.decode(), path=path, query=query, request_headers=text,
                             request_body=body, started_ns=time.time_ns(), credential=credential)

    def submit(self, capture: Any) -> None:
        capture.finish(self._complete)
        if not capture.built_cheaply_here(64 * 1024):
            capture.seal()
        self.shipper.submit_payload(capture.exchange_id, self._encode(capture.to_exchange("protocol-relay")))


RECORDER: Recorder | None = None


async def serve(port: int, upstream_url: str, record: str = "") -> None:
    global RECORDER
    if record:
        RECORDER = Recorder(record)
        RECORDER.shipper.start()
    target = urlsplit(upstream_url)
    assert target.hostname and target.port
    pool = Pool(target.hostname, target.port)
    host_header = target.netloc.encode()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool, host_header), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    port, upstream_url = int(sys.argv[1]), sys.argv[2].rstrip("/")
    record = sys.argv[sys.argv.index("--record") + 1] if "--record" in sys.argv else ""
    if "--no-uvloop" in sys.argv:
        asyncio.run(serve(port, upstream_url, record))
    else:
        import uvloop

        uvloop.run(serve(port, upstream_url, record))
