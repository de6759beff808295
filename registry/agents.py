"""Agents: get-or-create by credential hash, lookups, listing, claims, and coalesced touches.

An agent is whoever holds one credential; the registry only ever sees the credential's
hash (HMAC-SHA256, `core/identity.py`). Its public id is ``smolt-`` + the first 8 hex digits
of the hash, extended two digits at a time while the shorter id belongs to another hash
(`core.ids.agent_id_candidates`; the id shapes every service accepts are in `core.ids`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from smoltbot.core.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from smoltbot.core.ids import (
    AGENT_ID_MIN_HEX,
    AGENT_ID_PREFIX,
    MAX_SESSION_ID_LENGTH,
    agent_id_candidates,
    validate_agent_hash,
    validate_agent_id,
)
from smoltbot.core.pagination import decode_page_token, next_page, page_size
from smoltbot.core.storage import Database, utcnow
from smoltbot.registry import store
from smoltbot.registry.store import Agent
from smoltbot.registry.validation import clamp_to_now, validate_text

__all__ = [
    "Agents",
    "TouchBuffer",
]

logger = logging.getLogger(__name__)

_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")
MAX_EMAIL_LENGTH = 320
#: Known ids are cached so touches of busy agents cost no query; an agent deleted by its owner
#: is forgotten by the registry that deleted it (another registry process forgets it when its
#: cache is cleared at this limit).
_KNOWN_CACHE_LIMIT = 100_000
#: Get-or-create retries when a concurrent transaction took our row first (PostgreSQL).
_CREATE_ATTEMPTS = 5


class _Contended(Exception):
    """A concurrent transaction inserted the row we meant to insert; try again."""


class Agents:
    """The agent domain. `create_default_card(conn, agent_id, now)` stores a new agent's
    first card inside the creating transaction (see `Cards.insert_default`)."""

    def __init__(self, db: Database, create_default_card: Callable[[Any, str, datetime], Any], *,
                 touch_interval: float = 0.5) -> None:
        self._db = db
        self._create_default_card = create_default_card
        self._known: set[str] = set()
        self._known_sessions: set[tuple[str, str]] = set()
        #: agent_id -> its credential hash, once proven: an agent's hash never changes (a deleted
        #: agent that comes back has the same one), so busy agents' touches and sessions prove
        #: ownership without a query.
        self._owners: dict[str, str] = {}
        self.touches = TouchBuffer(db, touch_interval)

    def remember(self, agent_id: str, session_id: str = "") -> None:
        if len(self._known) + len(self._known_sessions) >= _KNOWN_CACHE_LIMIT:
            self._known.clear()
            self._known_sessions.clear()
        self._known.add(agent_id)
        if session_id:
            self._known_sessions.add((agent_id, session_id))

    async def verify_owner(self, agent_id: str, agent_hash: str) -> None:
        """Proof that the caller holds `agent_id`'s credential: a missing hash is Unauthenticated,
        another agent's PermissionDenied, an unknown agent NotFound (see `store.verify_owner`)."""
        if not agent_hash:
            raise Unauthenticated("agent_hash is required to act for an agent", field="agent_hash")
        agent_hash = validate_agent_hash(agent_hash)
        known = self._owners.get(agent_id)
        if known is None:
            async with self._db.read() as conn:
                await store.verify_owner(conn, agent_id, agent_hash)
            self._remember_owner(agent_id, agent_hash)
        elif not hmac.compare_digest(known.encode(), agent_hash.encode()):
            raise PermissionDenied(f"agent_hash does not belong to agent {agent_id}", agent_id=agent_id)

    def _remember_owner(self, agent_id: str, agent_hash: str) -> None:
        if len(self._owners) >= _KNOWN_CACHE_LIMIT:
            self._owners.clear()
        self._owners[agent_id] = agent_hash

    async def touch(self, agent_id: str, agent_hash: str, seen_at: datetime | None,
                    session_id: str = "") -> None:
        """Records activity of the agent whose credential hash is `agent_hash`; written within
        `touch_interval` (coalesced), or at stop."""
        validate_agent_id(agent_id)
        validate_text(session_id, "session_id", max_length=MAX_SESSION_ID_LENGTH, required=False)
        await self.verify_owner(agent_id, agent_hash)
        known = agent_id in self._known and (not session_id or (agent_id, session_id) in self._known_sessions)
        if not known:
            async with self._db.read() as conn:
                await store.require_agent(conn, agent_id)
                if session_id and await store.get_session(conn, agent_id, session_id) is None:
                    raise NotFound(f"session {session_id} of agent {agent_id} not found",
                                   reason="SESSION_NOT_FOUND", agent_id=agent_id, session_id=session_id)
            self.remember(agent_id, session_id)
        self.touches.record(agent_id, clamp_to_now(seen_at), session_id)

    async def resolve(self, agent_hash: str, *, create: bool = True) -> tuple[Agent, bool]:
        """The agent for a credential hash, created (with its default card) on first sight, or
        NotFound when `create` is false and no agent has this credential yet.

        Race-free on both backends: the credential row is inserted with ON CONFLICT DO
        NOTHING, and whoever loses a race re-reads the winner's agent.
        """
        agent_hash = validate_agent_hash(agent_hash)
        async with self._db.read() as conn:
            agent = await store.get_agent_by_hash(conn, agent_hash)
        if agent is not None:
            self.remember(agent.agent_id)
            self._remember_owner(agent.agent_id, agent_hash)
            return agent, False
        if not create:
            raise NotFound("no agent has this credential yet", reason="AGENT_NOT_FOUND")
        for _attempt in range(_CREATE_ATTEMPTS):
            try:
                agent, created = await self._create(agent_hash)
            except _Contended:
                continue
            self.remember(agent.agent_id)
            self._remember_owner(agent.agent_id, agent_hash)
            if created:
                logger.info("new agent %s", agent.agent_id)
            return agent, created
        raise Unavailable("agent creation is contended; try again")

    async def _create(self, agent_hash: str) -> tuple[Agent, bool]:
        async with self._db.begin() as conn:
            agent = await store.get_agent_by_hash(conn, agent_hash)
            if agent is not None:
                return agent, False
            agent_id = await self._free_agent_id(conn, agent_hash)
            now = utcnow()
            inserted = await store.insert_ignoring(
                conn, self._db.dialect, store.agents, [store.agents.c.agent_id],
                {"agent_id": agent_id, "created_at": now, "last_seen_at": now},
            )
            if not inserted:
                raise _Contended
            inserted = await store.insert_ignoring(
                conn, self._db.dialect, store.agent_credentials, [],
                {"agent_id": agent_id, "agent_hash": agent_hash, "created_at": now},
            )
            if not inserted:  # rolls back our agents row too
                raise _Contended
            await self._create_default_card(conn, agent_id, now)
            return await store.require_agent(conn, agent_id), True

    async def _free_agent_id(self, conn: Any, agent_hash: str) -> str:
        for candidate in agent_id_candidates(agent_hash):
            owner = (await conn.execute(
                sa.select(store.agent_credentials.c.agent_hash)
                .where(store.agent_credentials.c.agent_id == candidate)
            )).scalar_one_or_none()
            if owner is None:
                if len(candidate) > len(AGENT_ID_PREFIX) + AGENT_ID_MIN_HEX:
                    logger.info("agent id %s taken by another credential; using %s",
                                AGENT_ID_PREFIX + agent_hash[:AGENT_ID_MIN_HEX], candidate)
                return candidate
        # Every prefix of our hash is some other, longer hash's id: cannot happen with
        # fixed-length hashes, and a contract violation otherwise.
        raise InvalidArgument("agent_hash", "every agent id derived from this hash is taken")

    async def get(self, agent_id: str) -> Agent:
        validate_agent_id(agent_id)
        async with self._db.read() as conn:
            agent = await store.require_agent(conn, agent_id)
        self.remember(agent_id)
        return agent

    async def list(self, size: int, token: str) -> tuple[list[Agent], str]:
        """Most recently seen first, then by id."""
        limit = page_size(size)
        after = decode_page_token(token, scope="agents", types=(datetime, str))
        query = store.agent_query().order_by(
            store.agents.c.last_seen_at.desc(), store.agents.c.agent_id.desc()
        )
        if after is not None:
            seen, agent_id = after
            query = query.where(sa.or_(
                store.agents.c.last_seen_at < seen,
                sa.and_(store.agents.c.last_seen_at == seen, store.agents.c.agent_id < agent_id),
            ))
        async with self._db.read() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).all()
        page, next_token = next_page([store.agent_from_row(row) for row in rows], limit, scope="agents",
                                     key=lambda agent: (agent.last_seen_at, agent.agent_id))
        return page, next_token

    async def claim(self, agent_id: str, agent_hash: str, email: str) -> Agent:
        """Ownership by possession of the credential; a second claim is AlreadyExists."""
        validate_agent_id(agent_id)
        if agent_hash:
            validate_agent_hash(agent_hash)
        email = validate_text(email, "email", max_length=MAX_EMAIL_LENGTH, required=False)
        if email and not _EMAIL_RE.fullmatch(email):
            raise InvalidArgument("email", "must be an email address")
        async with self._db.begin() as conn:
            await store.verify_owner(conn, agent_id, agent_hash)
            inserted = await store.insert_ignoring(
                conn, self._db.dialect, store.agent_claims, [store.agent_claims.c.agent_id],
                {"agent_id": agent_id, "claimed_at": utcnow(), "email": email or None},
            )
            if not inserted:
                raise AlreadyExists(f"agent {agent_id} is already claimed", reason="AGENT_ALREADY_CLAIMED",
                                    agent_id=agent_id)
            agent = await store.require_agent(conn, agent_id)
        logger.info("agent %s claimed", agent_id)
        return agent


    async def delete(self, agent_id: str, agent_hash: str) -> dict[str, int]:
        """The owner deletes the agent: every row of it, and what this process remembers of it
        (a later call with the same credential creates the agent afresh)."""
        validate_agent_id(agent_id)
        if agent_hash:
            validate_agent_hash(agent_hash)
        if not agent_hash:
            raise Unauthenticated("agent_hash is required to act for an agent", field="agent_hash")
        async with self._db.begin() as conn:
            try:
                await store.verify_owner(conn, agent_id, agent_hash)
            except NotFound:
                # Deleted already (or never created): nothing of it is left to delete. Saying so
                # reveals nothing, and a repeated deletion succeeds.
                return {}
            await store.lock_agent(conn, agent_id)
            counts = await store.delete_agent_rows(conn, self._db.dialect, agent_id)
        self._owners.pop(agent_id, None)
        self._known.discard(agent_id)
        self._known_sessions = {key for key in self._known_sessions if key[0] != agent_id}
        self.touches.forget(agent_id)
        logger.info("agent %s deleted by its owner", agent_id)
        return counts


class TouchBuffer:
    """Coalesces "agent/session was active at T" in memory and writes it periodically: one
    UPDATE per agent and per session per interval, with the latest time, whatever the
    request rate. `stop()` writes what is pending."""

    def __init__(self, db: Database, interval: float = 0.5) -> None:
        self._db = db
        self._interval = interval
        self._agents: dict[str, datetime] = {}
        self._sessions: dict[tuple[str, str], datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def record(self, agent_id: str, at: datetime, session_id: str = "") -> None:
        _keep_latest(self._agents, agent_id, at)
        if session_id:
            _keep_latest(self._sessions, (agent_id, session_id), at)

    def forget(self, agent_id: str) -> None:
        """Drops the pending activity of a deleted agent."""
        self._agents.pop(agent_id, None)
        self._sessions = {key: at for key, at in self._sessions.items() if key[0] != agent_id}

    def pending_activity(self, agent_id: str, session_id: str) -> datetime | None:
        """Activity of a session recorded but not written yet."""
        return self._sessions.get((agent_id, session_id))

    @property
    def pending(self) -> int:
        return len(self._agents) + len(self._sessions)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="registry-touch-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # the next round retries; never let the loop die
                logger.warning("could not write agent activity; retrying", exc_info=True)

    async def flush(self) -> None:
        async with self._flush_lock:
            agents_due, self._agents = self._agents, {}
            sessions_due, self._sessions = self._sessions, {}
            if not agents_due and not sessions_due:
                return
            try:
                async with self._db.begin() as conn:
                    if agents_due:
                        await conn.execute(
                            _TOUCH_AGENT,
                            [
                                {"b_agent_id": agent_id, "b_at": at}
                                for agent_id, at in sorted(agents_due.items())
                            ],
                        )
                    if sessions_due:
                        await conn.execute(_TOUCH_SESSION, [
                            {"b_agent_id": agent_id, "b_session_id": session_id, "b_at": at}
                            for (agent_id, session_id), at in sorted(sessions_due.items())
                        ])
            except BaseException:
                # Put them back (keeping anything newer recorded meanwhile) for the next try.
                for agent_id, at in agents_due.items():
                    _keep_latest(self._agents, agent_id, at)
                for key, at in sessions_due.items():
                    _keep_latest(self._sessions, key, at)
                raise


def _keep_latest(pending: dict[Any, datetime], key: Any, at: datetime) -> None:
    current = pending.get(key)
    if current is None or at > current:
        pending[key] = at


# Sorted keys (above) make concurrent flushers lock rows in one order: no deadlocks.
_TOUCH_AGENT = (
    sa.update(store.agents)
    .where(store.agents.c.agent_id == sa.bindparam("b_agent_id"),
           store.agents.c.last_seen_at < sa.bindparam("b_at", type_=store.agents.c.last_seen_at.type))
    .values(last_seen_at=sa.bindparam("b_at", type_=store.agents.c.last_seen_at.type))
)
_TOUCH_SESSION = (
    sa.update(store.sessions)
    .where(
        store.sessions.c.agent_id == sa.bindparam("b_agent_id"),
        store.sessions.c.session_id == sa.bindparam("b_session_id"),
        store.sessions.c.last_activity_at
        < sa.bindparam("b_at", type_=store.sessions.c.last_activity_at.type),
    )
    .values(last_activity_at=sa.bindparam("b_at", type_=store.sessions.c.last_activity_at.type))
)
