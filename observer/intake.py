"""Intake: validating exchanges, storing them in batches, acknowledging them.

Every stream submits its exchanges to one `Intake`. A single writer task takes whatever has
been submitted since its last write (across all streams), stores it in one transaction and
resolves each submission with ACCEPTED (new row) or DUPLICATE (the id existed). While one
batch is being written the next one gathers, so under load a transaction carries hundreds
of exchanges and acks stay fast; with one exchange in flight it is written alone at once.

An ack is only ever sent for an exchange that is durably stored (or was already).

A request carries one exchange (`exchange`) or a batch (`exchanges`); `answer` gives the reply
to either form: the single ack as before, or one ack per exchange of the batch, in its order.
Each exchange of a batch is validated, stored and acked on its own: a bad one is REJECTED and
the others are stored all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from smoltbot.core.ids import is_agent_hash, is_exchange_id
from smoltbot.core.protoconv import from_timestamp
from smoltbot.core.storage import utcnow
from smoltbot.observer.queue import ExchangeQueue, ExchangeRow
from smoltbot.observer.record_kinds import exchange_kind
from smoltbot.v1 import exchange_pb2
from smoltbot.v1 import observer_service_pb2 as pb

__all__ = ["Ack", "Intake", "validate", "validate_exchange"]

logger = logging.getLogger(__name__)

_MAX_BATCH = 500
_T = TypeVar("_T")
_R = TypeVar("_R")
_MAX_BATCH_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Ack:
    exchange_id: str
    status: int  # pb.IngestStatus
    message: str = ""

    def to_proto(self) -> pb.IngestResponse:
        return pb.IngestResponse(exchange_id=self.exchange_id, status=self.status, message=self.message)  # type: ignore[arg-type]

    def to_batch_ack(self) -> pb.IngestAck:
        return pb.IngestAck(exchange_id=self.exchange_id, status=self.status, message=self.message)  # type: ignore[arg-type]


def validate(request: pb.IngestRequest) -> str:
    """Why a single-exchange request cannot be stored ("" when it can). Re-sending it would not help."""
    if not request.HasField("exchange"):
        return "the request carries no exchange"
    return validate_exchange(request.exchange)


def validate_exchange(exchange: exchange_pb2.Exchange) -> str:
    """Why the exchange cannot be stored ("" when it can). Re-sending it would not help."""
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


def _chain(source: asyncio.Future[_T], convert: Callable[[_T], _R]) -> asyncio.Future[_R]:
    """A future of `convert(source's result)`, failing or cancelled as `source` does."""
    target: asyncio.Future[_R] = asyncio.get_running_loop().create_future()

    def done(finished: asyncio.Future[_T]) -> None:
        if target.done():
            return
        if finished.cancelled():
            target.cancel()
        elif (error := finished.exception()) is not None:
            target.set_exception(error)
        else:
            target.set_result(convert(finished.result()))

    source.add_done_callback(done)
    return target


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

    def answer(self, request: pb.IngestRequest) -> asyncio.Future[pb.IngestResponse]:
        """The future reply to one request of either form. It fails (with the storage's error)
        when any of its exchanges could not be stored: the stream ends and the gateway sends again."""
        if not request.exchanges:
            return _chain(self.submit(request), Ack.to_proto)
        exchanges = ([request.exchange] if request.HasField("exchange") else []) + list(request.exchanges)
        acks = [self.submit_exchange(exchange) for exchange in exchanges]
        return _chain(asyncio.gather(*acks),
                      lambda done: pb.IngestResponse(acks=[ack.to_batch_ack() for ack in done]))

    def submit(self, request: pb.IngestRequest) -> asyncio.Future[Ack]:
        """The future ack of a single-exchange request; invalid requests are answered at once."""
        if not request.HasField("exchange"):
            return self._rejected(request.exchange.exchange_id, validate(request))
        return self.submit_exchange(request.exchange)

    def _rejected(self, sent_id: str, problem: str) -> asyncio.Future[Ack]:
        logger.warning("rejected exchange %r: %s", sent_id[:64], problem)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        future.set_result(Ack(sent_id, pb.INGEST_STATUS_REJECTED, problem))
        return future

    def submit_exchange(self, exchange: exchange_pb2.Exchange) -> asyncio.Future[Ack]:
        """The future ack of one exchange; an invalid one is answered at once."""
        sent_id = exchange.exchange_id
        problem = validate_exchange(exchange)
        if problem:
            return self._rejected(sent_id, problem)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
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
        # New exchanges go straight to this observer's processor while it has room; only those
        # left pending need the claimer woken (a claim that finds nothing is a wasted transaction).
        accepted, pending = await self._queue.insert_and_hand_over(list(unique.values()))
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
        if pending and self._on_stored is not None:
            self._on_stored()
