"""The gateway talks only to its configured upstream: a request target that is not a plain path
under /anthropic gets a 400 in the Anthropic error shape and is never forwarded, and the upstream
URL is the upstream setting plus the request's path and query, nothing else.

Requests are written byte for byte on raw sockets, so no HTTP client normalises them first.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from smoltbot.gateway import RunningGateway
from tests.integration.gateway.helpers import CREDENTIAL, unused_address
from tests.support.anthropic_standin import AnthropicStandin

pytestmark = pytest.mark.timeout(60)

BODY = json.dumps({"model": "claude-opus-4-7", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "hello"}]}).encode()


async def send_raw(port: int, request_line: bytes, body: bytes = BODY) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection, exactly as written; returns (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_line + b"\r\nHost: gateway\r\nConnection: close\r\nx-api-key: "
                     + CREDENTIAL.encode()
                     + b"\r\ncontent-type: application/json\r\ncontent-length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, payload


@pytest.fixture
async def elsewhere() -> object:
    """A second server the gateway must never be steered to."""
    server = AnthropicStandin()
    await server.start()
    yield server
    await server.stop()


def foreign_targets(elsewhere_port: int) -> dict[str, bytes]:
    here = f"127.0.0.1:{elsewhere_port}"
    return {
        "absolute-form": f"POST http://{here}/anthropic/v1/messages HTTP/1.1".encode(),
        # Before the fix, `raw_path[len("/anthropic"):]` of this target appended "@<elsewhere>/..." to
        # the upstream URL, which made the upstream's host:port the userinfo and `elsewhere` the host.
        "absolute-form-with-userinfo": f"POST http://abc@{here}/anthropic/v1/messages HTTP/1.1".encode(),
        "absolute-form-https": f"POST https://user:pw@{here}/anthropic/v1/messages HTTP/1.1".encode(),
        "authority-form": f"CONNECT {here} HTTP/1.1".encode(),
        "connect-with-a-path": b"CONNECT /anthropic/v1/messages HTTP/1.1",
        "asterisk-form": b"OPTIONS * HTTP/1.1",
        "scheme-relative": f"POST //{here}/anthropic/v1/messages HTTP/1.1".encode(),
        "dot-segments": b"POST /anthropic/../anthropic/v1/messages HTTP/1.1",
        "dot-segments-inside": b"POST /anthropic/v1/../v1/messages HTTP/1.1",
        "encoded-dot-segments": b"POST /anthropic/%2e%2e/v1/messages HTTP/1.1",
        "mixed-case-encoded-dots": b"POST /anthropic/.%2E/v1/messages HTTP/1.1",
        "double-encoded-dots": b"POST /anthropic/%252e%252e/v1/messages HTTP/1.1",
        "dot-segment-with-params": b"POST /anthropic/..;/v1/messages HTTP/1.1",
        "single-dot-segment": b"POST /anthropic/./v1/messages HTTP/1.1",
        "encoded-slash": b"POST /anthropic/v1%2fmessages HTTP/1.1",
        "encoded-slash-dots": b"POST /anthropic/..%2fv1/messages HTTP/1.1",
        "encoded-backslash": b"POST /anthropic/..%5cv1/messages HTTP/1.1",
        "backslash": b"POST /anthropic/..\\v1/messages HTTP/1.1",
        "overlong-utf8-dots": b"POST /anthropic/%c0%ae%c0%ae/v1/messages HTTP/1.1",
        # U+FF0E twice: some servers fold full-width characters (NFKC) before resolving dots.
        "full-width-dots": b"POST /anthropic/%ef%bc%8e%ef%bc%8e/v1/messages HTTP/1.1",
        "encoded-nul": b"POST /anthropic/v1/messages%00/.. HTTP/1.1",
        "encoded-prefix": b"POST /%61nthropic/v1/messages HTTP/1.1",
        "fragment": b"POST /anthropic/v1/messages#x HTTP/1.1",
    }


CASES = list(foreign_targets(1))


@pytest.mark.parametrize("case", CASES)
async def test_a_target_that_is_not_a_plain_path_under_the_prefix_is_refused_and_never_forwarded(
        case: str, start, standin: AnthropicStandin, elsewhere: AnthropicStandin) -> None:
    # The upstream setting has a path of its own, so a dot segment that escaped the prefix would
    # still reach the stand-in (it serves /v1/ under any prefix) and be seen there.
    gateway: RunningGateway = await start(registry=unused_address(), observer=unused_address(),
                                          upstream_url=standin.base_url + "/base")
    status, headers, body = await send_raw(gateway.port, foreign_targets(elsewhere.port)[case])
    assert status == 400, (status, body[:300])
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error", error
    assert "/anthropic" in error["error"]["message"], error
    assert standin.requests == [], "forwarded to the upstream"
    assert elsewhere.requests == [], "forwarded to a host the client named"


async def test_the_upstream_url_is_the_upstream_setting_plus_path_and_query(
        start, standin: AnthropicStandin) -> None:
    gateway: RunningGateway = await start(registry=unused_address(), observer=unused_address(),
                                          upstream_url=standin.base_url + "/base")
    target = b"POST /anthropic/v1/messages?beta=true&a=%2e%2e HTTP/1.1"
    status, headers, _ = await send_raw(gateway.port, target)
    assert status == 200 and headers["request-id"].startswith("req_")
    [seen] = standin.requests
    assert (seen.path, seen.query_string) == ("/base/v1/messages", "beta=true&a=..")
    assert seen.headers["host"] == f"127.0.0.1:{standin.port}"
