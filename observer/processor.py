"""The queue worker: claimed exchanges become stored traces.

Three kinds of task share one in-memory pipeline:

* the claimer leases due exchanges (`Store.claim`) while fewer than `capacity` are held,
  woken by intake (`wake()`) and by a poll as a fallback;
* `concurrency` workers each turn one exchange into traces: agent and session (from the
  exchange, else the Registry), the active card, extraction, analysis, `build_traces`;
* the writer stores whatever results are ready in one transaction (`Store.finish`), then
  tells the drift watch which agents have new traces.

A Registry outage is nobody's fault: the exchange goes back to pending, its attempt refunded,
after a growing pause shared by all exchanges. Any other failed step is retried with
exponential backoff; after `observer_max_attempts` tries the exchange is stored as a
`processing_failed` trace naming the step and the error. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError
from smoltbot.core.errors import Unavailable
from smoltbot.core.settings import Settings
from smoltbot.core.storage import utcnow
from smoltbot.observer import local_analyzer
from smoltbot.observer.extraction import Extraction, extract
from smoltbot.observer.model_analyzer import AnalysisResult, Analyzer
from smoltbot.observer.registry_client import RegistryClient, RegistryError, RegistryUnavailable
from smoltbot.observer.store import ClaimedExchange, Finished, Retry, Store, StoredTrace
from smoltbot.observer.trace_builder import build_traces
from smoltbot.v1 import exchange_pb2

__all__ = ["OUTCOME_NAMES", "Processor"]

logger = logging.getLogger(__name__)

OUTCOME_NAMES = {
    exchange_pb2.EXCHANGE_OUTCOME_COMPLETE: "complete",
    exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR: "upstream_error",
    exchange_pb2.EXCHANGE_OUTCOME_MID_STREAM_ERROR: "mid_stream_error",
    exchange_pb2.EXCHANGE_OUTCOME_CLIENT_ABORT: "client_abort",
    exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_UNREACHABLE: "upstream_unreachable",
    exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_DROPPED: "upstream_dropped",
}
#: Payloads above this are read in a thread, so one giant exchange does not stall intake acks.
_BIG_PAYLOAD = 512 * 1024
_RETRY_BASE, _RETRY_MAX = 0.5, 60.0
_REGISTRY_BASE, _REGISTRY_MAX = 0.2, 5.0


class _StepFailed(Exception):
    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"{step}: {type(error).__name__}: {error}")
        self.step = step


@dataclass
class _Context:
    """What is known of an exchange as processing goes, for the failure trace."""

    exchange: exchange_pb2.Exchange | None = None
    agent_id: str = ""
    session_id: str | None = None
    card: dict[str, Any] | None = None


def _time(message: Any, name: str) -> datetime | None:
    if message is None or not message.HasField(name):
        return None
    try:
        return getattr(message, name).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def outcome_of(exchange: exchange_pb2.Exchange) -> str:
    name = OUTCOME_NAMES.get(exchange.outcome)
    if name is not None:
        return name
    # Unspecified (an older or careless producer): judge by the HTTP status.
    status = exchange.response.status
    if status == 0:
        return "upstream_unreachable"
    return "complete" if 200 <= status < 300 else "upstream_error"


class Processor:
    def __init__(self, store: Store, registry: RegistryClient, analyzer: Analyzer, settings: Settings, *,
                 on_written: Callable[[list[Finished]], None] | None = None, poll_interval: float = 1.0,
                 lease_seconds: float | None = None, capacity: int | None = None) -> None:
        self.store = store
        self.registry = registry
        self.analyzer = analyzer
        self.settings = settings
        self.owner = f"observer-{uuid.uuid4().hex[:16]}"
        self.poll_interval = poll_interval
        # A lease must outlive the slowest step (a model call) with room to spare.
        self.lease_seconds = lease_seconds or max(60.0, 3 * settings.analyzer_timeout)
        self.concurrency = settings.observer_concurrency
        self.capacity = capacity or max(64, 4 * self.concurrency)
        self._on_written = on_written
        self._queue: asyncio.Queue[ClaimedExchange | None] = asyncio.Queue()
        self._held: dict[str, ClaimedExchange] = {}
        self._results: list[Finished | Retry] = []
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._results_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._registry_failures = 0
        self.processed = 0
        self.failed = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"observer-worker-{i}")
                         for i in range(self.concurrency)]
        self._tasks = [asyncio.create_task(self._claim_loop(), name="observer-claimer"),
                       asyncio.create_task(self._write_loop(), name="observer-writer")]

    def wake(self) -> None:
        """New work was stored: claim it now instead of at the next poll."""
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stops claiming, lets exchanges being processed finish for up to `grace` seconds,
        writes what finished and gives every other leased exchange back to the queue."""
        if self._stopping:
            return
        self._stopping = True
        claimer, writer = self._tasks
        claimer.cancel()
        for worker in self._workers:
            self._queue.put_nowait(None)  # a stop mark per worker
        _, running = await asyncio.wait(self._workers, timeout=grace) if self._workers else (set(), set())
        for task in running:
            task.cancel()
        await asyncio.gather(claimer, *self._workers, return_exceptions=True)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        try:
            await self._flush()
        except Exception:
            logger.exception("could not write results at stop; their leases will expire")
        held = list(self._held)
        if held:
            try:
                await self.store.release(self.owner, held)
            except Exception:
                logger.exception("could not release %d leases at stop; they will expire", len(held))
            self._held.clear()

    # -- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            free = self.capacity - len(self._held)
            if free <= 0:
                self._space.clear()
                await self._space.wait()
                continue
            self._wake.clear()
            try:
                claimed = await self.store.claim(self.owner, free, self.lease_seconds)
            except Unavailable:
                await asyncio.sleep(self.poll_interval)
                continue
            except Exception:
                logger.exception("claiming exchanges failed")
                await asyncio.sleep(self.poll_interval)
                continue
            for item in claimed:
                self._held[item.exchange_id] = item
                self._queue.put_nowait(item)
            if len(claimed) < free:
                try:
                    await asyncio.wait_for(self._wake.wait(), await self._idle_timeout())
                except TimeoutError:
                    pass

    async def _idle_timeout(self) -> float:
        # Sleep until the next retry is due, at most one poll interval.
        try:
            due = await self.store.next_due()
        except Exception:  # noqa: BLE001 - the poll interval is the fallback
            return self.poll_interval
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.01, (due - utcnow()).total_seconds()))

    # -- processing ----------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None or self._stopping:
                return
            try:
                result = await self.process(item)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bug; never lose the exchange over it
                logger.exception("processing %s crashed", item.exchange_id)
                result = self._retry(item, _StepFailed("process", error))
            self._results.append(result)
            self._results_ready.set()

    async def process(self, item: ClaimedExchange) -> Finished | Retry:
        context = _Context()
        if item.attempts > self.settings.observer_max_attempts:
            # Every attempt got through processing but its result could not be stored.
            try:
                context.exchange = exchange_pb2.Exchange.FromString(item.payload)
            except DecodeError:
                pass
            context.agent_id = item.agent_id or (context.exchange.agent_id if context.exchange else "")
            return self._failure(item, context, _StepFailed("store traces", RuntimeError(item.last_error)))
        try:
            finished = await self._process(item, context)
        except RegistryUnavailable as error:
            self._registry_failures += 1
            delay = min(_REGISTRY_MAX, _REGISTRY_BASE * 2 ** (self._registry_failures - 1))
            logger.warning("registry unavailable; exchange %s stays pending (%s)", item.exchange_id, error)
            return Retry(item.exchange_id, utcnow() + timedelta(seconds=delay), str(error), counted=False)
        except _StepFailed as error:
            if item.attempts >= self.settings.observer_max_attempts:
                return self._failure(item, context, error)
            return self._retry(item, error)
        self._registry_failures = 0
        return finished

    def _retry(self, item: ClaimedExchange, error: _StepFailed) -> Retry:
        delay = min(_RETRY_MAX, _RETRY_BASE * 2 ** max(0, item.attempts - 1))
        logger.warning("exchange %s attempt %d failed (%s); retrying in %.1fs",
                       item.exchange_id, item.attempts, error, delay)
        return Retry(item.exchange_id, utcnow() + timedelta(seconds=delay), str(error))

    async def _process(self, item: ClaimedExchange, context: _Context) -> Finished:
        big = len(item.payload) > _BIG_PAYLOAD
        try:
            exchange = exchange_pb2.Exchange.FromString(item.payload)
        except DecodeError as error:
            raise _StepFailed("decode", error) from None
        context.exchange = exchange
        agent_id = item.agent_id or exchange.agent_id
        if not agent_id:
            agent_id = await self._registry_step("resolve agent", self.registry.agent_id_for(item.agent_hash))
        context.agent_id = agent_id
        started_at, ended_at = _time(exchange.timings, "started_at"), _time(exchange.timings, "ended_at")
        missing: list[str] = []
        session_id = item.session_id or exchange.session_id or None
        if session_id is None:
            try:
                session_id = await self.registry.session_for(agent_id, exchange.session_hint, started_at)
            except RegistryError as error:
                missing.append(f"session could not be resolved ({error})")
        context.session_id = session_id
        card = await self._registry_step("get active card", self.registry.active_card(agent_id))
        context.card = card
        outcome = outcome_of(exchange)
        try:
            extraction = await _cpu(big, extract, exchange.request.body, exchange.response.body,
                                    http_status=exchange.response.status, streamed=exchange.response.streamed,
                                    outcome=outcome, stream_error=exchange.response.stream_error)
        except Exception as error:
            raise _StepFailed("extract", error) from error
        extraction.missing.extend(missing)
        try:
            if self.analyzer.name == "local" and big:
                result = AnalysisResult(await _cpu(True, local_analyzer.analyze, extraction, card, outcome=outcome),
                                        "local")
            else:
                result = await self.analyzer.analyze(extraction, card, outcome)
        except Exception as error:
            raise _StepFailed("analyze", error) from error
        observed_at = utcnow()
        try:
            built = await _cpu(
                big, build_traces,
                exchange_id=item.exchange_id, agent_id=agent_id, session_id=session_id, card=card,
                extraction=extraction, analyses=result.analyses, exchange_started_at=started_at,
                exchange_ended_at=ended_at, observed_at=observed_at, conversation_turn=None,
                store_reasoning=self.settings.store_reasoning, analyzer_name=result.analyzer,
                analysis_fallback_reason=result.fallback_reason, outcome=outcome,
                outcome_detail=exchange.outcome_detail, http_status=exchange.response.status,
                environment=_environment(exchange),
            )
        except Exception as error:
            raise _StepFailed("build traces", error) from error
        return Finished(item.exchange_id, item.agent_hash, agent_id, session_id,
                        [StoredTrace(trace) for trace in built])

    async def _registry_step(self, step: str, call: Any) -> Any:
        try:
            return await call
        except RegistryUnavailable:
            raise
        except Unavailable as error:
            raise RegistryUnavailable(str(error)) from error
        except Exception as error:
            raise _StepFailed(step, error) from error

    def _failure(self, item: ClaimedExchange, context: _Context, error: _StepFailed) -> Finished | Retry:
        """The exchange as one processing_failed trace that says what failed."""
        detail = f"processing failed after {item.attempts} attempts at step '{error.step}': {error}"
        logger.error("exchange %s: %s", item.exchange_id, detail)
        exchange = context.exchange
        extraction = Extraction(outcome="processing_failed", error_type="processing_failed",
                                error_message=detail)
        if exchange is not None:
            extraction.http_status = exchange.response.status
            extraction.streamed = exchange.response.streamed
        started_at = _time(exchange.timings, "started_at") if exchange is not None else None
        ended_at = _time(exchange.timings, "ended_at") if exchange is not None else None
        extraction.missing.append(detail)
        last: Exception | None = None
        for card in (context.card or {}, {}):
            try:
                built = build_traces(
                    exchange_id=item.exchange_id, agent_id=context.agent_id, session_id=context.session_id,
                    card=card, extraction=extraction, analyses=None, exchange_started_at=started_at,
                    exchange_ended_at=ended_at, observed_at=utcnow(), conversation_turn=None,
                    store_reasoning=self.settings.store_reasoning, analyzer_name="local",
                    outcome="processing_failed", outcome_detail=detail,
                    http_status=exchange.response.status if exchange is not None else 0,
                    environment=_environment(exchange) if exchange is not None else None,
                )
            except Exception as build_error:  # noqa: BLE001 - the card itself may be what breaks
                last = build_error
                continue
            self.failed += 1
            return Finished(item.exchange_id, item.agent_hash, context.agent_id, context.session_id,
                            [StoredTrace(trace) for trace in built], failed=True, error=detail)
        # Not even a failure trace could be built: keep the exchange and keep trying.
        return self._retry(item, _StepFailed("build failure trace", last or error))

    # -- writing -------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            try:
                await self._flush()
            except Unavailable:
                await asyncio.sleep(self.poll_interval)
                self._results_ready.set()
            except Exception:
                logger.exception("writing results failed; retrying")
                await asyncio.sleep(self.poll_interval)
                self._results_ready.set()

    async def _flush(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        try:
            await self._finish(batch)
        except Unavailable:
            self._results = batch + self._results
            raise
        except Exception:
            if len(batch) == 1:
                self._results = [self._unstorable(batch[0])] + self._results
                raise
            # One bad result must not block the others: write them one by one.
            logger.exception("writing %d results failed; writing them one by one", len(batch))
            for result in batch:
                try:
                    await self._finish([result])
                except Unavailable:
                    self._results.append(result)
                except Exception:
                    logger.exception("storing the result of %s failed", result.exchange_id)
                    self._results.append(self._unstorable(result))
            if self._results:
                self._results_ready.set()

    def _unstorable(self, result: Finished | Retry) -> Retry:
        # The traces could not be stored: the exchange is tried again (and counted), so after
        # max attempts it becomes a small processing_failed trace instead.
        held = self._held.get(result.exchange_id)
        attempts = held.attempts if held is not None else 1
        error = _StepFailed("store traces", RuntimeError("the database refused the traces; see the log"))
        if isinstance(result, Retry):
            return result
        return Retry(result.exchange_id, utcnow() + timedelta(seconds=min(_RETRY_MAX, _RETRY_BASE * 2 ** attempts)),
                     str(error))

    async def _finish(self, batch: list[Finished | Retry]) -> None:
        done = [r for r in batch if isinstance(r, Finished)]
        retries = [r for r in batch if isinstance(r, Retry)]
        report = await self.store.finish(self.owner, done, retries)
        for result in batch:
            self._held.pop(result.exchange_id, None)
        if report.lost:
            logger.warning("lost the lease of %d exchanges; another observer took them over", len(report.lost))
        self.processed += len(report.written)
        self._space.set()
        if retries:
            self._wake.set()
        if report.written and self._on_written is not None:
            self._on_written(report.written)


async def _cpu(big: bool, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if big:
        return await asyncio.to_thread(function, *args, **kwargs)
    return function(*args, **kwargs)


def _environment(exchange: exchange_pb2.Exchange) -> dict[str, Any]:
    environment: dict[str, Any] = {}
    if exchange.gateway_id:
        environment["gateway_id"] = exchange.gateway_id
    if exchange.request.path:
        environment["request_path"] = exchange.request.path
    return environment
