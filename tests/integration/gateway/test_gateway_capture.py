"""Every relayed call yields exactly one record, whatever a client or the upstream sends: header
bytes that are not UTF-8, br/zstd/stacked encodings, bodies over the cap, a stream of very
many deltas; the credential reaches the record by no route; capture runs off the event loop."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway
from smoltbot.gateway.capture import CaptureLimits
from smoltbot.v1 import exchange_pb2
from tests.integration.gateway.helpers import (
    metrics_of,
    spooled_on_disk,
    unused_address,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)

MODEL = "claude-opus-4-7"
# Characters JSON escapes, so the escaped form of the key differs from the key.
ODD_KEY = 'sk-ant-h2"odd\\key/0123456789'


def call(text: str = "hello", **extra: object) -> dict[str, object]:
    return {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": text}], **extra}


async def post_raw(http: httpx.AsyncClient, url: str, **kwargs: object) -> tuple[int, bytes]:
    """Status and body as relayed (httpx's own decoding is not under test, and trips on zstd)."""
    async with http.stream("POST", url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status_code, b"".join([chunk async for chunk in response.aiter_raw()])


async def records(gateway: RunningGateway, settings: Settings, tmp_path: Path, count: int,
                  ) -> list[exchange_pb2.Exchange]:
    await wait_for(lambda: gateway.gateway.spool.building == 0 and gateway.gateway.spool.depth >= count, 30,
                   f"{count} record(s) to be spooled")
    found = await spooled_on_disk(Path(settings.home), tmp_path, count)
    assert len(found) == count
    return found


@pytest.mark.parametrize("stream", [False, True])
async def test_br_zstd_and_stacked_replies_are_recorded_decoded(lone_gateway: RunningGateway,
                                                                gateway_settings: Settings, tmp_path: Path,
                                                                stream: bool) -> None:
    asks = [{"accept-encoding": "br"}, {"accept-encoding": "zstd, gzip"}, {"x-standin-encoding": "gzip, br"},
            {"x-standin-encoding": "deflate, zstd"}]
    async with httpx.AsyncClient() as http:
        for headers in asks:
            status, _ = await post_raw(http, lone_gateway.base_url + "/anthropic/v1/messages",
                                       json=call(stream=stream),
                                       headers={"x-api-key": "sk-test-encodings", **headers})
            assert status == 200
    found = await records(lone_gateway, gateway_settings, tmp_path, len(asks))
    for exchange, headers in zip(found, asks, strict=True):
        capture = exchange.response.body_capture
        asked = headers.get("x-standin-encoding") or headers["accept-encoding"][:4].strip(", ")
        assert capture.content_encoding == asked
        expected_form = exchange_pb2.BODY_FORM_REASSEMBLED if stream else exchange_pb2.BODY_FORM_DECODED
        assert capture.form == expected_form
        message = json.loads(exchange.response.body)
        assert message["content"][0]["text"].startswith("Hello!"), capture.note
        assert exchange.outcome == exchange_pb2.EXCHANGE_OUTCOME_COMPLETE


async def test_an_undecodable_encoding_is_recorded_as_such_with_size_and_sha256(
        lone_gateway: RunningGateway, gateway_settings: Settings, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        status, sent = await post_raw(http, lone_gateway.base_url + "/anthropic/v1/messages", json=call(),
                                      headers={"x-api-key": "sk-test-encodings",
                                               "x-standin-encoding": "x-martian"})
    assert status == 200
    (exchange,) = await records(lone_gateway, gateway_settings, tmp_path, 1)
    capture = exchange.response.body_capture
    assert capture.form == exchange_pb2.BODY_FORM_UNDECODABLE and "x-martian" in capture.note
    assert capture.wire_size == len(sent) and capture.wire_sha256 == hashlib.sha256(sent).hexdigest()
    assert exchange.response.body == sent


async def test_header_values_with_any_bytes_yield_one_faithful_record(
        lone_gateway: RunningGateway, gateway_settings: Settings, tmp_path: Path) -> None:
    body = json.dumps(call()).encode()
    head = (b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: sk-test-bytes\r\n"
            b"Content-Type: application/json\r\nx-odd: caf\xe9 \xff\xfe end\r\n"
            b"x-smoltbot-session: s\xe9ss\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", lone_gateway.port)
    writer.write(head + body)
    await writer.drain()
    reply = await reader.read()
    writer.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    (exchange,) = await records(lone_gateway, gateway_settings, tmp_path, 1)
    odd = next(h for h in exchange.request.headers if h.name.lower() == "x-odd")
    assert odd.raw_value == b"caf\xe9 \xff\xfe end"
    assert odd.value == "caf\ufffd \ufffd\ufffd end"
    session = next(h for h in exchange.request.headers if h.name.lower() == "x-smoltbot-session")
    assert session.raw_value == b"s\xe9ss"


async def test_the_credential_reaches_the_record_by_no_route(
        lone_gateway: RunningGateway, gateway_settings: Settings, tmp_path: Path) -> None:
    escaped = json.dumps(ODD_KEY)[1:-1]
    said = f"my key is {ODD_KEY} and again {ODD_KEY}"
    async with httpx.AsyncClient() as http:
        for stream in (False, True):
            # The model repeats the key (echo), split over deltas when streamed; the request body is
            # gzip-encoded; the key also rides in a query parameter and in other credential headers.
            response = await http.post(
                lone_gateway.base_url
                + f"/anthropic/v1/messages?beta=true&Api_Key={ODD_KEY}&key=other-secret",
                content=gzip.compress(json.dumps(call(said, stream=stream)).encode()),
                headers={"x-api-key": ODD_KEY, "content-encoding": "gzip", "content-type": "application/json",
                         "anthropic-api-key": ODD_KEY, "x-goog-api-key": "goog-secret-value",
                         "api-key": "other",
                         "x-standin-scenario": "echo", "x-note": f"key={ODD_KEY}"})
            assert response.status_code == 200, response.text
            if not stream:  # the client gets every byte unchanged, the key included
                assert ODD_KEY in response.json()["content"][0]["text"]
    found = await records(lone_gateway, gateway_settings, tmp_path, 2)
    for exchange in found:
        raw = exchange.SerializeToString()
        for form in (ODD_KEY, escaped, "goog-secret-value", "other-secret"):
            assert form.encode() not in raw, f"{form!r} in the record"
        names = {h.name.lower() for h in exchange.request.headers}
        assert not names & {"x-api-key", "anthropic-api-key", "x-goog-api-key", "api-key"}
        assert exchange.request.query == "beta=true"
        assert json.loads(exchange.request.body)["messages"][0]["content"].count("[credential removed]") == 2
        assert json.loads(exchange.response.body)["content"][0]["text"].count("[credential removed]") == 2
    for path in (Path(gateway_settings.home) / "spool").iterdir():
        assert ODD_KEY.encode() not in path.read_bytes() and escaped.encode() not in path.read_bytes()


async def test_bodies_over_the_cap_are_recorded_truncated_with_full_size_and_sha256(
        start, gateway_settings: Settings, tmp_path: Path) -> None:
    gateway = await start(registry=unused_address(), observer=unused_address(),
                          max_exchange_bytes=1024 * 1024)
    limit = gateway.gateway.capture_limits.body_bytes
    body = json.dumps(call("x" * (limit + 100_000))).encode()
    async with httpx.AsyncClient() as http:
        response = await http.post(gateway.base_url + "/anthropic/v1/messages", content=body,
                                   headers={"x-api-key": "sk-test-big", "content-type": "application/json"})
    assert response.status_code == 200
    (exchange,) = await records(gateway, gateway_settings, tmp_path, 1)
    capture = exchange.request.body_capture
    assert capture.truncated and len(exchange.request.body) == limit
    assert capture.wire_size == len(body) and capture.wire_sha256 == hashlib.sha256(body).hexdigest()
    assert exchange.request.body == body[:limit]
    assert exchange.ByteSize() <= 1024 * 1024


async def test_a_record_that_cannot_be_built_is_replaced_by_a_minimal_one_and_counted(
        lone_gateway: RunningGateway, gateway_settings: Settings, tmp_path: Path) -> None:
    # Limits no record can meet: building fails, and the call is still recorded.
    lone_gateway.gateway.capture_limits = CaptureLimits(record_bytes=300, body_bytes=100, headers_bytes=100)
    async with httpx.AsyncClient() as http:
        response = await http.post(lone_gateway.base_url + "/anthropic/v1/messages", json=call(),
                                   headers={"x-api-key": "sk-test-minimal"})
    assert response.status_code == 200
    (exchange,) = await records(lone_gateway, gateway_settings, tmp_path, 1)
    assert "RecordTooLarge" in exchange.capture_failure
    assert exchange.request.path == "/v1/messages" and exchange.response.status == 200
    assert exchange.agent_hash and exchange.timings.ended_at.seconds
    metrics = await metrics_of(lone_gateway)
    assert metrics["smoltbot_gateway_capture_failures_total"] == 1
    async with httpx.AsyncClient() as http:
        health = (await http.get(lone_gateway.base_url + "/health")).json()
    assert health["capture"]["failures"] == 1


async def test_health_answers_while_a_large_stream_is_captured_and_every_delta_is_kept(
        lone_gateway: RunningGateway, gateway_settings: Settings, tmp_path: Path) -> None:
    deltas = 300_000  # about 33 MB of events
    answered = 0
    done = asyncio.Event()

    async def poll_health() -> None:
        nonlocal answered
        async with httpx.AsyncClient() as http:
            while not done.is_set():
                assert (await http.get(lone_gateway.base_url + "/health", timeout=30)).status_code == 200
                answered += 1
                await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll_health())
    headers = {"x-api-key": "sk-test-tiny", "x-standin-scenario": "tiny_deltas",
               "x-standin-deltas": str(deltas)}
    async with httpx.AsyncClient(timeout=60) as http, http.stream(
            "POST", lone_gateway.base_url + "/anthropic/v1/messages", json=call(stream=True),
            headers=headers) as response:
        size = sum([len(chunk) async for chunk in response.aiter_raw()])
    (exchange,) = await records(lone_gateway, gateway_settings, tmp_path, 1)
    done.set()
    await poller
    assert answered > 0
    text = json.loads(exchange.response.body)["content"][0]["text"]
    assert len(text) == deltas and text.startswith("abcdefghija")
    assert exchange.response.event_count == deltas + 6
    assert exchange.response.body_capture.wire_size == size
    assert exchange.outcome == exchange_pb2.EXCHANGE_OUTCOME_COMPLETE



async def test_a_credential_with_bytes_that_are_not_utf8_is_recorded_without_it(
        lone_gateway: RunningGateway, gateway_settings: Settings, tmp_path: Path) -> None:
    key = b"sk-ant-h2-fuzz-0123456789\xb6\x9a"
    body = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"' + key + b'"}]}'
    head = (b"POST /anthropic/v1/messages?api_key=sk-ant-h2-fuzz-0123456789%B6%9A HTTP/1.1\r\n"
            b"Host: x\r\nx-api-key: " + key +
            b"\r\nContent-Type: application/json\r\nx-echo: " + key + b"\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", lone_gateway.port)
    writer.write(head + body)
    await writer.drain()
    reply = await reader.read()
    writer.close()
    assert reply.startswith(b"HTTP/1.1 "), reply[:100]
    (exchange,) = await records(lone_gateway, gateway_settings, tmp_path, 1)
    assert not exchange.capture_failure
    raw = exchange.SerializeToString()
    assert b"0123456789" not in raw, [line for line in str(exchange).splitlines() if "0123456789" in line]
