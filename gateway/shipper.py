"""Ships spooled exchanges to the Observer over one long-lived `Ingest` stream.

Every exchange goes to the spool first (`submit`), then onto the stream. The Observer acks each
one: ACCEPTED or DUPLICATE removes it from the spool. When the stream breaks, the shipper
reconnects with backoff and sends every unacked exchange again, oldest first; the Observer
recognises re-sent ones by exchange id. Nothing here ever blocks or fails a user's call.

One bad exchange never stops the others. An exchange the observer cannot take is tried at most
`max_attempts` times, then set aside (`DeadLetters`) and reported through `on_set_aside`, which
ships a minimal record in its place; the stream moves on. Cannot take means: REJECTED; larger
than the transport carries (set aside before it is sent); or in flight when the stream broke
with a status that points at a message rather than at the observer being away
(`_MESSAGE_FAULTS`). After such a break, the exchanges that were in flight are suspects and
are sent again one at a time, each waiting for its ack, so the next break is blamed exactly.

Exchanges are stored and sent as already-encoded `IngestRequest` bytes (the stream's request
serializer is the identity), so a spooled exchange is never parsed again on its way out.

Batches. When several exchanges are ready at once (under load they gather while gRPC sends the
previous message), they go as one `IngestRequest` with `exchanges` and come back as one
`IngestResponse` with one ack per exchange: one message and one ack for many exchanges instead
of one each, which is most of the shipping cost. A batch is built from the spooled bytes by
rewriting each record's field tag (`exchange`, 1, becomes `exchanges`, 2): concatenated
`IngestRequest`s merge, so nothing is parsed or copied into a new message. One ready exchange
goes alone in the single form, as before. An observer from before batches answers a batch with
an empty REJECTED ack ("carries no exchange"); replies come in request order, so the shipper
knows the reply was the batch's, sends its exchanges again one by one and batches no more on
that stream.

Linger. At most one request goes per `linger` (5 ms): an exchange that finds the last request
younger than that waits for the rest of it, and the exchanges finished meanwhile go with it. A
request and its ack cost the gateway's core more than a small call does (grpcio's hand-offs
between its threads and the loop), so at one call at a time with one request each the shipping
was most of the gateway's own cost (issue 16). The first exchange after a quiet moment goes at
once: a gateway that is not busy adds no delay to its records.

Busy linger. Once a request carried a batch of `_BUSY_BATCH` (4) or more, exchanges are arriving
faster than one per linger, and the next request waits `busy_linger` (20 ms) instead: a request
and its ack cost about the same whatever they carry (grpcio's write, its threads, the ack's trip
back to the loop), so above a few hundred exchanges per second a fixed share of the core went to
shipping per linger, whatever the load (issue 16, round 7). Under load records reach the
observer up to 20 ms after their call ends rather than 5; the first request after a slower
moment (a smaller batch) goes back to `linger`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc

from smoltbot.core.grpc_client import open_channel
from smoltbot.core.tls import TlsConfig
from smoltbot.v1 import exchange_pb2, observer_service_pb2

from .dead_letter import DeadLetters
from .spool import Record, Spool

__all__ = ["Shipper", "encode_batch", "encode_ingest_request"]

logger = logging.getLogger(__name__)

_INGEST_METHOD = "/{}/Ingest".format(
    observer_service_pb2.DESCRIPTOR.services_by_name["ObserverService"].full_name)
#: The field tags of `IngestRequest.exchange` (1) and `.exchanges` (2), both length-delimited.
_SINGLE_TAG, _BATCH_TAG = 0x0A, 0x12
#: At most this many exchanges, and (below the transport's message limit) bytes, per batch.
_BATCH_MAX_COUNT = 256
#: A request that carried this many exchanges or more means a busy gateway (see `busy_linger`).
_BUSY_BATCH = 4
_BATCH_MAX_BYTES = 4 * 1024 * 1024
_Ack = observer_service_pb2.IngestResponse | observer_service_pb2.IngestAck
_ACCEPTED = observer_service_pb2.INGEST_STATUS_ACCEPTED
_DUPLICATE = observer_service_pb2.INGEST_STATUS_DUPLICATE
_REJECTED = observer_service_pb2.INGEST_STATUS_REJECTED
#: A stream that ends with one of these failed on a message (too large, not parseable, a bug in
#: its intake), not because the observer is away: the exchanges in flight are suspects.
_MESSAGE_FAULTS = frozenset({
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
})


def encode_ingest_request(exchange: exchange_pb2.Exchange) -> bytes:
    """`IngestRequest(exchange=exchange)` on the wire, without copying the message into a wrapper."""
    body = exchange.SerializeToString()
    return b"\x0a" + _varint(len(body)) + body


def encode_batch(payloads: list[bytes]) -> bytes:
    """Encoded single-exchange `IngestRequest`s as one `IngestRequest(exchanges=...)`."""
    return b"".join([bytes((_BATCH_TAG,)) + memoryview(payload)[1:] for payload in payloads])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Shipper:
    """Owns the spool's outbound side. `start()` replays what the spool holds; `stop()` flushes."""

    def __init__(self, spool: Spool, address: str, *, max_in_flight: int = 1024,
                 min_backoff: float = 0.1, max_backoff: float = 2.0,
                 on_shipped: Callable[[], None] | None = None,
                 on_acked: Callable[[str], None] | None = None, tls: TlsConfig | None = None,
                 dead_letters: DeadLetters | None = None, max_attempts: int = 3,
                 max_payload_bytes: int | None = None, message_limit: int | None = None,
                 on_set_aside: Callable[[str, bytes, str], None] | None = None,
                 linger: float = 0.005, busy_linger: float = 0.02) -> None:
        self.spool = spool
        self._address = address
        self._tls = tls
        self.dead_letters = dead_letters
        self.max_attempts = max_attempts
        self._max_payload = max_payload_bytes
        self._message_limit = message_limit
        self._on_set_aside = on_set_aside
        #: The suspect sent alone, waiting for its ack (see the module docstring).
        self._isolating: str | None = None
        #: At most one request per `linger` seconds: the exchanges that finish meanwhile go with
        #: the next one as a batch. A request and its ack cost more (grpcio's thread hand-offs)
        #: than the call it records, so one per call kept a busy gateway's core for about a fifth
        #: of each call (issue 16). The first exchange after a quiet `linger` goes at once.
        self.linger = linger
        #: The linger after a request that carried `_BUSY_BATCH` exchanges or more (see the module
        #: docstring): never shorter than `linger`.
        self.busy_linger = busy_linger
        self._last_sent = -max(linger, busy_linger)
        #: How many exchanges the last request carried.
        self._last_count = 0
        self.set_aside = 0
        self._max_in_flight = max_in_flight
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._on_shipped = on_shipped
        self._on_acked = on_acked
        self._queue: collections.deque[Record] = collections.deque()
        self._in_flight: dict[str, Record] = {}
        #: The exchange ids of each request sent on this stream and not yet answered, in order.
        self._sent: collections.deque[tuple[str, ...]] = collections.deque()
        #: False once the observer showed it takes one exchange per request (see the docstring).
        self.batching = True
        self._max_batch_bytes = min(_BATCH_MAX_BYTES, message_limit or _BATCH_MAX_BYTES)
        #: Requests sent, and those of them that carried a batch (for benchmarks and tests).
        self.requests = 0
        self.batches = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stopping = False
        self.connected = False
        self.shipped = 0
        self.acked = 0
        self.rejected = 0

    # ------------------------------------------------------------------ user side

    def submit(self, exchange: exchange_pb2.Exchange) -> None:
        """Spools the exchange and queues it for sending. Synchronous and cheap."""
        self.submit_payload(exchange.exchange_id, encode_ingest_request(exchange))

    def submit_payload(self, exchange_id: str, payload: bytes) -> None:
        """`submit` for an already encoded `IngestRequest`."""
        if self._max_payload is not None and len(payload) > self._max_payload:
            self._set_aside(exchange_id, payload, f"the record is {len(payload)} bytes, more than the "
                                                  f"transport carries ({self._max_payload})")
            return
        record = self.spool.append(exchange_id, payload)
        if record is None:
            self._set_aside(exchange_id, payload, "the record is larger than the whole spool")
            return
        self._drained.clear()
        self._queue.append(record)
        self._wake.set()

    @property
    def observer_ready(self) -> bool:
        """True when the channel to the Observer is connected (cheap: no RPC)."""
        channel = self._channel
        return (channel is not None
                and channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._message_limit is None:
            self._channel = open_channel(self._address, self._tls)
        else:
            self._channel = open_channel(self._address, self._tls, message_limit=self._message_limit)
        if self.spool.depth == 0:
            self._drained.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="smoltbot-shipper")

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Waits (up to `flush_timeout`, and only while connected) until everything is acked, then
        closes the stream and the spool. Whatever is left stays spooled for the next start."""
        if self._task is None:
            await self.spool.close()
            return
        start = time.monotonic()
        deadline = start + flush_timeout
        while self.spool.depth and time.monotonic() < deadline and not self._task.done():
            # Give a reconnect in progress a moment, but never hang shutdown on a dead observer.
            if not self.observer_ready and time.monotonic() - start > min(0.5, flush_timeout):
                break
            try:
                await asyncio.wait_for(self._drained.wait(), timeout=0.05)
            except TimeoutError:
                continue
        self._stopping = True
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self.spool.depth:
            logger.info("shipper stopped with %d exchanges still spooled; they are sent on the next start",
                        self.spool.depth)
        await self.spool.close()

    # ------------------------------------------------------------------ stream

    async def _run(self) -> None:
        backoff = self._min_backoff
        while not self._stopping:
            got_ack = False
            try:
                got_ack = await self._session()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                if error.code() in _MESSAGE_FAULTS:
                    self._blame_in_flight(f"the observer stream broke with {error.code().name}")
                    got_ack = True  # not the observer being away: no need to back off further
                if self.connected or backoff == self._min_backoff:
                    logger.warning("observer stream broken (%s); %d exchanges spooled, reconnecting",
                                   error.code().name, self.spool.depth)
            except Exception:
                logger.exception("observer stream failed; reconnecting")
            finally:
                self.connected = False
            backoff = self._min_backoff if got_ack else min(backoff * 2, self._max_backoff)
            await asyncio.sleep(backoff)

    async def _session(self) -> bool:
        """One Ingest stream: sends everything unacked, then follows the queue. Returns whether
        any ack arrived (a healthy stream), when the stream ends or fails."""
        assert self._channel is not None
        requests = _Requests()
        ingest: grpc.aio.StreamStreamMultiCallable[bytes, observer_service_pb2.IngestResponse]
        ingest = self._channel.stream_stream(
            _INGEST_METHOD, request_serializer=None,
            response_deserializer=observer_service_pb2.IngestResponse.FromString,
        )
        call: grpc.aio.StreamStreamCall[bytes, observer_service_pb2.IngestResponse] = ingest(
            cast("AsyncIterator[Any]", requests))
        self._in_flight = {}
        self._sent = collections.deque()
        self.batching = True
        self._isolating = None
        self._queue = collections.deque(self.spool.unacked())
        state = {"acked": False}
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read_acks(call, state))
        try:
            while True:
                if reader.done():
                    break
                if not self._queue or len(self._in_flight) >= self._max_in_flight or self._isolating:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                record = self._queue.popleft()
                if record.acked or record.exchange_id in self._in_flight:
                    continue
                if record.failures:
                    if self._in_flight:  # a suspect goes alone: wait for the others' acks
                        self._queue.appendleft(record)
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                    self._isolating = record.exchange_id
                elif self.batching and len(self._queue) < _BATCH_MAX_COUNT:
                    linger = self.linger
                    if self._last_count >= _BUSY_BATCH:
                        linger = max(linger, self.busy_linger)
                    wait = self._last_sent + linger - loop.time()
                    if wait > 0:  # see `linger`: the exchanges of the next moment join this one
                        self._queue.appendleft(record)
                        await asyncio.sleep(wait)
                        continue
                records, payload = self._request_from(record)
                for sent in records:
                    self._in_flight[sent.exchange_id] = sent
                self._sent.append(tuple(sent.exchange_id for sent in records))
                if not await requests.write(payload, reader):
                    break  # the stream ended (the reader says how)
                self._last_sent = loop.time()
                self._last_count = len(records)
                self.requests += 1
                self.shipped += len(records)
                if self._on_shipped is not None:
                    for _ in records:
                        self._on_shipped()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as error:
            if not reader.done():
                logger.debug("observer stream write failed: %r", error)
        finally:
            requests.close()
            call.cancel()
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if reader.cancelled():
            return state["acked"]
        failure = reader.exception()
        if isinstance(failure, grpc.aio.AioRpcError) and failure.code() != grpc.StatusCode.CANCELLED:
            raise failure
        return state["acked"]

    def _request_from(self, first: Record) -> tuple[list[Record], bytes]:
        """The next request: `first` alone, or with the ready exchanges behind it as a batch."""
        payload = self.spool.payload_of(first)
        if (not self.batching or first.failures or not self._queue or not payload
                or payload[0] != _SINGLE_TAG):
            return [first], payload
        records, payloads = [first], [payload]
        size = len(payload)
        room = min(_BATCH_MAX_COUNT, self._max_in_flight - len(self._in_flight))
        queue = self._queue
        while queue and len(records) < room:
            record = queue[0]
            if record.acked or record.exchange_id in self._in_flight:
                queue.popleft()
                continue
            if record.failures:
                break  # a suspect goes alone, after this batch is answered
            more = self.spool.payload_of(record)
            if not more or more[0] != _SINGLE_TAG or size + len(more) > self._max_batch_bytes:
                break
            queue.popleft()
            records.append(record)
            payloads.append(more)
            size += len(more)
        if len(records) == 1:
            return records, payload
        self.batches += 1
        return records, encode_batch(payloads)

    async def _read_acks(self, call: grpc.aio.StreamStreamCall[bytes, observer_service_pb2.IngestResponse],
                         state: dict[str, bool]) -> None:
        try:
            async for reply in call:
                if not self.connected:
                    self.connected = True
                    logger.info("observer stream up; %d exchanges spooled", self.spool.depth)
                state["acked"] = True
                self._handle_reply(reply)
        finally:
            self._wake.set()

    def _handle_reply(self, reply: observer_service_pb2.IngestResponse) -> None:
        """One reply, to the oldest request not yet answered (replies come in request order)."""
        ids = self._sent.popleft() if self._sent else ()
        if reply.acks:
            for ack in reply.acks:
                self._handle_ack(ack)
            return
        if len(ids) > 1:
            # A batch answered in the single form: an observer from before batches, which read
            # the request as carrying no exchange. Send them again, one per request.
            self.batching = False
            logger.info("the observer takes one exchange per request; %d exchanges sent again, alone",
                        len(ids))
            for exchange_id in reversed(ids):
                record = self._in_flight.pop(exchange_id, None)
                if record is not None and not record.acked:
                    self._queue.appendleft(record)
            self._wake.set()
            return
        self._handle_ack(reply)

    def _handle_ack(self, reply: _Ack) -> None:
        record = self._in_flight.pop(reply.exchange_id, None)
        if self._isolating == reply.exchange_id:
            self._isolating = None
            self._wake.set()
        if record is None:
            return
        if reply.status == _REJECTED:
            self.rejected += 1
            logger.warning("observer rejected exchange %s: %s", reply.exchange_id, reply.message)
            if not self._failed(record, f"the observer rejected it: {reply.message}"):
                self._queue.append(record)  # tried again, alone, after the others
                self._wake.set()
            return
        if reply.status not in (_ACCEPTED, _DUPLICATE):
            # An unknown status: keep it in flight semantics simple and resend on the next stream.
            logger.warning("observer answered exchange %s with status %d", reply.exchange_id, reply.status)
            return
        self.acked += 1
        self.spool.ack(record)
        if self._on_acked is not None:
            self._on_acked(observer_service_pb2.IngestStatus.Name(reply.status))
        if self.spool.depth == 0:
            self._drained.set()
        if len(self._in_flight) < self._max_in_flight:
            self._wake.set()

    # ------------------------------------------------------------------ exchanges that fail

    def _blame_in_flight(self, why: str) -> None:
        for record in list(self._in_flight.values()):
            self._failed(record, why)
        self._in_flight = {}
        self._isolating = None

    def _failed(self, record: Record, why: str) -> bool:
        """Counts a failed attempt; after `max_attempts`, sets the exchange aside. True if it was."""
        if record.acked:
            return True
        record.failures += 1
        if record.failures < self.max_attempts:
            return False
        reason = f"{why} ({record.failures} attempts)"
        try:
            payload = self.spool.payload_of(record)
        except OSError as error:
            payload = b""
            reason = f"{reason}; its spooled bytes could not be read back: {error}"
        self.spool.ack(record)
        self._set_aside(record.exchange_id, payload, reason)
        if self.spool.depth == 0:
            self._drained.set()
        return True

    def _set_aside(self, exchange_id: str, payload: bytes, reason: str) -> None:
        self.set_aside += 1
        logger.error("exchange %s set aside: %s", exchange_id, reason)
        if self.dead_letters is not None and payload:
            self.dead_letters.put(exchange_id, payload, reason)
        if self._on_set_aside is not None:
            self._on_set_aside(exchange_id, payload, reason)


class _Requests:
    """The Ingest stream's requests as an async iterator gRPC reads, which `close()` ends.

    Not gRPC's writer style (`call.write`): through client interceptors, that style feeds the call
    from an async generator of gRPC's that nothing ends when the call ends before the shipper
    does (observer gone, stream reset). Its reader task then stays pending and the generator
    running until the loop closes: "Task was destroyed but it is pending!" and "aclose():
    asynchronous generator is already running" at every stop. This iterator is a plain object
    (no generator to finalise), and `close()` ends gRPC's reader task whatever state the call is in.
    """

    _END = object()

    def __init__(self) -> None:
        # One waiting message: the shipper is held back while gRPC has not taken the last one.
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1)

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> bytes:
        item = await self._queue.get()
        if item is _Requests._END:
            raise StopAsyncIteration
        assert isinstance(item, bytes)
        return item

    async def write(self, payload: bytes, reader: asyncio.Task[None]) -> bool:
        """Queues `payload`; False when the stream ended first (the reader finished)."""
        put = asyncio.ensure_future(self._queue.put(payload))
        await asyncio.wait((put, reader), return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            await asyncio.gather(put, return_exceptions=True)
            return False
        return True

    def close(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_Requests._END)
