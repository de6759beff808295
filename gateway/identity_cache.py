"""Agent and session of a call, from the Registry, remembered so a warm call asks nobody.

- Agent: `ResolveAgent(agent_hash)` once per credential hash, then from memory. The relay asks
  only once the upstream has answered a call with a status other than 401/403 (proxy.py), so
  the Registry creates agents for accepted credentials alone.
- Session: a client-named session (named by `smoltbot.core.sessions.name_session`) is
  resolved once per (agent, name). Otherwise the agent's inferred session is reused while the
  agent has been idle less than `session_idle_minutes`, the Registry's own rule, applied here
  so we only ask when a new session may start.
- Activity: `TouchAgent` is sent in the background, at most once per agent per flush interval.
- Registry down: a cold call waits at most `cold_deadline`, then goes on with the hash only; a
  circuit breaker then skips the Registry entirely (no per-call cost) until a cooldown has
  passed, when one call probes it again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smoltbot.core.breaker import CircuitBreaker
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.tls import TlsConfig
from smoltbot.v1 import agent_pb2, registry_service_pb2, registry_service_pb2_grpc

__all__ = ["Identity", "IdentityCache"]

logger = logging.getLogger(__name__)

#: (agent_id, session_id); either may be "" when unknown.
Identity = tuple[str, str]
_UNKNOWN: Identity = ("", "")


@dataclass(slots=True)
class _Inferred:
    session_id: str
    last_call: float
_MAX_NAMED_SESSIONS = 50_000
_MAX_AGENTS = 100_000


class IdentityCache:
    def __init__(self, address: str, *, session_idle_minutes: float, cold_deadline: float = 0.2,
                 lookup_timeout: float = 5.0, breaker_cooldown: float = 1.0,
                 breaker_max_cooldown: float = 30.0,
                 touch_interval: float = 2.0, tls: TlsConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._address = address
        self._tls = tls
        self._idle = session_idle_minutes * 60.0
        self._cold_deadline = cold_deadline
        self._lookup_timeout = lookup_timeout
        self._touch_interval = touch_interval
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_service_pb2_grpc.RegistryServiceAsyncStub | None = None
        self._agents: dict[str, str] = {}
        self._named: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()
        #: agent_id -> [session_id, monotonic time of the agent's last call]
        #: agent_id -> the inferred session and the monotonic time of the agent's last call
        self._inferred: dict[str, _Inferred] = {}
        self._resolving: dict[tuple[str, str], asyncio.Task[Identity]] = {}
        self._touches: dict[str, tuple[float, str, str]] = {}
        self._touch_task: asyncio.Task[None] | None = None
        #: Opens on the first unreachable answer; each failed probe doubles the cooldown.
        self._breaker = CircuitBreaker(failures=1, reset_after=breaker_cooldown,
                                       max_reset_after=breaker_max_cooldown, clock=clock)
        self._last_ok = 0.0
        self._health_checked = 0.0
        self._health_ok: bool | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._channel = open_channel(self._address, self._tls)
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)  # an AsyncStub on aio
        self._touch_task = asyncio.get_running_loop().create_task(self._flush_touches_forever())

    async def close(self) -> None:
        if self._touch_task is not None:
            self._touch_task.cancel()
            await asyncio.gather(self._touch_task, return_exceptions=True)
            self._touch_task = None
        await self._flush_touches()
        for task in list(self._resolving.values()):
            task.cancel()
        if self._resolving:
            await asyncio.gather(*self._resolving.values(), return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    # ------------------------------------------------------------------ lookups

    def warm(self, agent_hash: str, hint: str) -> Identity | None:
        """The identity from memory, or None when the Registry must be asked."""
        agent_id = self._agents.get(agent_hash)
        if agent_id is None:
            return None
        now = time.monotonic()
        if hint:
            session_id = self._named.get((agent_id, hint))
            if session_id is None:
                return None
        else:
            entry = self._inferred.get(agent_id)
            if entry is None or now - entry.last_call >= self._idle:
                return None
            entry.last_call = now
            session_id = entry.session_id
        self._touches[agent_id] = (time.time(), session_id, agent_hash)
        return agent_id, session_id

    async def resolve(self, agent_hash: str, hint: str) -> Identity:
        """Asks the Registry (bounded by the cold deadline); never raises. With the breaker open it
        returns at once with whatever is cached."""
        if self._breaker.is_open or self._breaker.probing:
            return self._agents.get(agent_hash, ""), ""
        key = (agent_hash, hint)
        task = self._resolving.get(key)
        if task is None:
            self._breaker.allow()  # half-open: this call probes, the others go on
            task = asyncio.get_running_loop().create_task(self._resolve(agent_hash, hint))
            self._resolving[key] = task
            task.add_done_callback(lambda _: self._resolving.pop(key, None))
        try:
            # The call waits at most the cold deadline; the lookup itself goes on in the
            # background (up to lookup_timeout) and fills the cache for the calls after it, so a
            # slow-but-alive Registry costs one call its headers, not every call.
            return await asyncio.wait_for(asyncio.shield(task), self._cold_deadline)
        except TimeoutError:
            return self._agents.get(agent_hash, ""), ""
        except asyncio.CancelledError:
            raise
        except Exception:  # _resolve catches what it expects; this is a bug guard
            logger.exception("identity resolution failed unexpectedly")
            return _UNKNOWN

    async def _resolve(self, agent_hash: str, hint: str) -> Identity:
        assert self._stub is not None
        deadline = time.monotonic() + self._lookup_timeout
        agent_id = self._agents.get(agent_hash, "")
        try:
            if not agent_id:
                reply = await self._stub.ResolveAgent(
                    registry_service_pb2.ResolveAgentRequest(agent_hash=agent_hash),
                    timeout=max(deadline - time.monotonic(), 0.001),
                )
                agent_id = reply.agent.agent_id
                if len(self._agents) >= _MAX_AGENTS:
                    self._agents.clear()
                self._agents[agent_hash] = agent_id
                if reply.created:
                    logger.info("new agent %s", agent_id)
            request = registry_service_pb2.ResolveSessionRequest(
                agent_id=agent_id, agent_hash=agent_hash, session_hint=hint,
                hint_source=agent_pb2.SESSION_SOURCE_CLIENT if hint else agent_pb2.SESSION_SOURCE_UNSPECIFIED,
            )
            request.at.GetCurrentTime()
            session = await self._stub.ResolveSession(
                request, timeout=max(deadline - time.monotonic(), 0.001))
            session_id = session.session.session_id
        except grpc.aio.AioRpcError as error:
            self._failed(error)
            return agent_id, ""
        self._succeeded()
        now = time.monotonic()
        if hint:
            self._named[(agent_id, hint)] = session_id
            if len(self._named) > _MAX_NAMED_SESSIONS:
                self._named.popitem(last=False)
        else:
            self._inferred[agent_id] = _Inferred(session_id, now)
        self._touches[agent_id] = (time.time(), session_id, agent_hash)
        return agent_id, session_id

    def _failed(self, error: grpc.aio.AioRpcError) -> None:
        code = error.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
            if self._breaker.failure():
                logger.warning("registry unreachable (%s); calls go on without agent/session ids", code.name)
        else:
            logger.warning("registry refused to resolve an identity: %s %s", code.name, error.details())
            self._breaker.release()

    def _succeeded(self) -> None:
        if self._breaker.success():
            logger.info("registry reachable again")
        self._last_ok = time.monotonic()

    # ------------------------------------------------------------------ health

    async def reachable(self) -> bool:
        """Whether the Registry answers: from the last call if recent, else a health check (cached 5 s)."""
        if self._breaker.is_open:
            return False
        now = time.monotonic()
        if now - self._last_ok < 10.0:
            return True
        if self._health_ok is not None and now - self._health_checked < 5.0:
            return self._health_ok
        ok = False
        if self._channel is not None:
            try:
                # grpcio-health-checking's stub sets its methods in __init__, out of mypy's sight.
                check = health_pb2_grpc.HealthStub(self._channel).Check  # type: ignore[attr-defined]
                reply = await check(health_pb2.HealthCheckRequest(), timeout=0.3)
                ok = reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                ok = False
        self._health_ok, self._health_checked = ok, time.monotonic()
        return ok

    # ------------------------------------------------------------------ activity

    async def _flush_touches_forever(self) -> None:
        while True:
            await asyncio.sleep(self._touch_interval)
            await self._flush_touches()

    async def _flush_touches(self) -> None:
        if not self._touches or self._stub is None or self._breaker.is_open:
            return
        touches, self._touches = self._touches, {}
        for agent_id, (seen_at, session_id, agent_hash) in touches.items():
            stamp = Timestamp()
            stamp.FromNanoseconds(int(seen_at * 1e9))
            try:
                await self._stub.TouchAgent(
                    registry_service_pb2.TouchAgentRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                           seen_at=stamp,
                                                           session_id=session_id),
                    timeout=1.0,
                )
            except grpc.aio.AioRpcError as error:
                logger.debug("TouchAgent %s failed: %s", agent_id, error.code().name)
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    return
