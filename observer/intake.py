"""Intake: validating exchanges, storing them in batches, acknowledging them.

Every stream submits its exchanges to one `Intake`. A single writer task takes whatever has
been submitted since its last write (across all streams), stores it in one transaction and
resolves each submission with ACCEPTED (new row) or DUPLICATE (the id existed). While one
batch is being written the next one gathers, so under load a transaction carries hundreds
of exchanges and acks stay fast; with one exchange in flight it is written alone at once.

An ack is only ever sent for an exchange that is durably stored (or was already).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from smoltbot.core.ids import is_agent_hash, is_exchange_id
from smoltbot.core.protoconv import from_timestamp
from smoltbot.core.storage import utcnow
from smoltbot.observer.queue import ExchangeQueue, ExchangeRow
from smoltbot.observer.record_kinds import exchange_kind
from smoltbot.v1 import exchange_pb2
from smoltbot.v1 import observer_service_pb2 as pb

__all__ = ["Ack", "Intake", "validate"]

logger = logging.getLogger(__name__)

_MAX_BATCH = 500
_MAX_BATCH_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Ack:
    exchange_id: str
    status: int  # pb.IngestStatus
    message: str = ""

    def to_proto(self) -> pb.IngestResponse:
        return pb.IngestResponse(exchange_id=self.exchange_id, status=self.status, message=self.message)  # type: ignore[arg-type]


def validate(request: pb.IngestRequest) -> str:
    """Why the request cannot be stored ("" when it can). Re-sending it would not help."""
    if not request.HasField("exchange"):
        return "the request carries no exchange"
    exchange = request.exchange
    if not is_exchange_id(exchange.exchange_id):
        return "exchange_id must be 32 hex digits"
    if not exchange.agent_hash:
        return "agent_hash is required"
    if not is_agent_hash(exchange.agent_hash):
        return "agent_hash must be 32 to 128 hex digits"
    return ""


def _occurred_at(exchange: exchange_pb2.Exchange, received_at: datetime) -> datetime:
    for name in ("ended_at", "started_at"):
        at = from_timestamp(exchange.timings, name, strict=False)
        if at is not None:
            return at
    return received_at


@dataclass
class _Submission:
    row: ExchangeRow
    #: The id as the client sent it: acks echo it, the row stores it lower-cased.
    sent_id: str
    future: asyncio.Future[Ack]


class Intake:
    def __init__(self, queue: ExchangeQueue, *, on_stored: Callable[[], None] | None = None) -> None:
        self._queue = queue
        self._on_stored = on_stored
        self._pending: list[_Submission] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Exchanges stored, and the transactions that stored them (for benchmarks).
        self.accepted = 0
        self.write_batches = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_loop(), name="observer-intake")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for submission in self._pending:
            if not submission.future.done():
                submission.future.cancel()
        self._pending.clear()

    def submit(self, request: pb.IngestRequest) -> asyncio.Future[Ack]:
        """The future ack of one request; invalid requests are answered at once."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ack] = loop.create_future()
        sent_id = request.exchange.exchange_id
        problem = validate(request)
        if problem:
            logger.warning("rejected exchange %r: %s", sent_id[:64], problem)
            future.set_result(Ack(sent_id, pb.INGEST_STATUS_REJECTED, problem))
            return future
        exchange = request.exchange
        row = ExchangeRow(
            exchange_id=sent_id.lower(),
            agent_hash=exchange.agent_hash.lower(),
            agent_id=exchange.agent_id or None,
            session_id=exchange.session_id or None,
            occurred_at=_occurred_at(exchange, utcnow()),
            payload=exchange.SerializeToString(),
            record_kind=exchange_kind(exchange),
        )
        self._pending.append(_Submission(row, sent_id, future))
        self._ready.set()
        return future

    async def _write_loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch = self._take_batch()
                try:
                    await self._write(batch)
                except asyncio.CancelledError:
                    for submission in batch:
                        submission.future.cancel()
                    raise
                except Exception as error:  # noqa: BLE001 - handed to the waiting streams
                    # The database is down or refused the batch: those streams fail with it
                    # (UNAVAILABLE / INTERNAL) and their gateways send the exchanges again.
                    for submission in batch:
                        if not submission.future.done():
                            submission.future.set_exception(error)

    def _take_batch(self) -> list[_Submission]:
        size = 0
        count = 0
        for submission in self._pending:
            if count and (count >= _MAX_BATCH or size + len(submission.row.payload) > _MAX_BATCH_BYTES):
                break
            size += len(submission.row.payload)
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    async def _write(self, batch: list[_Submission]) -> None:
        unique: dict[str, ExchangeRow] = {}
        for submission in batch:
            unique.setdefault(submission.row.exchange_id, submission.row)
        accepted = await self._queue.insert_exchanges(list(unique.values()))
        self.write_batches += 1
        answered: set[str] = set()
        for submission in batch:
            exchange_id = submission.row.exchange_id
            if exchange_id in accepted and exchange_id not in answered:
                answered.add(exchange_id)
                self.accepted += 1
                ack = Ack(submission.sent_id, pb.INGEST_STATUS_ACCEPTED)
            else:
                ack = Ack(submission.sent_id, pb.INGEST_STATUS_DUPLICATE, "already received")
            if not submission.future.done():
                submission.future.set_result(ack)
        if accepted and self._on_stored is not None:
            self._on_stored()
