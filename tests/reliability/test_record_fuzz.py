"""Fuzz: every call is either refused by the gateway with a clear error, or relayed and recorded
exactly once.

Over request targets (plain paths, absolute-form, CONNECT, `*`, dot segments in any encoding,
random path characters), header bytes (any byte a header value may carry, non-UTF-8 included,
and bytes HTTP forbids), request and accepted content-encodings (gzip, deflate, br, zstd,
unknown, corrupt), streaming or not, and body sizes up to past the gateway's limit, each call
written byte for byte on a raw socket to the real gateway (shared stack: gateway, registry,
observer, API as processes; the stand-in upstream in a thread, so what it received is visible):

* relayed (the upstream saw the call): the client got the upstream's answer (its request-id),
  and the real observer stored exactly one exchange for the call;
* refused (the upstream saw nothing): a 4xx in Anthropic's error shape, or, for bytes no HTTP
  parser may accept (control characters in a header), the HTTP parser's 400; and nothing stored.

Each call has a credential of its own, so its exchange is found by the credential's hash in the
observer's `exchanges` table.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import secrets
import socket
import sqlite3
import time
import zlib
from dataclasses import dataclass, field

import brotli
import pytest
import zstandard
from aiohttp.http_parser import SINGLETON_HEADERS
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from smoltbot.core.identity import agent_hash, load_hash_secret
from tests.reliability.conftest import SHARED_MAX_REQUEST_BYTES
from tests.reliability.harness import MODEL, Stack, wait_until

pytestmark = pytest.mark.timeout(240)

EXAMPLES = int(os.environ.get("SMOLTBOT_FUZZ_EXAMPLES", "80"))
#: A failing input is reported as found (with the reply, see `note`): shrinking one means a
#: record wait per attempt, minutes in all. SMOLTBOT_FUZZ_SHRINK=1 shrinks it.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("SMOLTBOT_FUZZ_SHRINK", "0") == "1" else [])

PLAIN_TARGETS = [
    "/anthropic/v1/messages", "/anthropic/v1/messages?beta=true", "/anthropic/v1/messages/count_tokens",
    "/anthropic/v1/models", "/anthropic/v1/models?limit=2", "/anthropic/v1/models/claude-haiku-4-5",
    "/anthropic/v1/no/such/endpoint?x=%ff%00", "/anthropic/v1/messages/batches", "/anthropic/",
]
FOREIGN_TARGETS = [
    "http://127.0.0.1:9/anthropic/v1/messages", "http://user:pw@example.com/anthropic/v1/messages",
    "https://example.com:8443/anthropic/v1/models", "example.com:443", "*",
    "//example.com/anthropic/v1/messages",
    "/anthropic/../v1/messages", "/anthropic/%2e%2e/v1/messages", "/anthropic/v1/.%2E/.%2e/x",
    "/anthropic/%252e%252e/v1", "/anthropic/..;/v1/messages", "/anthropic/v1%2fmessages", "/anthropic/..%5cx",
    "/anthropic/%c0%ae%c0%ae/x", "/anthropic/%ef%bc%8e%ef%bc%8e/x", "/%61nthropic/v1/messages",
    "/anthropic/v1/messages#frag", "/v1/messages", "/anthropicX/v1/messages",
    # The other providers' prefixes: refused the same way, in their own error shapes. (Only
    # refusals: the shared stack's gateway has no OpenAI or Gemini stand-in behind it.)
    "http://127.0.0.1:9/openai/v1/chat/completions", "/openai/%2e%2e/v1/responses", "/openai/v1%2fresponses",
    "/%6fpenai/v1/chat/completions", "//example.com/openai/v1/responses",
    "http://user:pw@example.com/gemini/v1beta/models", "/gemini/v1beta/models/..%2fx:generateContent",
    "/gemini/%252e%252e/v1beta", "/%67emini/v1beta/models/gemini-2.5-flash:generateContent",
]
PATH_CHARS = "abcXYZ019-_~.%;:@!$&'()*+,=/\\?#"
#: Bytes a header value may carry (RFC 9110 §5.5: VCHAR, obs-text, SP, HTAB), and bytes it may not.
VALUE_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
#: ... but not CR or LF, which would end the header line rather than corrupt it.
FORBIDDEN_IN_A_LINE = [b for b in CONTROL_BYTES if b not in b"\r\n"]
HEADER_NAMES = ["x-fuzz-note", "user-agent", "anthropic-beta", "anthropic-version", "x-smoltbot-session",
                "x-claude-code-session-id", "x-session-affinity", "x-stainless-lang", "cookie", "referer"]
ENCODINGS = [None, "gzip", "deflate", "br", "zstd", "gzip, br", "x-unknown", "corrupt-gzip", "corrupt-zstd"]
ACCEPT = [None, "gzip", "deflate", "br", "zstd", "gzip, deflate, br, zstd", "identity", "x-unknown", "*"]
SCENARIOS = [None, "thinking", "tool_use", "mid_stream_error", "error_401", "error_403", "error_529", "drop"]
CREDENTIAL_FORMS = os.environ.get("SMOLTBOT_FUZZ_CREDENTIALS", "x-api-key,bearer,odd-bytes,none").split(",")
SIZES = [0, 2, 200, 20_000, 300_000, SHARED_MAX_REQUEST_BYTES + 1]


def encode_body(body: bytes, encoding: str | None) -> bytes:
    if encoding is None or encoding == "x-unknown":
        return body
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "br":
        return brotli.compress(body)
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(body)
    if encoding == "gzip, br":
        return brotli.compress(gzip.compress(body))
    if encoding == "corrupt-gzip":
        return gzip.compress(body)[:-9] + b"\x00garbage"
    if encoding == "corrupt-zstd":
        return b"\x28\xb5\x2f\xfd" + body[:64]
    raise AssertionError(encoding)


@dataclass
class Call:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunked: bool
    credential: bytes | None
    tag: str = field(default_factory=lambda: secrets.token_hex(8))

    def raw(self) -> bytes:
        head = f"{self.method} {self.target} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n".encode()
        head += b"x-fuzz-call: " + self.tag.encode() + b"\r\n"
        for name, value in self.headers:
            head += name + b": " + value + b"\r\n"
        if self.chunked:
            head += b"Transfer-Encoding: chunked\r\n\r\n"
            body = b"".join(b"%x\r\n%s\r\n" % (len(self.body[i:i + 65536]), self.body[i:i + 65536])
                            for i in range(0, len(self.body), 65536))
            return head + body + b"0\r\n\r\n"
        return head + b"Content-Length: %d\r\n\r\n" % len(self.body) + self.body

    @property
    def breaks_http(self) -> bool:
        """Not HTTP, refused by the HTTP parser before any handler (with its own plain 400): a
        header value with a byte HTTP forbids, a header that may appear once appearing twice, or
        a CONNECT whose target is not an authority."""
        names = [name.lower().decode() for name, _ in self.headers]
        return any(byte in CONTROL_BYTES for _, value in self.headers for byte in value) or any(
            names.count(name) > 1 for name in SINGLETON_HEADERS) or (
            self.method == "CONNECT" and (self.target.startswith("/") or "://" in self.target))

    def __repr__(self) -> str:  # what hypothesis prints for a failing example: the bytes, bounded
        return f"Call({self.method} {self.target!r}, headers={self.headers!r}, body[{len(self.body)}]=" \
               f"{self.body[:80]!r}, chunked={self.chunked})"


@st.composite
def calls(draw: st.DrawFn) -> Call:
    target = draw(st.one_of(
        st.sampled_from(PLAIN_TARGETS),
        st.sampled_from(FOREIGN_TARGETS),
        st.text(PATH_CHARS, max_size=24).map(lambda tail: "/anthropic/" + tail),
    ))
    method = "POST" if target.startswith("/anthropic/v1/messages") and draw(st.booleans()) else draw(
        st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT"]))
    if target == "*":
        method = "OPTIONS"
    elif not target.startswith("/") and "://" not in target:
        method = "CONNECT"  # authority-form exists only for CONNECT; with another method it is not HTTP
    headers: list[tuple[bytes, bytes]] = []
    credential: bytes | None = None
    form = draw(st.sampled_from(CREDENTIAL_FORMS))
    if form != "none":
        credential = f"sk-ant-api03-fuzz-{secrets.token_hex(12)}".encode()
        if form == "odd-bytes":
            credential += draw(st.binary(min_size=1, max_size=8).map(
                lambda b: bytes(x for x in b if x in VALUE_BYTES and x not in b" \t") or b"\xff"))
        headers.append((b"authorization", b"Bearer " + credential) if form == "bearer"
                       else (b"x-api-key", credential))
    value_bytes = st.sampled_from(list(VALUE_BYTES))
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=4)):
        value = bytes(draw(st.lists(value_bytes, min_size=1, max_size=40)))
        if draw(st.integers(0, 9)) == 0:  # now and then a byte HTTP forbids
            value += bytes([draw(st.sampled_from(FORBIDDEN_IN_A_LINE))])
        headers.append((name.encode(), value))
    if (accept := draw(st.sampled_from(ACCEPT))) is not None:
        headers.append((b"accept-encoding", accept.encode()))
    if (scenario := draw(st.sampled_from(SCENARIOS))) is not None:
        headers.append((b"x-standin-scenario", scenario.encode()))
    size = draw(st.sampled_from(SIZES))
    stream = draw(st.booleans())
    body = b""
    if size:
        message = {"model": MODEL, "max_tokens": 32, "stream": stream,
                   "messages": [{"role": "user", "content": "x" * max(0, size - 120)}]}
        body = json.dumps(message).encode()[:size] if size < 120 else json.dumps(message).encode()
        encoding = draw(st.sampled_from(ENCODINGS))
        if encoding is not None:
            body = encode_body(body, encoding)
            headers.append((b"content-encoding", b"gzip" if encoding == "corrupt-gzip" else
                            b"zstd" if encoding == "corrupt-zstd" else encoding.encode()))
        headers.append((b"content-type", b"application/json"))
    return Call(method, target, headers, body, draw(st.booleans()), credential)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def send(port: int, call: Call, timeout: float = 20.0) -> Reply:
    """Writes the call, reads one response (a HEAD's has no body; others by length or chunks, or
    until the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # A server may answer and close before taking everything: then read the answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(call.raw())
        raw = b""
        deadline = time.monotonic() + timeout
        while not _complete(raw, call.method):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
            assert time.monotonic() < deadline, f"no complete answer in {timeout}s"
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1."), f"no HTTP answer: {raw[:200]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return Reply(int(lines[0].split()[1]), headers, body)


def _complete(raw: bytes, method: str) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    status = int(head.split(b" ", 2)[1])
    if method == "HEAD" or status in (204, 304):
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return body.endswith(b"0\r\n\r\n")
    return False


def stored(database: str, hashed: str) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
        return int(db.execute("SELECT count(*) FROM exchanges WHERE agent_hash = ?", (hashed,)).fetchone()[0])


def test_every_call_is_refused_clearly_or_relayed_and_recorded_exactly_once(shared_stack: Stack) -> None:
    port = shared_stack.ports["gateway"]
    upstream = shared_stack.upstream.standin  # type: ignore[attr-defined]
    database = str(shared_stack.home / "smoltbot.db")
    secret = load_hash_secret(shared_stack.home)
    refused_hashes: list[tuple[Call, str]] = []
    relayed_hashes: list[tuple[Call, str]] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=PHASES,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(call=calls())
    def one_call(call: Call) -> None:
        note(repr(call))
        reply = send(port, call)
        note(f"reply: {reply.status} {reply.headers} {reply.body[:300]!r}")
        forwarded = [r for r in list(upstream.requests) if r.headers.get("x-fuzz-call") == call.tag]
        hashed = ""
        if call.credential is not None:
            hashed = agent_hash(call.credential.decode("utf-8", "surrogateescape").strip(), secret)
        # The gateway's own refusals are 4xx in Anthropic's shape without an upstream request-id.
        # Anything else was relayed, or tried (a 502 when the upstream broke off): the stand-in
        # records a call only once it has read the body, and answers one it cannot decode
        # without recording it, so `forwarded` alone cannot tell.
        refusal = reply.status < 500 and "request-id" not in reply.headers and reply.headers.get(
            "content-type", "").startswith("application/json")
        if call.breaks_http or (refusal and not forwarded):
            assert not forwarded, "refused, yet forwarded"
            assert 400 <= reply.status < 500, f"not a refusal: {reply.status} {reply.body[:300]!r}"
            if not call.breaks_http and call.method != "HEAD":
                error = json.loads(reply.body)
                if "/openai" in call.target or "/%6fpenai" in call.target:
                    assert set(error["error"]) == {"message", "type", "param", "code"}, error
                    assert error["error"]["type"] and error["error"]["message"], error
                elif "/gemini" in call.target or "/%67emini" in call.target:
                    assert set(error["error"]) == {"code", "message", "status"}, error
                    assert error["error"]["code"] == reply.status and error["error"]["message"], error
                else:
                    assert error["type"] == "error", error
                    assert error["error"]["type"] and error["error"]["message"], error
            if hashed:
                refused_hashes.append((call, hashed))
            return
        assert len(forwarded) <= 1, f"forwarded {len(forwarded)} times"
        assert hashed, f"relayed without a credential: {reply.status} {reply.body[:300]!r}"
        wait_until(lambda: stored(database, hashed) >= 1, 8, "the call's exchange in the observer", 0.05)
        relayed_hashes.append((call, hashed))

    one_call()

    # Whatever was going to be shipped has been: then no call has a second record, and no
    # refused call has one at all.
    wait_until(lambda: shared_stack.spool_depth() == 0, 30, "the gateway's spool to drain")
    time.sleep(0.5)
    doubles = [(call, n) for call, hashed in relayed_hashes if (n := stored(database, hashed)) != 1]
    assert not doubles, f"relayed calls without exactly one record: {doubles[:3]}"
    recorded = [call for call, hashed in refused_hashes if stored(database, hashed)]
    assert not recorded, f"refused calls that were recorded: {recorded[:3]}"
    assert relayed_hashes and refused_hashes, "the strategy no longer reaches both outcomes"
