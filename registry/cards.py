"""Alignment cards: versioned per agent, exactly one active.

Every agent starts with `core.aap.cards.default_card` (restricts nothing). PutCard validates
and normalises a card (`normalize_card`: unified or legacy AAP shape in, unified out), stores
it as the next version with a fresh card_id, and makes it the active one in the same
transaction; older versions stay readable. A partial unique index makes "two active cards"
impossible even for a buggy writer.

A version stored by PutCard is in force from `CARD_NOTICE` after the moment it was stored (under
the agent's lock), and PutCard returns only then: so the Registry can vouch for the card in force
up to its clock plus that notice (`in_force`'s `until`), which lets an Observer serve a trickle of
calls from one answer instead of asking per call, and a card put through any Registry process
sharing the database still applies to every call started after PutCard returned.

`CardFeed` hands every version stored from now on to the watchers of this process (WatchCards,
which the gateway's enforcement cache follows): in-process, so with several Registry replicas a
watcher sees the cards stored through its own replica only (docs/enforce.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.aap.cards import default_card, new_card_id, normalize_card
from smoltbot.core.errors import InvalidArgument, NotFound, Unauthenticated
from smoltbot.core.ids import validate_agent_hash, validate_agent_id
from smoltbot.core.pagination import decode_page_token, next_page, page_size
from smoltbot.core.storage import Database, utcnow
from smoltbot.registry import store
from smoltbot.registry.store import Card

__all__ = ["CARD_NOTICE", "MAX_CARD_JSON_BYTES", "MAX_WATCHED_AGENTS", "CardFeed", "CardInForce", "Cards"]

logger = logging.getLogger(__name__)

MAX_CARD_JSON_BYTES = 1024 * 1024
#: How long after PutCard stores a version it comes into force (PutCard returns then); every
#: answer of `in_force` holds up to the Registry's clock plus this. A constant, not a setting:
#: the promise needs every Registry process on one database to keep the same notice.
CARD_NOTICE = timedelta(milliseconds=250)
#: Agents one watch may name (WatchCardsRequest.agent_ids).
MAX_WATCHED_AGENTS = 1000
#: Cards a watcher may fall behind by before its watch ends (it reconnects and reads again).
_WATCH_BACKLOG = 1024
#: Put in a watcher's queue when the server stops: its watch ends cleanly.
_CLOSING = object()
_cards = store.alignment_cards


class _FellBehind(Exception):
    pass


class CardFeed:
    """Cards as they are stored, to every watcher in this process."""

    def __init__(self) -> None:
        self._watchers: set[asyncio.Queue[Card | None]] = set()
        self._closed = False

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def publish(self, card: Card) -> None:
        for queue in list(self._watchers):
            try:
                queue.put_nowait(card)
            except asyncio.QueueFull:
                # A watcher this far behind is ended rather than allowed to hold memory; it
                # reconnects and reads its cards again, so it misses nothing.
                self._end(queue, None)

    def close(self) -> None:
        """Ends every watch (the server is stopping): each stream ends cleanly, and its watcher
        reconnects to another replica or when this one is back. Later watches end at once."""
        self._closed = True
        for queue in list(self._watchers):
            self._end(queue, _CLOSING)

    def _end(self, queue: asyncio.Queue[Any], mark: object) -> None:
        self._watchers.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(mark)

    async def watch(self, agent_ids: Collection[str] = ()) -> AsyncIterator[Card | None]:
        """None first (the watch is live), then each card stored (of `agent_ids`, if given)."""
        wanted = frozenset(agent_ids)
        queue: asyncio.Queue[Any] = asyncio.Queue(_WATCH_BACKLOG)
        if self._closed:
            return
        self._watchers.add(queue)
        try:
            yield None
            while True:
                card = await queue.get()
                if card is _CLOSING:
                    return
                if card is None:
                    raise _FellBehind
                if not wanted or card.agent_id in wanted:
                    yield card
        except _FellBehind:
            logger.warning("a card watcher fell %d cards behind; its watch ends", _WATCH_BACKLOG)
        finally:
            self._watchers.discard(queue)


@dataclass(frozen=True, slots=True)
class CardInForce:
    card: Card
    #: When the Registry stored this version; None for the agent's first card (in force before too).
    since: datetime | None
    #: The answer holds for every time before this one: the next version's time, or now plus
    #: `CARD_NOTICE` (no version stored from now on can come into force earlier).
    until: datetime


class Cards:
    def __init__(self, db: Database, *, public_api_url: str) -> None:
        self._db = db
        self._public_api_url = public_api_url.rstrip("/")
        self.feed = CardFeed()

    def watch(self, agent_ids: Collection[str]) -> AsyncIterator[Card | None]:
        """`CardFeed.watch` for these agents (validated; empty: every agent)."""
        if len(agent_ids) > MAX_WATCHED_AGENTS:
            raise InvalidArgument("agent_ids", f"names {len(agent_ids)} agents; at most {MAX_WATCHED_AGENTS}",
                                  reason="LIMIT_EXCEEDED")
        for agent_id in agent_ids:
            validate_agent_id(agent_id, "agent_ids")
        return self.feed.watch(agent_ids)

    async def insert_default(self, conn: AsyncConnection, agent_id: str, now: datetime) -> Card:
        """Stores version 1, the default card, inside the transaction creating the agent."""
        card_id = new_card_id()
        data = default_card(agent_id, card_id=card_id, issued_at=now,
                            query_endpoint=f"{self._public_api_url}/v1/agents/{agent_id}/traces")
        return await _store_version(conn, agent_id, normalize_card(data, agent_id=agent_id, card_id=card_id,
                                                                    now=now), version=1, now=now)

    async def active(self, agent_id: str) -> Card:
        """The card in force now (a version PutCard is still waiting to bring into force is not
        yet: it would be answered before it applies to calls)."""
        validate_agent_id(agent_id)
        now = utcnow()
        async with self._db.read() as conn:
            await store.require_agent(conn, agent_id)
            row = (await conn.execute(
                sa.select(_cards).where(_cards.c.agent_id == agent_id, _cards.c.created_at <= now)
                .order_by(_cards.c.version.desc()).limit(1)
            )).first()
            if row is None:  # clocks of several Registry processes apart: the first version
                row = (await conn.execute(
                    sa.select(_cards).where(_cards.c.agent_id == agent_id).order_by(_cards.c.version).limit(1)
                )).first()
        if row is None:  # only possible for rows written outside the registry
            raise NotFound(f"agent {agent_id} has no active card", reason="CARD_NOT_FOUND", agent_id=agent_id)
        return store.card_from_row(row)

    async def in_force(self, agent_id: str, at: datetime) -> CardInForce:
        """The card that was in force at `at`: the latest version stored at or before it (the
        first version for an earlier time), with the span over which that answer holds.

        Runs under the agent's lock, as `put` does: a version being stored now either is
        committed and seen here, or takes the lock after this answer and so comes into force
        at its time plus `CARD_NOTICE`, at or after this answer's `until`: an answer never
        changes for any time up to `until`.
        """
        validate_agent_id(agent_id)

        async def read(conn: AsyncConnection) -> tuple[datetime, list[Any]]:
            await store.lock_agent(conn, agent_id)
            now = utcnow()
            return now, list((await conn.execute(
                sa.select(_cards).where(_cards.c.agent_id == agent_id).order_by(_cards.c.version)
            )).all())

        now, rows = await self._db.transact(read)
        if not rows:  # only possible for rows written outside the registry
            raise NotFound(f"agent {agent_id} has no card", reason="CARD_NOT_FOUND", agent_id=agent_id)
        index = 0
        for i, row in enumerate(rows):
            if row.created_at <= at:
                index = i
        card = store.card_from_row(rows[index])
        since = card.created_at if index > 0 else None
        until = rows[index + 1].created_at if index + 1 < len(rows) else now + CARD_NOTICE
        return CardInForce(card, since, until)

    async def put(self, agent_id: str, agent_hash: str, *, card: dict[str, Any] | None = None,
                  card_json: str | None = None) -> Card:
        """Validates, stores as the next version and activates. `card` is the card as a
        dict (from the proto), `card_json` as JSON text; exactly one is given."""
        validate_agent_id(agent_id)
        if not agent_hash:
            raise Unauthenticated("agent_hash is required to act for an agent", field="agent_hash")
        validate_agent_hash(agent_hash)
        data, source = _card_input(card, card_json)
        # Each version is its own card: a card fetched, edited and put back gets a new id.
        data.pop("card_id", None)
        now = utcnow()
        try:
            normalized = normalize_card(data, agent_id=agent_id, card_id=new_card_id(), now=now)
        except InvalidArgument as error:
            detail = error.message.removeprefix(f"{error.field}: ")
            field = source if error.field in ("", "card") else f"{source}.{error.field}"
            raise InvalidArgument(field, detail, reason=error.reason) from None
        async with self._db.begin() as conn:
            await store.verify_owner(conn, agent_id, agent_hash)
            await store.lock_agent(conn, agent_id)
            # The version is in force from `CARD_NOTICE` after this moment, taken under the
            # agent's lock: `in_force` has vouched for no time that late (see there).
            in_force_at = utcnow() + CARD_NOTICE
            latest = (await conn.execute(
                sa.select(sa.func.max(_cards.c.version)).where(_cards.c.agent_id == agent_id)
            )).scalar_one_or_none()
            stored = await _store_version(conn, agent_id, normalized, version=(latest or 0) + 1,
                                          now=in_force_at)
        # Watchers hear of it, and the caller returns, once it is in force: a call started after
        # PutCard returned is checked against it. Scheduled, so a cancelled caller still publishes.
        published = False

        def publish() -> None:
            nonlocal published
            if not published:
                published = True
                self.feed.publish(stored)

        delay = max(0.0, (in_force_at - utcnow()).total_seconds())
        asyncio.get_running_loop().call_later(delay, publish)
        await asyncio.sleep(delay)
        publish()
        logger.info("agent %s: card %s is version %d", agent_id, stored.card_id, stored.version)
        return stored

    async def list(self, agent_id: str, size: int, token: str) -> tuple[list[Card], str, str]:
        """Newest version first; also returns the active card's id."""
        validate_agent_id(agent_id)
        limit = page_size(size)
        scope = f"cards:{agent_id}"
        after = decode_page_token(token, scope=scope, types=(int,))
        query = sa.select(_cards).where(_cards.c.agent_id == agent_id).order_by(_cards.c.version.desc())
        if after is not None:
            query = query.where(_cards.c.version < after[0])
        async with self._db.read() as conn:
            agent = await store.require_agent(conn, agent_id)
            rows = (await conn.execute(query.limit(limit + 1))).all()
        cards, next_token = next_page([store.card_from_row(row) for row in rows], limit, scope=scope,
                                      key=lambda card: (card.version,))
        return cards, agent.active_card_id or "", next_token


def _card_input(card: dict[str, Any] | None, card_json: str | None) -> tuple[dict[str, Any], str]:
    if card_json is not None:
        if len(card_json.encode("utf-8", "surrogatepass")) > MAX_CARD_JSON_BYTES:
            raise InvalidArgument("card_json", f"must be at most {MAX_CARD_JSON_BYTES} bytes",
                                  reason="FIELD_TOO_LONG")
        try:
            data = json.loads(card_json)
        except ValueError as error:
            raise InvalidArgument("card_json", f"is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise InvalidArgument("card_json", "must be a JSON object")
        return data, "card_json"
    if card is not None:
        return dict(card), "card"
    raise InvalidArgument("card", "set card or card_json")


async def _store_version(conn: AsyncConnection, agent_id: str, data: dict[str, Any], *, version: int,
                         now: datetime) -> Card:
    # Deactivate first: the partial unique index allows one active row at every moment.
    await conn.execute(sa.update(_cards).where(_cards.c.agent_id == agent_id, _cards.c.active.is_(True))
                       .values(active=False))
    card_id = data["card_id"]
    await conn.execute(sa.insert(_cards).values(
        card_id=card_id, agent_id=agent_id, version=version, active=True, created_at=now,
        card_json=json.dumps(data, separators=(",", ":"), ensure_ascii=False),
    ))
    await conn.execute(sa.update(store.agents).where(store.agents.c.agent_id == agent_id)
                       .values(active_card_id=card_id))
    return Card(card_id=card_id, agent_id=agent_id, version=version, active=True, created_at=now, data=data)
