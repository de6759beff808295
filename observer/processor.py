"""The queue worker: claimed exchanges become stored traces.

Three kinds of task share one in-memory pipeline:

* the claimer leases due exchanges (`ExchangeQueue.claim`) while fewer than `capacity` are held,
  woken by intake (`wake()`) and by a poll as a fallback;
* `concurrency` workers turn exchanges into traces: agent and session (from the exchange,
  else the Registry), the active card, then extraction, analysis and `build_traces`. With the
  local analyzer that CPU-heavy part runs in batches in worker processes (`cpu_pool.CpuPool`)
  when the machine has a core to spare, else inline; the anthropic analyzer's model call is
  awaited here, one exchange per worker at a time;
* the writer stores whatever results are ready in one transaction (`ExchangeQueue.finish`), then
  tells the drift watch which agents have new traces.

A Registry outage is nobody's fault: the exchange goes back to pending, its attempt refunded,
after a growing pause shared by all exchanges. Any other failed step is retried with
exponential backoff; after `observer_max_attempts` tries the exchange is stored as a
`processing_failed` trace naming the step and the error (`observer.attempts`). Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta
from typing import Any

from smoltbot.core.errors import Unavailable
from smoltbot.core.pricing import PriceTable, load_price_table
from smoltbot.core.settings import Settings
from smoltbot.core.storage import utcnow
from smoltbot.observer import accounting, attempts, pipeline, record_kinds
from smoltbot.observer.accounting import facts_of
from smoltbot.observer.analyzers import Analyzer
from smoltbot.observer.attempts import ExchangeContext, StepFailed, UnprovenCredential
from smoltbot.observer.cpu_pool import CpuPool, default_workers
from smoltbot.observer.evidence_stage import EvidenceStage
from smoltbot.observer.pipeline import Job, JobResult
from smoltbot.observer.queue import (
    ClaimedExchange,
    ExchangeQueue,
    Finished,
    Retry,
    ScrubSchedule,
    StoredTrace,
)
from smoltbot.observer.records import records_of
from smoltbot.observer.registry_client import RegistryClient, RegistryError, RegistryUnavailable

__all__ = ["Processor"]

logger = logging.getLogger(__name__)

#: Inline, payloads above this are read in a thread, so a giant exchange does not stall acks.
_BIG_PAYLOAD = 512 * 1024
#: Exchanges sent to a worker process at once (amortises the round trip).
_POOL_BATCH = 16
#: Payload bytes held in memory at once (a request body may be 32 MiB); one exchange always fits.
_MAX_HELD_BYTES = 128 * 1024 * 1024
_REGISTRY_BASE, _REGISTRY_MAX = 0.2, 5.0


class Processor:
    def __init__(self, queue: ExchangeQueue, registry: RegistryClient, analyzer: Analyzer, settings: Settings,
                 *, on_written: Callable[[list[Finished]], None] | None = None, poll_interval: float = 1.0,
                 lease_seconds: float | None = None, capacity: int | None = None,
                 cpu_workers: int | None = None, scrub_interval: float = 5.0,
                 prices: PriceTable | None = None,
                 on_committed: Callable[[list[Finished], dict[str, bytes]], None] | None = None) -> None:
        self.queue = queue
        # Loaded once; a bad operator file stops the observer at start (PriceTableError).
        self.prices = prices if prices is not None else load_price_table(settings.price_table_path)
        self.registry = registry
        self.analyzer = analyzer
        self.settings = settings
        self.owner = f"observer-{uuid.uuid4().hex[:16]}"
        self.poll_interval = poll_interval
        # Leases are short and renewed while held (see _renew_loop), so a slow step (a model
        # call) keeps its exchanges while the work of an observer that died is taken over soon.
        self.lease_seconds = lease_seconds or settings.observer_lease_seconds
        self.concurrency = settings.observer_concurrency
        self.capacity = capacity or max(256, 8 * self.concurrency)
        self._on_written = on_written
        #: Told of stored exchanges with their payloads (metrics, OTLP export), after the commit.
        self._on_committed = on_committed
        workers = default_workers() if cpu_workers is None else cpu_workers
        # Worker processes pay off only for the local analyzer (the model path waits on I/O).
        self._pool = CpuPool(workers) if workers > 0 and analyzer.name == "local" else None
        self._queue: asyncio.Queue[ClaimedExchange | None] = asyncio.Queue()
        self._held: dict[str, ClaimedExchange] = {}
        self._results: list[Finished | Retry] = []
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._results_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._renewer: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._registry_down_since: datetime | None = None
        self._next_retry: datetime | None = None
        self._scrubs = ScrubSchedule(queue, scrub_interval)
        #: History integrity and provenance (docs/evidence.md).
        self._evidence = EvidenceStage(queue.db, settings)
        #: Exchanges whose results were stored (for tests, logs and benchmarks).
        self.processed = 0
        #: Exchanges the upstream answered 401/403: counted, never traced.
        self.auth_rejected = 0
        self.unproven = 0
        #: Transactions that stored results, and claims made (for benchmarks).
        self.write_batches = 0
        self.claims = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"observer-worker-{i}")
                         for i in range(self.concurrency)]
        self._tasks = [asyncio.create_task(self._claim_loop(), name="observer-claimer"),
                       asyncio.create_task(self._write_loop(), name="observer-writer")]
        self._renewer = asyncio.create_task(self._renew_loop(), name="observer-lease-renewer")
        self.queue.attach(self)

    def wake(self) -> None:
        """New work was stored: claim it now instead of at the next poll."""
        self._wake.set()

    def room(self) -> int:
        """How many new exchanges intake may hand over, already leased (`ExchangeQueue.attach`):
        what a claim would take now."""
        if self._stopping:
            return 0
        if self._held and sum(len(item.payload) for item in self._held.values()) >= _MAX_HELD_BYTES:
            return 0
        return max(0, self.capacity - len(self._held))

    def adopt(self, items: list[ClaimedExchange]) -> None:
        """Exchanges intake stored leased to us: held and queued as if claimed."""
        for item in items:
            self._held[item.exchange_id] = item
            self._queue.put_nowait(item)

    async def stop(self, grace: float = 5.0) -> None:
        """Stops claiming, lets exchanges being processed finish for up to `grace` seconds,
        writes what finished and gives every other leased exchange back to the queue."""
        if self._stopping:
            return
        self._stopping = True
        self.queue.detach(self)
        claimer, writer = self._tasks
        # Not cancelled mid-claim: a claim committed but never returned would strand its
        # exchanges until their leases expire.
        self._wake.set()
        self._space.set()
        try:
            await asyncio.wait_for(asyncio.shield(claimer), grace)
        except TimeoutError:
            claimer.cancel()
        for _ in self._workers:
            self._queue.put_nowait(None)  # a stop mark per worker
        _, running = await asyncio.wait(self._workers, timeout=grace) if self._workers else (set(), set())
        for task in running:
            task.cancel()
        await asyncio.gather(claimer, *self._workers, return_exceptions=True)
        # The writer ends after the write it is doing (what is left is written below), rather
        # than being cancelled in the middle of its transaction.
        self._results_ready.set()
        try:
            await asyncio.wait_for(asyncio.shield(writer), grace)
        except TimeoutError:
            writer.cancel()
        renewer = self._renewer
        if renewer is not None:
            renewer.cancel()
        await asyncio.gather(writer, *([renewer] if renewer else []), return_exceptions=True)
        try:
            await self._flush()
        except Exception:
            logger.exception("could not write results at stop; their leases will expire")
        held = list(self._held)
        if held:
            try:
                await self.queue.release(self.owner, held)
            except Exception:
                logger.exception("could not release %d leases at stop; they will expire", len(held))
            self._held.clear()
        # A scrub waiting out its interval runs now instead: the last exchanges of a burst must
        # not stay on disk because the process stopped.
        await self._scrubs.close()
        if self._pool is not None:
            await self._pool.close()

    # -- claiming ------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        """Renews the leases of held exchanges three times per lease period."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            held = list(self._held)
            if not held:
                continue
            try:
                await self.queue.renew(self.owner, held, self.lease_seconds)
            except Exception as error:  # noqa: BLE001 - the database may be down: the next round retries
                logger.warning("could not renew %d leases (%s); retrying", len(held), type(error).__name__)

    async def _claim_loop(self) -> None:
        while not self._stopping:
            free = self.capacity - len(self._held)
            held_bytes = sum(len(item.payload) for item in self._held.values())
            # Top up in batches (one transaction claims many), before the workers run dry.
            if (free <= 0 or (free < self.capacity // 4 and not self._queue.empty())
                    or (self._held and held_bytes >= _MAX_HELD_BYTES)):
                self._space.clear()
                await self._space.wait()
                continue
            self._wake.clear()
            try:
                claimed = await self.queue.claim(self.owner, free, self.lease_seconds,
                                                 max_bytes=_MAX_HELD_BYTES - held_bytes)
                self.claims += 1
            except Unavailable:
                await asyncio.sleep(self.poll_interval)
                continue
            except Exception:
                logger.exception("claiming exchanges failed")
                await asyncio.sleep(self.poll_interval)
                continue
            for item in claimed:
                self._held[item.exchange_id] = item
                if not self._stopping:
                    self._queue.put_nowait(item)
            if len(claimed) < free and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_timeout())

    def _idle_timeout(self) -> float:
        # Until our own next retry is due, at most one poll interval (which also finds work
        # other observers put back, and exchanges stored by other processes).
        if self._next_retry is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.01, (self._next_retry - utcnow()).total_seconds()))

    # -- processing ----------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None or self._stopping:
                return
            batch = [item]
            if self._pool is not None:
                while len(batch) < _POOL_BATCH and not self._queue.empty():
                    more = self._queue.get_nowait()
                    if more is None:
                        self._queue.put_nowait(None)  # leave the stop mark for the next get
                        break
                    batch.append(more)
            try:
                results = await self._process_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.exception("processing %d exchanges crashed", len(batch))
                results = [attempts.retry(item, StepFailed("process", error)) for item in batch]
            self._results.extend(results)
            self._results_ready.set()
            # Let intake, the writer and gRPC run between batches: with work queued, get() and
            # the cached Registry lookups never suspend, and a worker would hold the loop.
            await asyncio.sleep(0)

    async def process(self, item: ClaimedExchange) -> Finished | Retry:
        """One exchange, start to finish, without storing the result: what processing it again
        would give (tests check that a second pass gives the same card and verdict)."""
        return (await self._process_batch([item]))[0]

    async def _process_batch(self, items: list[ClaimedExchange]) -> list[Finished | Retry]:
        results: dict[str, Finished | Retry] = {}
        ready: list[tuple[ExchangeContext, Job]] = []
        for item in items:
            context = ExchangeContext(item)
            try:
                kind = self._kind_of(context)
                if kind == record_kinds.AUTH_REJECTED:
                    # Before any Registry call: a refused credential resolves and touches no agent.
                    results[item.exchange_id] = self._auth_rejected(context)
                    continue
                job = await self._prepare(context)
                if kind in (record_kinds.ACTIVITY, record_kinds.MINIMAL):
                    # No extraction or analysis (no model analyzer call for a /v1/models call).
                    results[item.exchange_id] = self._inline_record(context, job)
                    continue
                ready.append((context, job))
            except UnprovenCredential:
                results[item.exchange_id] = self._unproven(context)
            except RegistryUnavailable as error:
                results[item.exchange_id] = self._registry_retry(item, error)
            except StepFailed as error:
                results[item.exchange_id] = self._failed_step(context, error)
        if ready and self._evidence.enabled:
            contexts = {context.item.exchange_id: context for context, _ in ready}
            ready = [(contexts[job.exchange_id], job) for job in await self._evidence.with_ledgers(
                [(job, context.call_at or context.item.received_at) for context, job in ready], results)]
        if ready:
            for (context, job), result in zip(
                ready, await self._compute([job for _, job in ready]), strict=True
            ):
                item = context.item
                if result.step:
                    results[item.exchange_id] = self._failed_step(
                        context, StepFailed(result.step, result.error)
                    )
                    continue
                self._registry_down_since = None
                stored = [StoredTrace(trace, text, slot) for trace, text, slot
                          in zip(result.traces, result.trace_json, result.turn_slots, strict=True)]
                facts = result.facts.priced(self.prices) if result.facts is not None else None
                held_back = self._evidence.held_back(result, item.received_at)
                if held_back is not None:
                    results[item.exchange_id] = held_back
                    continue
                results[item.exchange_id] = Finished(item.exchange_id, item.agent_hash, job.agent_id,
                                                     job.session_id, stored, facts=facts)
        return [results[item.exchange_id] for item in items]

    def _kind_of(self, context: ExchangeContext) -> str:
        """The exchange's record kind, as intake stored it; read from the payload for rows stored
        before kinds existed (an undecodable payload goes the decision way and fails there)."""
        if context.item.record_kind:
            return context.item.record_kind
        exchange = context.decoded()
        return record_kinds.exchange_kind(exchange) if exchange is not None else record_kinds.DECISION

    def _auth_rejected(self, context: ExchangeContext) -> Finished:
        self.auth_rejected += 1
        return attempts.auth_rejected(context)

    def _unproven(self, context: ExchangeContext) -> Finished:
        self.unproven += 1
        return attempts.unproven(context)

    def _inline_record(self, context: ExchangeContext, job: Job) -> Finished | Retry:
        """API activity, or a minimal record (the gateway could not capture the full exchange):
        one trace built here from the exchange's envelope, without reading bodies."""
        item = context.item
        exchange = context.decoded()
        if exchange is None:
            return self._failed_step(context, StepFailed("decode", "the stored exchange cannot be decoded"))
        try:
            built = records_of(exchange, agent_id=job.agent_id, session_id=job.session_id, card=job.card,
                               observed_at=job.observed_at, store_reasoning=self.settings.store_reasoning,
                               missing=list(job.missing))
        except Exception as error:  # noqa: BLE001 - a failed step, retried like any other
            return self._failed_step(context, StepFailed("build record", error))
        self._registry_down_since = None
        # A model call the gateway could not capture whole (a minimal record) still counts the
        # tokens its reply reported.
        facts = (accounting.facts_of(exchange).priced(self.prices)
                 if accounting.is_other_model_call(exchange) else None)
        return Finished(item.exchange_id, item.agent_hash, job.agent_id, job.session_id,
                        [StoredTrace(trace) for trace in built], facts=facts)

    async def _prepare(self, context: ExchangeContext) -> Job:
        """Agent, session and card of an exchange (the Registry's part), as a job to compute."""
        item = context.item
        if item.attempts > self.settings.observer_max_attempts:
            # Every attempt got through processing but its result could not be stored.
            raise StepFailed("store traces", item.last_error or "the traces could not be stored")
        agent_id = item.agent_id
        if not agent_id:
            exchange = context.decoded()
            agent_id = exchange.agent_id if exchange is not None else ""
        if not agent_id:
            # An agent exists only for a credential an upstream accepted: a call the upstream never
            # answered (status 0) may be attributed to a known agent but never creates one.
            exchange = context.decoded()
            answered = exchange is not None and exchange.response.status > 0
            agent_id = await self._registry_step(
                "resolve agent", self.registry.agent_id_for(item.agent_hash, create=answered))
            if not agent_id:
                raise UnprovenCredential
        context.agent_id = agent_id
        session_id = item.session_id
        if session_id is None:
            exchange = context.decoded()
            session_id = exchange.session_id if exchange is not None else None
        if not session_id:
            exchange = context.decoded()
            try:
                session_id = await self.registry.session_for(
                    agent_id, item.agent_hash, exchange.session_hint if exchange is not None else "",
                    pipeline.time_of(exchange.timings, "started_at") if exchange is not None else None)
            except RegistryError as error:
                session_id = None
                context.missing = (f"session could not be resolved ({error})",)
        context.session_id = session_id
        context.call_at = await self._call_time(context)
        context.card = await self._registry_step(
            "get active card", self.registry.card_at(agent_id, context.call_at))
        return Job(exchange_id=item.exchange_id, agent_id=agent_id, session_id=session_id, card=context.card,
                   payload=item.payload, store_reasoning=self.settings.store_reasoning, observed_at=utcnow(),
                   missing=context.missing)

    async def _call_time(self, context: ExchangeContext) -> datetime:
        """The time whose card applies to the exchange: when the call started (else ended; else,
        for an exchange that says neither, when intake stored it). Stable across attempts, so
        processing an exchange again checks it against the same card."""
        item = context.item
        if context.exchange is not None:
            at = pipeline.call_time(context.exchange)
        elif len(item.payload) > _BIG_PAYLOAD:
            # Decoded apart and dropped at once: the job decodes it again where it is read.
            at = await asyncio.to_thread(pipeline.call_time_of, item.payload)
        else:
            at = pipeline.call_time_of(item.payload)
        return at or item.received_at

    async def _compute(self, jobs: list[Job]) -> list[JobResult]:
        if self.analyzer.name != "local":
            return [await self._with_model(job) for job in jobs]
        if self._pool is not None and not (len(jobs) == 1 and self._pool.idle
                                           and len(jobs[0].payload) <= _BIG_PAYLOAD):
            try:
                return await self._pool.run(jobs)
            except (BrokenProcessPool, OSError, RuntimeError):
                # Workers that died (killed, out of memory) or could not start: read inline.
                logger.exception("the worker processes failed; reading exchanges inline from now on")
                pool, self._pool = self._pool, None
                with contextlib.suppress(Exception):
                    await pool.close()
        # A lone exchange while the workers are idle is read here: about a millisecond of work
        # against a round trip to a worker process (a thread, two pipes, its wake-up), which
        # at a trickle took 4 to 32 ms. The workers are started anyway, for the next burst.
        if self._pool is not None:
            self._pool.warm()
        if any(len(job.payload) > _BIG_PAYLOAD for job in jobs):
            return await asyncio.to_thread(pipeline.compute_many, jobs)
        # compute_many, as a worker runs it: calls of one session in a batch see each other's rows.
        return pipeline.compute_many(jobs)

    async def _with_model(self, job: Job) -> JobResult:
        """The anthropic analyzer's path: extraction here, the model call awaited, then build."""
        result = JobResult(job.exchange_id)
        step = "decode"
        try:
            exchange = pipeline.decode(job.payload)
            step = "extract"
            extraction = pipeline.extraction_of(exchange, job.missing)
            step = "read usage"
            result.facts = facts_of(exchange, extraction.model)
            step = "analyze"
            analysis = self._evidence.reused_analysis(job.exchange_id)
            if analysis is None:
                analysis = await self.analyzer.analyze(extraction, job.card, pipeline.outcome_of(exchange))
            step = "build traces"
            result.traces = pipeline.traces_of(
                job, exchange, extraction, analysis.analyses, analysis.analyzer, analysis.fallback_reason
            )
            step = "check history and provenance"
            pipeline.add_evidence(result, job, exchange, extraction)
            pipeline.serialise(result, job)
            result.model_analysis = analysis
        except Exception as error:  # noqa: BLE001 - a failed step, retried by the caller
            result.step, result.error = step, f"{type(error).__name__}: {error}"
            result.traces, result.trace_json, result.turn_slots = [], [], []
        return result

    async def _registry_step(self, step: str, call: Any) -> Any:
        try:
            return await call
        except RegistryUnavailable:
            raise
        except Unavailable as error:
            raise RegistryUnavailable(str(error)) from error
        except Exception as error:
            raise StepFailed(step, error) from error

    def _registry_retry(self, item: ClaimedExchange, error: RegistryUnavailable) -> Retry:
        # The pause grows with the outage (half its length so far), not with the number of
        # exchanges that ran into it: a burst must not push the retry minutes away.
        now = utcnow()
        if self._registry_down_since is None:
            self._registry_down_since = now
        outage = (now - self._registry_down_since).total_seconds()
        delay = min(_REGISTRY_MAX, max(_REGISTRY_BASE, outage / 2))
        logger.warning("registry unavailable; exchange %s stays pending (%s)", item.exchange_id, error)
        return Retry(item.exchange_id, utcnow() + timedelta(seconds=delay), str(error), counted=False)

    def _failed_step(self, context: ExchangeContext, error: StepFailed) -> Finished | Retry:
        return attempts.failed_step(context, error, max_attempts=self.settings.observer_max_attempts,
                                    store_reasoning=self.settings.store_reasoning)

    # -- writing -------------------------------------------------------------------------

    def _workers_running(self) -> bool:
        return any(not task.done() for task in self._workers)

    async def _write_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            if self._stopping and not self._workers_running():
                return
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
            self._results = [*batch, *self._results]
            raise
        except Exception:
            if len(batch) == 1:
                self._results = [self._unstorable(batch[0]), *self._results]
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
        tries = held.attempts if held is not None else 1
        error = StepFailed("store traces", RuntimeError("the database refused the traces; see the log"))
        if isinstance(result, Retry):
            return result
        return Retry(
            result.exchange_id,
            utcnow() + timedelta(seconds=min(attempts.RETRY_MAX, attempts.RETRY_BASE * 2**tries)),
            str(error),
        )

    async def _finish(self, batch: list[Finished | Retry]) -> None:
        done = [r for r in batch if isinstance(r, Finished)]
        retries = [r for r in batch if isinstance(r, Retry)]
        await self._evidence.write(done)  # first, in its own transaction
        report = await self.queue.finish(self.owner, done, retries)
        self.write_batches += 1
        payloads = {result.exchange_id: held.payload for result in report.written
                    if (held := self._held.get(result.exchange_id)) is not None} if self._on_committed else {}
        for result in batch:
            self._held.pop(result.exchange_id, None)
            self._evidence.forget(result.exchange_id)
        if report.lost:
            logger.warning(
                "lost the lease of %d exchanges; another observer took them over", len(report.lost)
            )
        self.processed += len(report.written)
        if report.written and not self._held:
            self._scrubs.request()
        self._space.set()
        if retries:
            due = min(retry.next_attempt_at for retry in retries)
            if self._next_retry is None or self._next_retry <= utcnow() or due < self._next_retry:
                self._next_retry = due
            self._wake.set()
        if report.written and self._on_written is not None:
            self._on_written(report.written)
        if report.written and self._on_committed is not None:
            self._on_committed(report.written, payloads)
