"""Bad input at the gateway: each request either passes through to the upstream (which
decides) or gets a clear error in the Anthropic shape; the gateway never crashes or hangs,
and serves a normal call afterwards.

Requests are written byte for byte on raw sockets, so nothing (an HTTP client's own
validation) cleans them up on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass

import pytest

from tests.reliability.conftest import SHARED_MAX_REQUEST_BYTES
from tests.reliability.harness import MODEL, Stack, load_mix, new_credential, run_calls

pytestmark = pytest.mark.timeout(90)

BODY = json.dumps(
    {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
).encode()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def anthropic_error(self) -> dict:
        """The body as an Anthropic error ({"type": "error", "error": {"type", "message"}})."""
        assert self.headers.get("content-type", "").startswith("application/json"), (
            self.headers,
            self.body[:300],
        )
        data = json.loads(self.body)
        assert data["type"] == "error" and data["error"]["type"] and data["error"]["message"], data
        return data


def send_raw(port: int, data: bytes, timeout: float = 15.0) -> Reply:
    """Writes `data`, reads the response until the server closes (requests say Connection:
    close). A server that neither answers nor closes within `timeout` fails the test: a hang."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may answer and close before taking everything: then read the answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"the gateway hung: no answer to {data[:80]!r}") from None
            if not chunk:
                break
            chunks.append(chunk)
            if _complete(b"".join(chunks)):
                break  # answered in full; do not wait out the server's lingering close
            if time.monotonic() > deadline:
                raise AssertionError(f"the gateway hung: endless answer to {data[:80]!r}")
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/"), f"no HTTP answer to {data[:80]!r}: {raw[:200]!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return Reply(status, headers, body)


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def request(method: str, path: str, headers: list[tuple[str | bytes, str | bytes]], body: bytes | None = b"",
            *, content_length: bool = True) -> bytes:
    def b(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode()

    head = f"{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n".encode()
    for name, value in headers:
        head += b(name) + b": " + b(value) + b"\r\n"
    if body is not None and content_length:
        head += f"Content-Length: {len(body)}\r\n".encode()
    return head + b"\r\n" + (body or b"")


def chunked(body: bytes, size: int = 65536) -> bytes:
    out = b""
    for start in range(0, len(body), size):
        piece = body[start:start + size]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def upstream_saw(stack: Stack, case: str) -> bool:
    return any(r.headers.get("x-case") == case for r in stack.upstream.standin.requests)  # type: ignore[attr-defined]


def gateway_alive(stack: Stack) -> None:
    assert stack.services["gateway"].running(), stack.log("gateway")[-3000:]
    assert stack.healthy("gateway")


PASS_THROUGH = {
    # case: (method, path, extra headers, body, status the stand-in answers)
    "malformed-json": ("POST", "/anthropic/v1/messages", [], b'{"model": "claude-haiku-4-5", "messa', 400),
    "not-json-at-all": ("POST", "/anthropic/v1/messages", [], b"model=claude&max_tokens=5", 400),
    "non-utf8-body": ("POST", "/anthropic/v1/messages", [], b'\xff\xfe{"model": "\xc3\x28"}', 400),
    "non-utf8-header": ("POST", "/anthropic/v1/messages", [("x-note", b"caf\xe9 \xff\xfe")], BODY, 200),
    "unicode-credential": (
        "POST",
        "/anthropic/v1/messages",
        [("x-api-key", "sk-ant-ключ-🔑-é".encode())],
        BODY,
        200,
    ),
    "non-utf8-credential": (
        "POST",
        "/anthropic/v1/messages",
        [("x-api-key", b"sk-ant-\xff\xfe\xfd-key")],
        BODY,
        200,
    ),
    "credential-with-spaces": (
        "POST",
        "/anthropic/v1/messages",
        [("x-api-key", "sk ant key with spaces")],
        BODY,
        200,
    ),
    "bearer-odd-spacing": (
        "POST",
        "/anthropic/v1/messages",
        [("authorization", "bEaReR    sk-ant-odd\t")],
        BODY,
        200,
    ),
    "very-long-credential": (
        "POST",
        "/anthropic/v1/messages",
        [("x-api-key", "sk-ant-" + "k" * 6000)],
        BODY,
        200,
    ),
    "wrong-method-get": ("GET", "/anthropic/v1/messages", [], None, 405),
    "wrong-method-delete": ("DELETE", "/anthropic/v1/messages", [], None, 405),
    "unknown-path": ("POST", "/anthropic/v1/no/such/endpoint", [], BODY, 404),
    "double-v1": ("POST", "/anthropic/v1/v1/messages", [], BODY, 404),
    "odd-query": ("POST", "/anthropic/v1/messages?beta=true&x=%ff%00&&=", [], BODY, 200),
    "many-small-headers": (
        "POST",
        "/anthropic/v1/messages",
        [(f"x-h{i}", "v" * 64) for i in range(60)],
        BODY,
        200,
    ),
}


@pytest.mark.parametrize("case", list(PASS_THROUGH))
def test_odd_but_valid_http_passes_through_to_the_upstream_which_decides(
    shared_stack: Stack, case: str
) -> None:
    method, path, extra, body, upstream_status = PASS_THROUGH[case]
    headers: list[tuple[str | bytes, str | bytes]] = [("x-case", case)]
    if not any(str(name).lower() in ("x-api-key", "authorization") for name, _ in extra):
        headers.append(("x-api-key", new_credential("odd")))
    reply = send_raw(shared_stack.ports["gateway"], request(method, path, headers + extra, body))
    assert upstream_saw(shared_stack, case), f"{case} did not reach the upstream: {reply}"
    assert reply.status == upstream_status, reply
    assert reply.headers.get("request-id", "").startswith("req_"), "not the upstream's answer"
    if reply.status >= 400:
        reply.anthropic_error()
    gateway_alive(shared_stack)


def test_what_the_gateway_refuses_itself_gets_an_anthropic_shaped_error(shared_stack: Stack) -> None:
    port = shared_stack.ports["gateway"]
    key = ("x-api-key", new_credential("refused"))
    limit = SHARED_MAX_REQUEST_BYTES
    cases = {
        "no-credential": (
            request("POST", "/anthropic/v1/messages", [("x-case", "no-credential")], BODY),
            401,
            "authentication_error",
        ),
        "empty-bearer": (
            request(
                "POST",
                "/anthropic/v1/messages",
                [("x-case", "empty-bearer"), ("authorization", "Bearer   ")],
                BODY,
            ),
            401,
            "authentication_error",
        ),
        "huge-body": (
            request("POST", "/anthropic/v1/messages", [("x-case", "huge-body"), key], b"x" * (limit + 1)),
            413,
            "request_too_large",
        ),
        "huge-chunked-body": (
            request(
                "POST",
                "/anthropic/v1/messages",
                [("x-case", "huge-chunked-body"), key, ("transfer-encoding", "chunked")],
                chunked(b"y" * (3 * limit)),
                content_length=False,
            ),
            413,
            "request_too_large",
        ),
        "huge-declared-length": (
            request(
                "POST",
                "/anthropic/v1/messages",
                [("x-case", "huge-declared-length"), key, ("content-length", str(50 * limit))],
                b"{}",
                content_length=False,
            ),
            413,
            "request_too_large",
        ),
    }
    for case, (data, status, error_type) in cases.items():
        reply = send_raw(port, data)
        assert reply.status == status, (case, reply)
        assert reply.anthropic_error()["error"]["type"] == error_type, case
        assert not upstream_saw(shared_stack, case), f"{case} reached the upstream"
    # Just under the limit still goes through.
    padding = limit - len(BODY) - 64
    under = json.dumps(
        {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": "x" * padding}]}
    )
    reply = send_raw(
        port, request("POST", "/anthropic/v1/messages", [("x-case", "under-limit"), key], under.encode())
    )
    assert reply.status == 200 and upstream_saw(shared_stack, "under-limit"), reply
    gateway_alive(shared_stack)


PROTOCOL_GARBAGE = {
    "header-line-over-64KiB": request("POST", "/anthropic/v1/messages", [("x-big", "h" * 70_000)], BODY),
    "too-many-headers": request(
        "POST", "/anthropic/v1/messages", [(f"x-h{i}", "v") for i in range(300)], BODY
    ),
    "url-over-64KiB": request("GET", "/anthropic/v1/models?" + "q" * 70_000, [], None),
    "control-char-in-header": request("POST", "/anthropic/v1/messages", [("x-note", b"a\x01b")], BODY),
    "invalid-method": b"GE{T} /anthropic/v1/models HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    "tls-on-plain-port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64),
    "binary-noise": bytes(range(256)) * 4,
    "http-0.9": b"GET /anthropic/v1/models\r\n\r\n",
    "bad-chunk-size": request(
        "POST",
        "/anthropic/v1/messages",
        [("transfer-encoding", "chunked"), ("x-api-key", "sk-ant-chunk-0123")],
        b"zz\r\nabc\r\n0\r\n\r\n",
        content_length=False,
    ),
}


@pytest.mark.parametrize("case", list(PROTOCOL_GARBAGE))
def test_invalid_http_is_refused_with_a_4xx_and_the_gateway_keeps_serving(
    shared_stack: Stack, case: str
) -> None:
    """Not HTTP the upstream could take: aiohttp's parser answers 400 before any handler runs
    (its plain-text body is not ours to shape), and the gateway carries on."""
    reply = send_raw(shared_stack.ports["gateway"], PROTOCOL_GARBAGE[case])
    assert 400 <= reply.status < 500, reply
    gateway_alive(shared_stack)


@pytest.mark.parametrize("service", ["gateway", "api"])
def test_a_malformed_credential_header_never_reaches_the_service_log(
    shared_stack: Stack, service: str
) -> None:
    """HTTP servers log parse errors, some with the offending header line; a credential header
    that fails to parse (a control character in it, or longer than 64 KiB) must not be written
    to the service's log."""
    secret = "sk-ant-api03-PARSELEAK-" + new_credential("parse")[-30:]
    port = shared_stack.ports[service]
    path = "/anthropic/v1/messages" if service == "gateway" else "/v1/agents/resolve"
    send_raw(port, request("POST", path, [("x-api-key", secret.encode() + b"\x01")], BODY))
    send_raw(port, request("POST", path, [("x-api-key", secret + "k" * 70_000)], BODY))
    time.sleep(0.3)
    log = shared_stack.services[service].log_path.read_bytes()
    assert secret.encode() not in log, f"a credential was written to the {service} log"


def test_a_path_outside_anthropic_gets_an_anthropic_shaped_404_that_names_the_right_base_url(
        shared_stack: Stack) -> None:
    reply = send_raw(shared_stack.ports["gateway"], request(
        "POST", "/v1/messages", [("x-api-key", new_credential("nopfx"))], BODY))
    assert reply.status == 404
    assert "/anthropic" in reply.anthropic_error()["error"]["message"]


async def test_half_sent_requests_and_idle_connections_neither_hang_nor_stop_the_gateway(
        shared_stack: Stack) -> None:
    port = shared_stack.ports["gateway"]
    idle: list[socket.socket] = []
    try:
        for n in range(64):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            # Headers begun but never finished, or a body promised and never sent.
            sock.sendall(
                b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: g\r\nx-api-key: sk-ant-idle\r\n"
                if n % 2
                else request(
                    "POST",
                    "/anthropic/v1/messages",
                    [("x-api-key", "sk-ant-idle-0123"), ("content-length", "100000")],
                    b'{"model"',
                    content_length=False,
                )
            )
            idle.append(sock)
        # With all of those open, a normal client is served as usual.
        results = await run_calls(shared_stack.anthropic_base_url, new_credential("afterbad"), load_mix(8),
                                  concurrency=4)
        assert all(r.ok for r in results), [r.error for r in results]
    finally:
        for sock in idle:
            sock.close()
    await asyncio.sleep(0.2)
    gateway_alive(shared_stack)
    results = await run_calls(
        shared_stack.anthropic_base_url, new_credential("afterbad2"), load_mix(4), concurrency=4
    )
    assert all(r.ok for r in results)
