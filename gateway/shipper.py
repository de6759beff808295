"""Ships spooled exchanges to the Observer over one long-lived `Ingest` stream.

Every exchange goes to the spool first (`submit`), then onto the stream. The Observer acks each
one: ACCEPTED or DUPLICATE removes it from the spool, REJECTED is logged, counted and
removed too (sending it again would not help). When the stream breaks, the shipper
reconnects with backoff and sends every unacked exchange again, oldest first; the Observer
recognises re-sent ones by exchange id. Nothing here ever blocks or fails a user's call.

Exchanges are stored and sent as already-encoded `IngestRequest` bytes (the stream's request
serializer is the identity), so a spooled exchange is never parsed again on its way out.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import grpc
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.tls import TlsConfig
from smoltbot.v1 import exchange_pb2, observer_service_pb2

from .spool import Record, Spool

__all__ = ["Shipper", "encode_ingest_request"]

logger = logging.getLogger(__name__)

_INGEST_METHOD = "/{}/Ingest".format(observer_service_pb2.DESCRIPTOR.services_by_name["ObserverService"].full_name)
_ACCEPTED = observer_service_pb2.INGEST_STATUS_ACCEPTED
_DUPLICATE = observer_service_pb2.INGEST_STATUS_DUPLICATE
_REJECTED = observer_service_pb2.INGEST_STATUS_REJECTED


def encode_ingest_request(exchange: exchange_pb2.Exchange) -> bytes:
    """`IngestRequest(exchange=exchange)` on the wire, without copying the message into a wrapper."""
    body = exchange.SerializeToString()
    return b"\x0a" + _varint(len(body)) + body


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
                 on_acked: Callable[[str], None] | None = None, tls: TlsConfig | None = None) -> None:
        self.spool = spool
        self._address = address
        self._tls = tls
        self._max_in_flight = max_in_flight
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._on_shipped = on_shipped
        self._on_acked = on_acked
        self._queue: collections.deque[Record] = collections.deque()
        self._in_flight: dict[str, Record] = {}
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
        record = self.spool.append(exchange.exchange_id, encode_ingest_request(exchange))
        if record is None:
            return
        self._drained.clear()
        self._queue.append(record)
        self._wake.set()

    @property
    def observer_ready(self) -> bool:
        """True when the channel to the Observer is connected (cheap: no RPC)."""
        channel = self._channel
        return channel is not None and channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._channel = open_channel(self._address, self._tls)
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
        call = self._channel.stream_stream(
            _INGEST_METHOD, request_serializer=None,
            response_deserializer=observer_service_pb2.IngestResponse.FromString,
        )()
        self._in_flight = {}
        self._queue = collections.deque(self.spool.unacked())
        state = {"acked": False}
        reader = asyncio.get_running_loop().create_task(self._read_acks(call, state))
        try:
            while True:
                if reader.done():
                    break
                if not self._queue or len(self._in_flight) >= self._max_in_flight:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                record = self._queue.popleft()
                if record.acked or record.exchange_id in self._in_flight:
                    continue
                payload = self.spool.payload_of(record)
                self._in_flight[record.exchange_id] = record
                await call.write(payload)
                self.shipped += 1
                if self._on_shipped is not None:
                    self._on_shipped()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as error:
            if not reader.done():
                logger.debug("observer stream write failed: %r", error)
        finally:
            call.cancel()
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if reader.cancelled():
            return state["acked"]
        error = reader.exception()
        if isinstance(error, grpc.aio.AioRpcError) and error.code() != grpc.StatusCode.CANCELLED:
            raise error
        return state["acked"]

    async def _read_acks(self, call: grpc.aio.StreamStreamCall, state: dict[str, bool]) -> None:
        try:
            async for reply in call:
                if not self.connected:
                    self.connected = True
                    logger.info("observer stream up; %d exchanges spooled", self.spool.depth)
                state["acked"] = True
                self._handle_ack(reply)
        finally:
            self._wake.set()

    def _handle_ack(self, reply: observer_service_pb2.IngestResponse) -> None:
        record = self._in_flight.pop(reply.exchange_id, None)
        if record is None:
            return
        if reply.status == _REJECTED:
            self.rejected += 1
            logger.warning("observer rejected exchange %s: %s", reply.exchange_id, reply.message)
        elif reply.status not in (_ACCEPTED, _DUPLICATE):
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
