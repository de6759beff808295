"""The gateway service: the relay, the identity cache, the spool and the shipper, served over HTTP/1.1.

- `build_app(settings)`: the app (its `dispatch` is what the server runs for each request).
- `start_gateway(settings, host, port)`: starts it on a port (0: any free one) and returns a
  handle with `.port`, `.base_url` and `.stop()`.
- `serve(settings)`: runs it until SIGINT/SIGTERM, then stops gracefully: no new connections,
  calls in flight finish (up to a grace period), and the spool is flushed to the observer.
  (`processes.py` runs one such process, or several on one port.)

Each process owns a spool slot (slots.py) and ships any slot whose process is gone.

Both sides are the gateway's own, on asyncio Protocols and llhttp (httptools): the server toward
the agents (server.py) and the client toward the upstream APIs with its keep-alive pool
(upstream.py); they replaced aiohttp's server and client after measuring each (docs/benchmarks.md,
"Gateway").
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from prometheus_client import Counter, Gauge

from smoltbot.core.grpc_server import grpc_message_limit
from smoltbot.core.identity import load_hash_secret
from smoltbot.core.settings import Settings
from smoltbot.core.signals import stop_signals
from smoltbot.core.tls import client_tls
from smoltbot.v1 import exchange_pb2, observer_service_pb2

from .capture import Capture, CaptureLimits, capture_executor, minimal_exchange
from .dead_letter import DeadLetters
from .enforce import CardCache, EnforcementMetrics, Enforcer
from .http_messages import Request, Response, StreamResponse, json_response
from .identity_cache import IdentityCache
from .metrics import METRICS_CONTENT_TYPE, GatewayMetrics
from .providers import SPECS, GatewayError
from .proxy import Proxy, provider_error
from .server import HttpServer
from .shipper import Shipper, encode_ingest_request
from .slots import SlotLock, claim_slot, dead_letter_directory, free_slots_with_records, spool_directory
from .spool import Spool
from .targets import refused_target
from .upstream import UpstreamPool

__all__ = ["Gateway", "RunningGateway", "build_app", "serve", "start_gateway"]

logger = logging.getLogger(__name__)

#: Request lines and header fields up to this size are accepted (aiohttp's default is 8 KiB;
#: the gateway must not reject what the upstream would take).
_MAX_FIELD = 64 * 1024
_SHUTDOWN_GRACE = 30.0
#: A call with at most this many request and response bytes (decoded, when compressed) has its
#: record built on the event loop (tens of microseconds) rather than on the capture thread.
_BUILD_ON_LOOP_BYTES = 64 * 1024


def _version() -> str:
    try:
        return metadata.version("smoltbot")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Gateway:
    """Everything one gateway app owns, started and stopped with it."""

    def __init__(self, settings: Settings, *, registry_address: str, observer_address: str) -> None:
        self.settings = settings
        self.version = _version()
        self.gateway_id = f"{socket.gethostname()}:{os.getpid()}"
        tls = client_tls(settings, registry_address, observer_address)
        self.metrics = GatewayMetrics()
        self._observer_address = observer_address
        self._tls = tls
        self.home = Path(settings.home)
        #: This process's slot (its spool and dead-letter directories; see slots.py), claimed at
        #: startup: until then the directories are slot 0's, where a lone gateway keeps them.
        self.slot: SlotLock | None = None
        self.spool = self._new_spool(spool_directory(self.home, 0))
        self.dead_letters = DeadLetters(dead_letter_directory(self.home, 0))
        self.capture_failures = 0
        self._building: set[asyncio.Future[tuple[bytes, str]]] = set()
        self.shipper = self._new_shipper(self.spool, self.dead_letters)
        #: Slots left by gateway processes that are gone, being shipped by this one: slot -> shipper.
        self.adopted: dict[int, tuple[SlotLock, Shipper]] = {}
        self._adoption_tasks: set[asyncio.Task[None]] = set()
        self._scan_task: asyncio.Task[None] | None = None
        self._adopted_count = Counter(
            "smoltbot_gateway_spool_adopted", "Exchanges found in the spool of a gateway process that is "
            "gone (same data dir), shipped by this one.", registry=self.metrics.registry)
        self._process_info = Gauge(
            "smoltbot_gateway_process_info", "This gateway process: its pid and spool slot (with "
            "gateway_processes > 1, each scrape reaches one of the processes).", ["pid", "slot"],
            registry=self.metrics.registry)
        self.identity = IdentityCache(registry_address, session_idle_minutes=settings.session_idle_minutes,
                                      tls=tls)
        self.metrics.track_spool(lambda: self.spool.depth, lambda: self.spool.size_bytes)
        self.enforcer = Enforcer(
            CardCache(registry_address, tls=tls, lookup_timeout=settings.enforce_card_timeout,
                      fail_policy=settings.enforce_fail_policy),
            EnforcementMetrics(self.metrics.registry))
        self.proxy = Proxy(
            upstreams={name: getattr(settings, spec.upstream_setting) for name, spec in SPECS.items()},
            pool_factory=self._upstream_pool,
            secret=load_hash_secret(Path(settings.home), settings.hash_secret),
            max_request_bytes=settings.max_request_bytes,
            identity=self.identity,
            submit=self.submit,
            metrics=self.metrics,
            # Bodies and headers are cut so that a record fits the one limit the transport is built on.
            capture_limits=CaptureLimits.for_record(settings.max_exchange_bytes),
            enforcer=self.enforcer,
        )

    def _new_spool(self, directory: Path) -> Spool:
        return Spool(directory, self.settings.spool_max_bytes,
                     on_drop=lambda count: self.metrics.spool_dropped.inc(count),
                     on_write_failure=lambda count: self.metrics.spool_write_failures.inc(count))

    def _new_shipper(self, spool: Spool, dead_letters: DeadLetters) -> Shipper:
        return Shipper(spool, self._observer_address,
                       on_shipped=self.metrics.exchanges_shipped.inc,
                       on_acked=self.metrics.count_ack, tls=self._tls,
                       dead_letters=dead_letters,
                       max_payload_bytes=self.settings.max_exchange_bytes + 16,
                       message_limit=grpc_message_limit(self.settings.max_exchange_bytes),
                       on_set_aside=self._set_aside)

    @property
    def capture_limits(self) -> CaptureLimits:
        """How much of a call its record holds (the relay hands them to every capture)."""
        return self.proxy.capture_limits

    @capture_limits.setter
    def capture_limits(self, limits: CaptureLimits) -> None:
        self.proxy.capture_limits = limits

    def _upstream_pool(self) -> UpstreamPool:
        settings = self.settings
        # Made on the first call (it needs the running loop). Never adds a header the client did
        # not send and keeps no cookies (a shared jar would hand one agent's cookies to another).
        return UpstreamPool(connect_timeout=settings.upstream_connect_timeout,
                            read_timeout=settings.upstream_idle_timeout,
                            max_field_size=_MAX_FIELD, keepalive_timeout=30.0)

    def submit(self, capture: Capture) -> None:
        """Runs after the client has its response: the record is built on the capture thread
        (off the event loop; a small one, decoded small, right here, which is cheaper than the
        hand-offs), then spooled and shipped. Every call yields one record: the full
        one, or a minimal one that says what failed."""
        if capture.built_cheaply_here(_BUILD_ON_LOOP_BYTES):
            self._ship(capture.exchange_id, *self._build(capture))
            return
        self.spool.building += 1
        try:
            capture.seal()
            future = asyncio.get_running_loop().run_in_executor(capture_executor(), self._build, capture)
        except Exception as error:  # noqa: BLE001 - no thread to build on: build the minimal record here
            self.spool.building -= 1
            failure = f"capture could not start: {type(error).__name__}"
            self._ship(capture.exchange_id, *self._minimal(capture, failure))
            return
        self._building.add(future)
        future.add_done_callback(lambda done: self._built(capture, done))

    def _build(self, capture: Capture) -> tuple[bytes, str]:
        """On the capture thread (or the loop, for a small call): the encoded record, and what
        failed ("" when nothing did)."""
        try:
            return encode_ingest_request(capture.to_exchange(self.gateway_id)), ""
        except Exception as error:  # noqa: BLE001 - the call is recorded by a minimal record instead
            # The type and our own messages only: an exception's text could quote captured data.
            text = str(error) if type(error).__name__ in ("RecordTooLarge", "RuntimeError") else ""
            return self._minimal(capture, f"building the record failed: {type(error).__name__}"
                                          + (f": {text}" if text else ""))

    def _minimal(self, capture: Capture, failure: str) -> tuple[bytes, str]:
        try:
            return encode_ingest_request(minimal_exchange(capture, self.gateway_id, failure)), failure
        except Exception as error:  # noqa: BLE001 - the last resort: ids, agent and what failed
            failure = f"{failure}; the minimal record failed too: {type(error).__name__}"
            last = exchange_pb2.Exchange(exchange_id=capture.exchange_id, agent_hash=capture.agent_hash,
                                         gateway_id=self.gateway_id, capture_failure=failure)
            return encode_ingest_request(last), failure

    def _built(self, capture: Capture, future: asyncio.Future[tuple[bytes, str]]) -> None:
        self._building.discard(future)
        self.spool.building -= 1
        if future.cancelled() or future.exception() is not None:
            payload, failure = self._minimal(capture, "building the record did not finish")
        else:
            payload, failure = future.result()
        self._ship(capture.exchange_id, payload, failure)

    def _ship(self, exchange_id: str, payload: bytes, failure: str) -> None:
        if failure:
            self.capture_failures += 1
            self.metrics.capture_failures.inc()
            logger.error("exchange %s: shipping a minimal record: %s", exchange_id, failure)
        try:
            self.shipper.submit_payload(exchange_id, payload)
        except Exception:  # a disk or shipping bug must never surface to the user; counted
            self.capture_failures += 1
            self.metrics.capture_failures.inc()
            logger.exception("exchange %s: could not spool or ship its record", exchange_id)
            return
        self.metrics.exchanges_captured.inc()

    def _set_aside(self, exchange_id: str, payload: bytes, reason: str) -> None:
        """The shipper gave up on a record: a minimal one goes in its place (unless it was one)."""
        self.metrics.exchanges_set_aside.inc()
        try:
            full = observer_service_pb2.IngestRequest.FromString(payload).exchange if payload else None
        except Exception:  # noqa: BLE001 - unreadable: the minimal record carries the id alone
            full = None
        if full is not None and full.capture_failure:
            return  # a minimal record that failed too: it is in the dead-letter directory, counted
        if full is None or not full.exchange_id:
            full = exchange_pb2.Exchange(exchange_id=exchange_id, gateway_id=self.gateway_id)
        minimal = minimal_exchange(full, self.gateway_id, f"the observer could not take the record: {reason}")
        self._ship(exchange_id, encode_ingest_request(minimal), minimal.capture_failure)

    async def drain_captures(self) -> None:
        """Waits for the records being built (used at shutdown, before the spool is flushed)."""
        if self._building:
            await asyncio.gather(*list(self._building), return_exceptions=True)

    async def startup(self) -> None:
        self.slot = claim_slot(self.home)
        self.spool.directory = self.slot.spool_directory
        self.dead_letters.directory = self.slot.dead_letter_directory
        self._process_info.labels(str(os.getpid()), str(self.slot.slot)).set(1)
        replayed = self.spool.open()
        self.dead_letters.open()
        self.shipper.start()
        self.identity.start()
        self.enforcer.start()
        self._scan_task = asyncio.get_running_loop().create_task(self._scan_for_orphans(),
                                                                 name="smoltbot-spool-orphans")
        upstreams = ", ".join(f"{spec.prefix} -> {getattr(self.settings, spec.upstream_setting)}"
                              for spec in SPECS.values())
        logger.info("gateway %s up (pid %d, spool %s): %s; %d spooled exchanges to replay", self.version,
                    os.getpid(), self.spool.directory, upstreams, replayed)

    async def cleanup(self) -> None:
        await self.proxy.close()
        await self.identity.close()
        await self.enforcer.close()
        await self.drain_captures()
        if self._scan_task is not None:
            self._scan_task.cancel()
            await asyncio.gather(self._scan_task, return_exceptions=True)
        # An adopted slot not shipped in full stays on disk, unlocked: the next gateway ships it.
        for task in list(self._adoption_tasks):
            task.cancel()
        await asyncio.gather(*self._adoption_tasks, return_exceptions=True)
        # A task cancelled before it first ran never reached its `finally`: stop its shipper here.
        for lock, shipper in list(self.adopted.values()):
            await shipper.stop(flush_timeout=0)
            lock.release()
        self.adopted.clear()
        await self.shipper.stop()
        if self.slot is not None:
            self.slot.release()

    # ------------------------------------------------------------------ orphaned spools

    async def _scan_for_orphans(self) -> None:
        """Ships the spools of gateway processes that are gone (killed, or no longer started
        because `gateway_processes` went down): found at start and every
        `gateway_orphan_scan_seconds`."""
        while True:
            try:
                own = {self.slot.slot} if self.slot is not None else set()
                for lock in free_slots_with_records(self.home, exclude=own | set(self.adopted)):
                    await self._adopt(lock)
            except Exception:  # a failed scan is retried; the records stay on disk
                logger.exception("spool: looking for spools left by other gateway processes failed")
            await asyncio.sleep(self.settings.gateway_orphan_scan_seconds)

    async def _adopt(self, lock: SlotLock) -> None:
        spool = self._new_spool(lock.spool_directory)
        dead_letters = DeadLetters(lock.dead_letter_directory)
        try:
            # Reading a spool's segments can take a while: not on the loop that relays calls.
            found = await asyncio.to_thread(spool.open)
            await asyncio.to_thread(dead_letters.open)
        except BaseException:
            lock.release()
            raise
        if not found:
            lock.release()
            return
        logger.info("spool: shipping %d exchanges left in %s by a gateway process that is gone",
                    found, lock.spool_directory)
        self._adopted_count.inc(found)
        shipper = self._new_shipper(spool, dead_letters)
        shipper.start()
        self.adopted[lock.slot] = (lock, shipper)
        task = asyncio.get_running_loop().create_task(self._finish_adopted(lock, shipper))
        self._adoption_tasks.add(task)
        task.add_done_callback(self._adoption_tasks.discard)

    async def _finish_adopted(self, lock: SlotLock, shipper: Shipper) -> None:
        """Ships an adopted slot until it is empty (or this gateway stops), then lets it go."""
        try:
            while shipper.spool.depth:
                await asyncio.sleep(0.2)
            logger.info("spool: %s shipped in full", lock.spool_directory)
        finally:
            self.adopted.pop(lock.slot, None)
            await shipper.stop(flush_timeout=1.0)
            lock.release()

    # ------------------------------------------------------------------ endpoints

    async def dispatch(self, request: Request) -> StreamResponse:
        """Every request: the target rules first (targets.py), then the provider prefixes (routed
        on the decoded path; the relay checks the path as sent), /health, /metrics, else a 404."""
        refused = refused_target(request)
        if refused is not None:
            return refused
        path = request.path
        for spec in SPECS.values():
            if path.startswith(spec.prefix) and path[len(spec.prefix):len(spec.prefix) + 1] == "/":
                return await self.proxy.handle(request, spec)
        if request.method in ("GET", "HEAD"):
            if path == "/health":
                return await self.health()
            if path == "/metrics":
                return Response(body=self.metrics.render(), headers=[("Content-Type", METRICS_CONTENT_TYPE)])
        return self.not_found(path)

    def not_found(self, path: str) -> Response:
        """Anything outside the provider prefixes is most likely a base URL without the prefix."""
        return provider_error(
            SPECS["anthropic"], 404, GatewayError.NOT_FOUND,
            f"No API at {path} on the smoltbot gateway: the Anthropic API is served under "
            "/anthropic, the OpenAI API under /openai, the Gemini API under /gemini. Set "
            "ANTHROPIC_BASE_URL=http://<gateway host:port>/anthropic (without /v1), "
            "OPENAI_BASE_URL=http://<gateway host:port>/openai/v1, or google-genai's base_url to "
            "http://<gateway host:port>/gemini.",
        )

    async def health(self) -> Response:
        registry = await self.identity.reachable()
        return json_response(200, {
            "status": "ok",
            "version": self.version,
            # With gateway_processes > 1 each connection reaches one process: this one.
            "process": {"pid": os.getpid(), "slot": self.slot.slot if self.slot is not None else None,
                        "processes": self.settings.gateway_processes},
            "registry": {"reachable": registry},
            "observer": {"reachable": self.shipper.observer_ready},
            "spool": {"depth": self.spool.depth, "bytes": self.spool.size_bytes,
                      "directory": str(self.spool.directory),
                      "adopted_depth": sum(shipper.spool.depth for _, shipper in self.adopted.values()),
                      "dropped": self.spool.dropped, "write_failures": self.spool.write_failures},
            "capture": {"failures": self.capture_failures, "building": len(self._building)},
            "dead_letter": {"count": self.dead_letters.count, "directory": str(self.dead_letters.directory)},
        })


def build_app(settings: Settings, *, registry_address: str | None = None,
              observer_address: str | None = None) -> Gateway:
    """The gateway app. Addresses default to the settings' registry/observer addresses."""
    return Gateway(
        settings,
        registry_address=registry_address or settings.registry_address,
        observer_address=observer_address or settings.observer_address,
    )


@dataclass
class RunningGateway:
    gateway: Gateway
    server: HttpServer
    host: str
    port: int
    shutdown_grace: float
    _stopped: bool = False

    @property
    def base_url(self) -> str:
        """e.g. http://127.0.0.1:8080 (agents use base_url + "/anthropic")."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stops accepting, lets calls in flight finish (up to the grace), flushes the spool. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self.server.shutdown(self.shutdown_grace)
        await self.gateway.cleanup()


async def start_gateway(settings: Settings, host: str = "127.0.0.1", port: int = 0, *,
                        registry_address: str | None = None, observer_address: str | None = None,
                        shutdown_grace: float = _SHUTDOWN_GRACE, reuse_port: bool = False) -> RunningGateway:
    """`reuse_port`: bind with SO_REUSEPORT, sharing the port with sibling gateway processes."""
    gateway = build_app(settings, registry_address=registry_address, observer_address=observer_address)
    await gateway.startup()
    server = HttpServer(gateway.dispatch, max_field=_MAX_FIELD, max_body=settings.max_request_bytes)
    try:
        bound = await server.start(host, port, reuse_port=reuse_port, backlog=1024)
    except BaseException:
        await gateway.cleanup()
        raise
    return RunningGateway(gateway, server, host, bound, shutdown_grace)


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Runs the gateway on settings.gateway_host:gateway_port until SIGINT/SIGTERM (one process;
    processes.py runs several)."""
    running = await start_gateway(settings, settings.gateway_host, settings.gateway_port,
                                  reuse_port=reuse_port)
    base = running.base_url
    logger.info("gateway listening on %s (agents: ANTHROPIC_BASE_URL=%s/anthropic, "
                "OPENAI_BASE_URL=%s/openai/v1, Gemini base_url %s/gemini)", base, base, base, base)
    try:
        async with stop_signals() as stop:
            await stop.wait()
    finally:
        logger.info("gateway stopping: finishing calls in flight, flushing the spool")
        await running.stop()
        logger.info("gateway stopped")
