"""The card in force for each agent, as the gateway enforces it: cached, kept current by a watch.

One `WatchCards` stream from the Registry tells the gateway of every card stored, as it is
stored, so a new card applies to the next call (well within a second; no polling). Cached cards
are trusted only while that stream is live: it is opened again at once when it ends, with a
short backoff while the Registry is away, and the cache is emptied each time it (re)starts, since
versions stored in between were missed. While the stream is down (or the Registry is too old to
offer it) a card read from the Registry (`GetActiveCard`, short deadline) is used for one second
at most, which keeps the same bound.

When the card cannot be read (the Registry is unreachable or answers with an error), the agent's
fail policy decides, from the last card the gateway read for that agent
(`extensions.smoltbot.enforcement.fail_policy`), else the `enforce_fail_policy` setting: `allow`
lets the call through unenforced, `block` stops its tool calls. Either way it is logged and
counted (`smoltbot_gateway_enforcement_card_unavailable`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

import grpc

from smoltbot.core.aap.enforcement import fail_policy_of
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.protoconv import card_to_dict
from smoltbot.core.tls import TlsConfig
from smoltbot.v1 import registry_service_pb2, registry_service_pb2_grpc

__all__ = ["CardCache", "CardLookup"]

logger = logging.getLogger(__name__)

_MAX_CARDS = 100_000
_RETRY_FIRST, _RETRY_MAX = 0.1, 5.0
_FAIL_FAST = 1.0
#: While the watch is down, how long a card read from the Registry is used (the bound on how late
#: a new card may apply).
_UNWATCHED_TTL = 1.0
_WATCH_UNSUPPORTED_RETRY = 60.0
_REGISTRY_AWAY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True, slots=True)
class CardLookup:
    """The card in force (None when it could not be read: then `failure` says why and
    `fail_policy` says what to do)."""

    card: dict[str, Any] | None
    failure: str = ""
    fail_policy: str = "allow"


class CardCache:
    def __init__(self, address: str, *, tls: TlsConfig | None = None, lookup_timeout: float = 0.5,
                 fail_policy: str = "allow") -> None:
        self._address = address
        self._tls = tls
        self._lookup_timeout = lookup_timeout
        self._fail_policy = fail_policy
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_service_pb2_grpc.RegistryServiceAsyncStub | None = None
        self._cards: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        #: The last card read per agent, kept through reconnects: where its fail policy comes from.
        self._last_policy: dict[str, str] = {}
        #: Bumped by every watch event of an agent and every (re)start of the watch: a lookup that
        #: raced with one caches nothing.
        self._changes: dict[str, int] = {}
        self._generation = 0
        self._live = False
        self._watch_task: asyncio.Task[None] | None = None
        self._lookups: dict[str, asyncio.Task[dict[str, Any]]] = {}
        #: Cards read while the watch was down, with when: used for `_UNWATCHED_TTL`.
        self._unwatched: collections.OrderedDict[str, tuple[dict[str, Any], float]] = (
            collections.OrderedDict())
        self.unavailable = 0
        #: After a failed read, calls fail fast until then instead of each waiting the deadline.
        self._down_until = 0.0

    @property
    def live(self) -> bool:
        """Whether the watch stream is up (cached cards are current)."""
        return self._live

    def start(self) -> None:
        self._channel = open_channel(self._address, self._tls)
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)  # an AsyncStub on aio
        self._watch_task = asyncio.get_running_loop().create_task(self._watch_forever())

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
            self._watch_task = None
        for task in list(self._lookups.values()):
            task.cancel()
        if self._lookups:
            await asyncio.gather(*self._lookups.values(), return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def cached(self, agent_id: str) -> dict[str, Any] | None:
        """The agent's card from memory, when the watch vouches for it (or it was read less than
        a second ago while the watch is down)."""
        if self._live:
            return self._cards.get(agent_id)
        found = self._unwatched.get(agent_id)
        if found is not None and time.monotonic() - found[1] < _UNWATCHED_TTL:
            return found[0]
        return None

    async def lookup(self, agent_id: str) -> CardLookup:
        card = self.cached(agent_id)
        if card is not None:
            return CardLookup(card)
        if time.monotonic() < self._down_until:
            return self._failed(agent_id, "the Registry did not answer a moment ago")
        task = self._lookups.get(agent_id)
        if task is None:
            task = self._lookups[agent_id] = asyncio.get_running_loop().create_task(self._read(agent_id))
            task.add_done_callback(lambda _done: self._lookups.pop(agent_id, None))
        try:
            return CardLookup(await asyncio.shield(task))
        except (grpc.RpcError, TimeoutError, RuntimeError) as error:
            if not isinstance(error, grpc.aio.AioRpcError) or error.code() in _REGISTRY_AWAY:
                self._down_until = time.monotonic() + _FAIL_FAST
            return self._failed(agent_id, _describe(error))

    def _failed(self, agent_id: str, why: str) -> CardLookup:
        self.unavailable += 1
        policy = self._last_policy.get(agent_id, self._fail_policy)
        failure = f"the card could not be read ({why})"
        logger.warning("agent %s: %s; fail policy %s", agent_id, failure, policy)
        return CardLookup(None, failure, policy)

    async def _read(self, agent_id: str) -> dict[str, Any]:
        if self._stub is None:
            raise RuntimeError("the card cache is not started")
        generation, changes = self._generation, self._changes.get(agent_id, 0)
        response = await self._stub.GetActiveCard(
            registry_service_pb2.GetActiveCardRequest(agent_id=agent_id), timeout=self._lookup_timeout)
        card = card_to_dict(response.card)
        self._last_policy[agent_id] = fail_policy_of(card)
        if self._live and generation == self._generation and changes == self._changes.get(agent_id, 0):
            self._store(agent_id, card)
        elif not self._live:
            self._unwatched[agent_id] = (card, time.monotonic())
            self._unwatched.move_to_end(agent_id)
            while len(self._unwatched) > _MAX_CARDS:
                self._unwatched.popitem(last=False)
        return card

    def _store(self, agent_id: str, card: dict[str, Any]) -> None:
        self._cards[agent_id] = card
        self._cards.move_to_end(agent_id)
        while len(self._cards) > _MAX_CARDS:
            self._cards.popitem(last=False)

    async def _watch_forever(self) -> None:
        delay = _RETRY_FIRST
        while True:
            started = time.monotonic()
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    logger.warning("the Registry offers no card watch (older than enforcement); cards are "
                                   "read per agent at most once a second instead")
                    self._live = False
                    await asyncio.sleep(_WATCH_UNSUPPORTED_RETRY)
                    continue
                logger.info("card watch ended: %s; reconnecting", _describe(error))
            except Exception:  # the watch must come back whatever went wrong
                logger.exception("card watch failed; reconnecting")
            finally:
                self._live = False
            delay = _RETRY_FIRST if time.monotonic() - started > _RETRY_MAX else min(delay * 2, _RETRY_MAX)
            await asyncio.sleep(delay)

    async def _watch_once(self) -> None:
        assert self._stub is not None
        call = self._stub.WatchCards(registry_service_pb2.WatchCardsRequest())
        try:
            async for message in call:
                if not message.HasField("card"):
                    # Live from here on: what was cached before may have missed versions.
                    self._generation += 1
                    self._cards.clear()
                    self._changes.clear()
                    self._unwatched.clear()
                    self._live = True
                    logger.info("card watch live")
                    continue
                agent_id = message.agent_id
                card = card_to_dict(message.card)
                self._changes[agent_id] = self._changes.get(agent_id, 0) + 1
                self._last_policy[agent_id] = fail_policy_of(card)
                self._store(agent_id, card)
        finally:
            call.cancel()


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
