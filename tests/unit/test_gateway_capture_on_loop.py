"""Which records the gateway builds on its event loop: small calls, compressed ones included as
long as their bodies decode small (a compressed body's thread hand-offs cost more than the call,
issue 16), never one whose small compressed body expands past the limit (a decompression bomb)."""

from __future__ import annotations

import gzip
import json
import time
import zlib

from smoltbot.core.outcomes import ExchangeOutcome
from smoltbot.gateway.capture import Capture
from smoltbot.v1 import exchange_pb2

LIMIT = 64 * 1024
REPLY = json.dumps({"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "hi"}]}).encode()


def capture(*, request_body: bytes = b'{"model": "m"}', request_encoding: str = "",
            response: bytes = REPLY, response_encoding: str = "") -> Capture:
    headers = [("content-type", "application/json")]
    if request_encoding:
        headers.append(("content-encoding", request_encoding))
    call = Capture(agent_hash="ab" * 32, session_hint="", method="POST", path="/v1/messages", query="",
                   request_headers=headers, request_body=request_body, started_ns=time.time_ns())
    call.status = 200
    call.response_headers = [("content-type", "application/json")]
    if response_encoding:
        call.response_headers.append(("content-encoding", response_encoding))
    call.add_chunk(response)
    call.finish(ExchangeOutcome.COMPLETE)
    return call


def test_a_small_gzip_response_is_built_on_the_loop_decoded() -> None:
    call = capture(response=gzip.compress(REPLY), response_encoding="gzip")
    assert call.built_cheaply_here(LIMIT)
    record = call.to_exchange("gateway-1")
    assert record.response.body == REPLY
    assert record.response.body_capture.form == exchange_pb2.BODY_FORM_DECODED


def test_a_small_deflate_request_body_is_built_on_the_loop() -> None:
    body = json.dumps({"model": "m", "messages": []}).encode()
    call = capture(request_body=zlib.compress(body), request_encoding="deflate")
    assert call.built_cheaply_here(LIMIT)
    assert call.to_exchange("gateway-1").request.body == body


def test_a_small_body_that_expands_past_the_limit_goes_to_the_capture_thread() -> None:
    bomb = gzip.compress(b"\0" * (4 * 1024 * 1024))  # about 4 KiB on the wire
    assert len(bomb) < LIMIT
    assert not capture(response=bomb, response_encoding="gzip").built_cheaply_here(LIMIT)
    assert not capture(request_body=bomb, request_encoding="gzip").built_cheaply_here(LIMIT)
    # Each body fits alone; together they pass the limit.
    half = gzip.compress(b"x" * (LIMIT // 2 + 1))
    assert not capture(request_body=half, request_encoding="gzip", response=half,
                       response_encoding="gzip").built_cheaply_here(LIMIT)


def test_an_undecodable_body_is_built_on_the_loop_as_sent() -> None:
    call = capture(response=b"not gzip at all", response_encoding="gzip")
    assert call.built_cheaply_here(LIMIT)
    record = call.to_exchange("gateway-1")
    assert record.response.body_capture.form == exchange_pb2.BODY_FORM_UNDECODABLE
