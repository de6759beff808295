"""The relay's own upstream client (gateway/upstream.py) at the byte level: what an upstream API
may send that the SDK stand-ins never do (interim answers, HEAD, bodies that end with the
connection, an idle connection closed as the next request arrives, TLS, silence), each through
a real gateway to a scripted upstream on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from smoltbot.gateway import RunningGateway
from smoltbot.gateway.upstream import Origin, UpstreamPool, UpstreamProtocolError
from tests.integration.gateway.helpers import CREDENTIAL, unused_address
from tests.integration.tls.certs import Authority

pytestmark = pytest.mark.timeout(60)

HEADERS = {"x-api-key": CREDENTIAL, "anthropic-version": "2023-06-01", "content-type": "application/json"}
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"


@dataclass
class Seen:
    connection: int
    index: int
    head: bytes
    body: bytes

    @property
    def method(self) -> str:
        return self.head.split(b" ", 1)[0].decode()


#: What the scripted upstream does with one request: bytes to send (and whether to close after),
#: None to close the connection without answering, or b"" to say nothing and keep it open.
Answer = Callable[[Seen], "tuple[bytes, bool] | None"]


class ScriptedUpstream:
    """The upstream API's stand-in at the byte level: each request is answered with the bytes the
    test scripts, on a real socket (port 0)."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.seen: list[Seen] = []
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection, index = self.connections, 0
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                seen = Seen(connection, index, head, body)
                self.seen.append(seen)
                index += 1
                answer = self.answer(seen)
                if answer is None:
                    return
                data, close = answer
                if not data:
                    await asyncio.sleep(30)
                    return
                writer.write(data)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()


@pytest.fixture
async def scripted(start: Callable[..., Awaitable[RunningGateway]]) -> AsyncIterator[
        Callable[..., Awaitable[tuple[ScriptedUpstream, RunningGateway]]]]:
    upstreams: list[ScriptedUpstream] = []

    async def _scripted(answer: Answer, tls: ssl.SSLContext | None = None,
                        **overrides: object) -> tuple[ScriptedUpstream, RunningGateway]:
        upstream = ScriptedUpstream(answer, tls)
        await upstream.start()
        upstreams.append(upstream)
        gateway = await start(registry=unused_address(), observer=unused_address(),
                              upstream_url=upstream.base_url, **overrides)
        return upstream, gateway

    yield _scripted
    for upstream in upstreams:
        await upstream.stop()


async def post(http: httpx.AsyncClient, gateway: RunningGateway,
               body: bytes = b'{"model":"m"}') -> httpx.Response:
    return await http.post(gateway.base_url + "/anthropic/v1/messages", content=body, headers=HEADERS)


async def test_calls_in_a_row_share_one_upstream_connection(scripted) -> None:
    upstream, gateway = await scripted(lambda seen: (OK, False))
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(3):
            response = await post(http, gateway)
            assert response.status_code == 200 and response.json() == {"ok": True}
    assert upstream.connections == 1 and [s.index for s in upstream.seen] == [0, 1, 2]


async def test_a_head_answer_ends_at_its_headers_and_the_next_call_still_works(scripted) -> None:
    def answer(seen: Seen) -> tuple[bytes, bool]:
        if seen.method == "HEAD":  # announces a body it does not send, as HEAD answers do
            return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1234\r\n\r\n", False
        return OK, False

    upstream, gateway = await scripted(answer)
    async with httpx.AsyncClient(timeout=10) as http:
        head = await http.head(gateway.base_url + "/anthropic/v1/models", headers=HEADERS)
        assert head.status_code == 200 and head.headers["content-length"] == "1234" and head.content == b""
        after = await post(http, gateway)
    assert after.status_code == 200 and after.json() == {"ok": True}
    assert [s.method for s in upstream.seen] == ["HEAD", "POST"]


async def test_interim_answers_are_passed_over_and_the_final_one_relayed(scripted) -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
    upstream, gateway = await scripted(lambda seen: (interim + OK, False))
    async with httpx.AsyncClient(timeout=10) as http:
        first, second = await post(http, gateway), await post(http, gateway)
    assert (first.status_code, first.json()) == (second.status_code, second.json()) == (200, {"ok": True})
    assert upstream.connections == 1


async def test_a_body_that_ends_with_the_connection_is_relayed_whole(scripted) -> None:
    body = b"x" * 200_000 + b"end"
    upstream, gateway = await scripted(
        lambda seen: (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n" + body, True))
    async with httpx.AsyncClient(timeout=10) as http:
        first, second = await post(http, gateway), await post(http, gateway)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == body
    assert upstream.connections == 2  # such a connection is never reused


async def test_an_idle_connection_the_upstream_closed_is_retried_once_for_a_get_and_never_for_a_post(
        scripted) -> None:
    def answer(seen: Seen) -> tuple[bytes, bool] | None:
        # The first request on each connection is answered; the next one finds it closed (the
        # upstream's keep-alive timeout ran out as the request arrived).
        return (OK, False) if seen.index == 0 else None

    upstream, gateway = await scripted(answer)
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await post(http, gateway)).status_code == 200
        got = await http.get(gateway.base_url + "/anthropic/v1/models", headers=HEADERS)
        assert got.status_code == 200, got.text
        assert [(s.connection, s.index, s.method) for s in upstream.seen] == [
            (0, 0, "POST"), (0, 1, "GET"), (1, 0, "GET")]
        # The POST may have reached the upstream: it is not sent twice, the agent gets a 502.
        refused = await post(http, gateway)
    assert refused.status_code == 502 and refused.json()["error"]["type"] == "api_error"
    assert [s.method for s in upstream.seen].count("POST") == 2


async def test_request_header_bytes_that_are_not_utf8_reach_the_upstream_exactly(scripted) -> None:
    upstream, gateway = await scripted(lambda seen: (OK, True))
    raw = (b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
           b"x-api-key: " + CREDENTIAL.encode() + b"\r\nx-note: caf\xe9 \xff\xfe ok\r\n"
           b"content-length: 2\r\n\r\n{}")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(raw)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    [seen] = upstream.seen
    assert b"\r\nx-note: caf\xe9 \xff\xfe ok\r\n" in seen.head and seen.body == b"{}"


async def test_a_large_request_body_reaches_the_upstream_byte_for_byte(scripted) -> None:
    upstream, gateway = await scripted(lambda seen: (OK, False))
    body = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: written in pieces
    async with httpx.AsyncClient(timeout=20) as http:
        response = await post(http, gateway, body)
    assert response.status_code == 200
    [seen] = upstream.seen
    assert seen.body == body and f"content-length: {len(body)}".encode() in seen.head.lower()


async def test_an_upstream_that_stays_silent_past_the_idle_timeout_is_a_504(scripted) -> None:
    _, gateway = await scripted(lambda seen: (b"", False), upstream_idle_timeout=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with httpx.AsyncClient(timeout=10) as http:
        response = await post(http, gateway)
    assert response.status_code == 504 and response.json()["type"] == "error", response.text
    assert 0.4 < loop.time() - started < 5


async def test_tls_to_the_upstream_is_verified_against_the_trusted_authorities(
        scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    authority = Authority(tmp_path / "pki")
    issued = authority.issue("upstream", hosts=("127.0.0.1",))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(issued.cert, issued.key)
    # Not trusted yet: the handshake fails and the agent gets the gateway's 502.
    _, untrusting = await scripted(lambda seen: (OK, False), server_tls)
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await post(http, untrusting)).status_code == 502
    # Trusted (the system's trust store, pointed at the test CA): calls pass, one connection.
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.ca))
    upstream, trusting = await scripted(lambda seen: (OK, False), server_tls)
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(2):
            response = await post(http, trusting)
            assert response.status_code == 200 and response.json() == {"ok": True}
    assert upstream.connections == 1 and len(upstream.seen) == 2


@pytest.mark.parametrize("name, value", [
    ("x-note", "a\r\nx-injected: 1"), ("x-note", "a\nb"), ("x-note", "a\rb"), ("x-no\r\nte", "a"),
])
async def test_a_header_with_a_line_break_is_never_written_to_the_upstream(name: str, value: str) -> None:
    # The gateway's server refuses such headers before the relay sees them; the client refuses
    # them on its own too, so no caller can write a header or a request of its own choosing.
    upstream = ScriptedUpstream(lambda seen: (OK, False))
    await upstream.start()
    pool = UpstreamPool(connect_timeout=5, read_timeout=5, max_field_size=64 * 1024)
    try:
        with pytest.raises(UpstreamProtocolError, match="line break"):
            await pool.request(Origin.parse(upstream.base_url), "POST", "/v1/messages",
                               [(name, value)], b"{}")
        response = await pool.request(Origin.parse(upstream.base_url), "POST", "/v1/messages",
                                      [("x-note", "fine")], b"{}")
        assert await response.read() == b'{"ok":true}'
        response.release()
    finally:
        await pool.close()
        await upstream.stop()
    [seen] = upstream.seen
    assert b"injected" not in seen.head and b"x-note: fine\r\n" in seen.head
