"""What the Observer asks the Registry: who an agent hash is, which session a call belongs to,
and which card an agent has. Proto-free for its callers.

The Registry being down (UNAVAILABLE, DEADLINE_EXCEEDED, or a connection that cannot be made)
is `RegistryUnavailable`: the processor keeps the exchange pending and backs off. Any other
error is `RegistryError`, a failed step like any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from smoltbot.core.errors import PermissionDenied, Unavailable
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.ids import agent_id_matches_hash
from smoltbot.core.protoconv import card_to_dict, from_timestamp, to_timestamp
from smoltbot.core.tls import TlsConfig
from smoltbot.v1 import agent_pb2, registry_service_pb2_grpc
from smoltbot.v1 import registry_service_pb2 as pb

__all__ = ["RegistryClient", "RegistryError", "RegistryUnavailable"]

logger = logging.getLogger(__name__)

_DOWN_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
_MAX_CACHED_AGENTS = 100_000
_MAX_CACHED_CARDS = 10_000
_MAX_SPANS_PER_AGENT = 16


@dataclass(frozen=True, slots=True)
class _Span:
    """A card and the times it is the answer for: since (None: from the start) until (exclusive)."""

    since: datetime | None
    until: datetime
    card: dict[str, Any]
    #: For a span that ends in the future when it was answered (the Registry vouches for its
    #: current card a notice beyond its clock): once this time has passed, a call served from it
    #: asks for a later answer in the background, so the next calls find one cached.
    refresh_after: datetime | None = None


class RegistryUnavailable(Unavailable):
    """The Registry could not be reached; try again later."""

    default_reason = "REGISTRY_UNAVAILABLE"


class RegistryError(Exception):
    """The Registry answered with an error that waiting will not fix."""


class RegistryClient:
    """A channel to the Registry with the caches the Observer needs.

    Agent ids of hashes never change, so they are cached for the process's life (bounded);
    the card in force at a time by the span the Registry vouches for (`card_at`); an agent's
    active card for `card_ttl` seconds; cards by id forever (a card version never changes).
    """

    def __init__(self, address: str, *, card_ttl: float = 5.0, rpc_timeout: float = 5.0,
                 tls: TlsConfig | None = None) -> None:
        self._channel = open_channel(address, tls)
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)
        self._card_ttl = card_ttl
        self._timeout = rpc_timeout
        self._agents: OrderedDict[str, str] = OrderedDict()
        self._active: dict[str, tuple[float, dict[str, Any]]] = {}
        self._cards: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._spans: OrderedDict[str, list[_Span]] = OrderedDict()
        self._card_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        await self._channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() in _DOWN_CODES:
                raise RegistryUnavailable(
                    f"registry unavailable: {error.code().name} {error.details()}") from None
            raise RegistryError(f"registry {error.code().name}: {error.details()}") from None

    async def _once(self, key: tuple[str, str], factory: Any) -> Any:
        # Many exchanges of one agent arrive together: one registry call serves them all.
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await factory()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._inflight[key]

    async def agent_id_for(self, agent_hash: str, *, create: bool = True) -> str:
        """The agent of a credential hash (created by the Registry on first sight), or "" when
        `create` is false and no agent has this credential yet."""
        cached = self._agents.get(agent_hash)
        if cached is not None:
            self._agents.move_to_end(agent_hash)
            return cached

        async def fetch() -> str:
            request = pb.ResolveAgentRequest(agent_hash=agent_hash, lookup_only=not create)
            try:
                response = await self._call(self._stub.ResolveAgent, request)
            except RegistryError:
                if create:
                    raise
                return ""  # NOT_FOUND: no agent has this credential (anything else is retried)
            return str(response.agent.agent_id)

        agent_id: str = await self._once(("agent" if create else "lookup", agent_hash), fetch)
        if not agent_id:
            return ""
        self._agents[agent_hash] = agent_id
        if len(self._agents) > _MAX_CACHED_AGENTS:
            self._agents.popitem(last=False)
        return agent_id

    def forget(self, agent_id: str, agent_hash: str) -> None:
        """Drops what is cached of a deleted agent: its next call resolves it afresh (the Registry
        creates it again, with a default card)."""
        self._agents.pop(agent_hash, None)
        self._active.pop(agent_id, None)
        self._spans.pop(agent_id, None)

    async def check_owner(self, agent_id: str, agent_hash: str) -> None:
        """PermissionDenied unless `agent_hash` is `agent_id`'s credential hash."""
        # Agent ids are "smolt-" + the hash's leading hex digits (core.ids, which the API relies
        # on too): a hash that cannot be this agent's is refused without asking the Registry,
        # whose ResolveAgent would create an agent for it.
        if not agent_id_matches_hash(agent_id, agent_hash):
            raise PermissionDenied(f"the credential is not {agent_id}'s", reason="NOT_OWNER")
        if await self.agent_id_for(agent_hash) != agent_id:
            raise PermissionDenied(f"the credential is not {agent_id}'s", reason="NOT_OWNER")

    async def session_for(self, agent_id: str, agent_hash: str, hint: str, at: datetime | None) -> str:
        """The session of a call: the named one, or the current inferred one at `at`."""
        request = pb.ResolveSessionRequest(
            agent_id=agent_id, agent_hash=agent_hash, session_hint=hint,
            hint_source=agent_pb2.SESSION_SOURCE_CLIENT if hint else agent_pb2.SESSION_SOURCE_UNSPECIFIED,
        )
        if at is not None:
            request.at.CopyFrom(to_timestamp(at, "at"))
        response = await self._call(self._stub.ResolveSession, request)
        return str(response.session.session_id)

    async def active_card(self, agent_id: str) -> dict[str, Any]:
        """The agent's active card (cached briefly: a new card applies within `card_ttl`)."""
        cached = self._active.get(agent_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._card_ttl:
            return cached[1]

        async def fetch() -> dict[str, Any]:
            response = await self._call(self._stub.GetActiveCard, pb.GetActiveCardRequest(agent_id=agent_id))
            return card_to_dict(response.card)

        card: dict[str, Any] = await self._once(("card", agent_id), fetch)
        self._active[agent_id] = (time.monotonic(), card)
        self._remember(card)
        if len(self._active) > _MAX_CACHED_CARDS:
            self._active.pop(next(iter(self._active)))
        return card

    async def card_at(self, agent_id: str, at: datetime) -> dict[str, Any]:
        """The card in force at `at` (the Registry's GetActiveCard with as_of).

        Answers are cached by the span the Registry says they hold for ([in_force_from,
        in_force_until)), never by age: a cached card serves a call only when the Registry
        vouched for it at that call's time, so a card published before a call applies to it
        whichever observer, restart or cache handles it, and reprocessing gives the same card.
        """
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        cached = self._span_for(agent_id, at)
        if cached is not None:
            self._refresh_ahead(agent_id, cached)
            return cached.card
        return await self._look_up(agent_id, at)

    async def _look_up(self, agent_id: str, at: datetime) -> dict[str, Any]:
        # One lookup per agent at a time: the calls of a burst started before the Registry's
        # answer to the first of them, which then serves them all from the cache.
        lock = self._card_locks.get(agent_id)
        if lock is None:
            lock = self._card_locks[agent_id] = asyncio.Lock()
        async with lock:
            cached = self._span_for(agent_id, at)
            if cached is not None:
                return cached.card
            request = pb.GetActiveCardRequest(agent_id=agent_id)
            request.as_of.CopyFrom(to_timestamp(at, "at"))
            response = await self._call(self._stub.GetActiveCard, request)
            answered = datetime.now(UTC)
        until = from_timestamp(response, "in_force_until")
        if until is None:  # the Registry vouches for no span: good for this call only
            return card_to_dict(response.card)
        refresh_after = answered + (until - answered) / 2 if until > answered else None
        span = _Span(from_timestamp(response, "in_force_from"), until, card_to_dict(response.card),
                     refresh_after)
        self._remember(span.card)
        self._remember_span(agent_id, span)
        return span.card

    def _refresh_ahead(self, agent_id: str, span: _Span) -> None:
        """At a trickle, the next call usually starts after the span its predecessor was served
        from ends; asking again (for now) when half of the span's future has passed keeps an
        answer ahead of the calls, off their way. The cache still holds only what the Registry
        vouched for, so this changes no verdict."""
        if span.refresh_after is None or agent_id in self._refreshing:
            return
        now = datetime.now(UTC)
        if now < span.refresh_after or now >= span.until:
            return

        async def refresh() -> None:
            try:
                await self._look_up(agent_id, datetime.now(UTC))
            except (RegistryUnavailable, RegistryError) as error:
                # Nothing is lost: the next call that finds no span asks on its own way.
                logger.debug("card refresh for %s failed: %s", agent_id, error)
            except Exception:
                logger.exception("card refresh for %s failed; the next call asks on its own way", agent_id)
            finally:
                self._refreshing.pop(agent_id, None)

        self._refreshing[agent_id] = asyncio.get_running_loop().create_task(refresh())

    def _span_for(self, agent_id: str, at: datetime) -> _Span | None:
        spans = self._spans.get(agent_id)
        if spans is None:
            return None
        self._spans.move_to_end(agent_id)
        for span in spans:
            if (span.since is None or span.since <= at) and at < span.until:
                return span
        return None

    def _remember_span(self, agent_id: str, span: _Span) -> None:
        spans = self._spans.setdefault(agent_id, [])
        card_id = span.card.get("card_id")
        for i, known in enumerate(spans):
            if known.card.get("card_id") == card_id and known.since == span.since:
                if span.until > known.until:  # the same version, vouched for until later
                    spans[i] = span
                break
        else:
            spans.append(span)
            del spans[:-_MAX_SPANS_PER_AGENT]
        self._spans.move_to_end(agent_id)
        if len(self._spans) > _MAX_CACHED_CARDS:
            self._spans.popitem(last=False)

    async def card(self, agent_id: str, card_id: str) -> dict[str, Any] | None:
        """A card version by id (the one a stored trace was verified against), or None."""
        cached = self._cards.get(card_id)
        if cached is not None:
            return cached
        active = await self.active_card(agent_id)
        if active.get("card_id") == card_id:
            return active
        token = ""
        while True:
            response = await self._call(self._stub.ListCards, pb.ListCardsRequest(
                agent_id=agent_id, page_size=100, page_token=token))
            for proto in response.cards:
                self._remember(card_to_dict(proto))
            if card_id in self._cards or not response.next_page_token:
                return self._cards.get(card_id)
            token = response.next_page_token

    def _remember(self, card: dict[str, Any]) -> None:
        card_id = card.get("card_id")
        if isinstance(card_id, str) and card_id:
            self._cards[card_id] = card
            if len(self._cards) > _MAX_CACHED_CARDS:
                self._cards.popitem(last=False)
