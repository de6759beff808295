"""Sessions: which conversation a call belongs to.

A client that names its session (x-smoltbot-session, x-claude-code-session-id, a plugin)
gets exactly that session, created on first sight. Otherwise the agent's latest inferred
session goes on until it has been idle for `session_idle_minutes`; the next call then starts
a new one. Both paths are race-free: named sessions through a unique (agent_id, session_id)
and ON CONFLICT DO NOTHING, inferred ones by locking the agent's row while deciding.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from smoltbot.core.errors import InvalidArgument
from smoltbot.core.ids import MAX_SESSION_ID_LENGTH, new_session_id, validate_agent_hash, validate_agent_id
from smoltbot.core.pagination import decode_page_token, next_page, page_size
from smoltbot.core.storage import Database, UTCDateTime
from smoltbot.registry import store
from smoltbot.registry.agents import Agents
from smoltbot.registry.store import Session, SessionSource, SessionStatus
from smoltbot.registry.validation import clamp_to_now, validate_text

__all__ = ["SessionEvent", "Sessions"]

logger = logging.getLogger(__name__)

_sessions = store.sessions


class SessionEvent(enum.StrEnum):
    STARTED = "started"
    TURN = "turn"
    ENDED = "ended"


class Sessions:
    def __init__(self, db: Database, agents: Agents, *, idle: timedelta) -> None:
        self._db = db
        self._agents = agents
        self._idle = idle

    async def resolve(
        self,
        agent_id: str,
        agent_hash: str,
        hint: str = "",
        source: SessionSource | None = None,
        at: datetime | None = None,
    ) -> tuple[Session, bool]:
        """The session of a call at `at` (default now); True when it was created. It creates
        sessions and moves their activity, so it needs the agent's credential hash."""
        validate_agent_id(agent_id)
        hint = validate_text(hint, "session_hint", max_length=MAX_SESSION_ID_LENGTH, required=False)
        if hint and source is SessionSource.INFERRED:
            raise InvalidArgument("hint_source", "a session the client names cannot be INFERRED")
        at = clamp_to_now(at)
        await self._agents.verify_owner(agent_id, agent_hash)
        if hint:
            return await self._named(agent_id, hint, source or SessionSource.CLIENT, at)
        return await self._inferred(agent_id, at)

    async def _named(self, agent_id: str, session_id: str, source: SessionSource,
                     at: datetime) -> tuple[Session, bool]:
        # Busy named sessions are found without taking the write lock; their activity goes
        # through the coalescing touch buffer like TouchAgent's.
        async with self._db.read() as conn:
            session = await store.get_session(conn, agent_id, session_id)
        if session is None:
            async with self._db.begin() as conn:
                await store.require_agent(conn, agent_id)
                created = await store.insert_ignoring(
                    conn, self._db.dialect, _sessions, [_sessions.c.agent_id, _sessions.c.session_id],
                    _new_row(agent_id, session_id, source, at),
                )
                session = await store.written_session(conn, agent_id, session_id)
            if created:
                self._agents.remember(agent_id, session_id)
                logger.info("agent %s: new %s session %s", agent_id, source.value, session_id)
                return session, True
        self._agents.remember(agent_id, session_id)
        if at > session.last_activity_at:
            self._agents.touches.record(agent_id, at, session_id)
            session = _with_activity(session, at)
        return session, False

    async def _inferred(self, agent_id: str, at: datetime) -> tuple[Session, bool]:
        async with self._db.begin() as conn:
            # Serialises concurrent inference for this agent (PostgreSQL; SQLite writes are
            # serial already), so two calls cannot both start a "new" session.
            await store.lock_agent(conn, agent_id)
            row = (await conn.execute(
                sa.select(_sessions)
                .where(_sessions.c.agent_id == agent_id,
                       _sessions.c.source == SessionSource.INFERRED.value,
                       _sessions.c.status == SessionStatus.ACTIVE.value)
                .order_by(_sessions.c.last_activity_at.desc(), _sessions.c.id.desc())
                .limit(1)
            )).first()
            last_activity = None
            if row is not None:
                # A touch may not have been written yet; it counts as activity all the same.
                pending = self._agents.touches.pending_activity(agent_id, row.session_id)
                last_activity = max(row.last_activity_at, pending) if pending else row.last_activity_at
            if row is not None and last_activity is not None and at - last_activity <= self._idle:
                session = store.session_from_row(row)
                if at > session.last_activity_at:
                    await conn.execute(
                        sa.update(_sessions).where(_sessions.c.id == row.id).values(last_activity_at=at))
                    session = _with_activity(session, at)
                self._agents.remember(agent_id, session.session_id)
                return session, False
            session_id = new_session_id()
            await conn.execute(sa.insert(_sessions).values(
                **_new_row(agent_id, session_id, SessionSource.INFERRED, at)))
            session = await store.written_session(conn, agent_id, session_id)
        self._agents.remember(agent_id, session_id)
        logger.info("agent %s: new inferred session %s", agent_id, session_id)
        return session, True

    async def report(self, agent_id: str, agent_hash: str, session_id: str, event: SessionEvent | None,
                     turn_count: int | None = None, occurred_at: datetime | None = None) -> Session:
        """A plugin's session event. STARTED get-or-creates the session (source PLUGIN) and
        reopens an ended one; TURN adds one turn or sets `turn_count`; ENDED ends it. TURN
        and ENDED also create a session the registry has not seen, so no event is lost."""
        validate_agent_id(agent_id)
        if agent_hash:
            validate_agent_hash(agent_hash)
        validate_text(session_id, "session_id", max_length=MAX_SESSION_ID_LENGTH)
        if event is None:
            raise InvalidArgument("event", "must be STARTED, TURN or ENDED")
        if turn_count is not None and turn_count < 0:
            raise InvalidArgument("turn_count", f"must not be negative, got {turn_count}")
        at = clamp_to_now(occurred_at)
        changes: dict[str, Any] = {
            "last_activity_at": sa.case((_sessions.c.last_activity_at < at, at),
                                        else_=_sessions.c.last_activity_at),
        }
        if turn_count is not None:
            changes["turn_count"] = turn_count
        elif event is SessionEvent.TURN:
            changes["turn_count"] = _sessions.c.turn_count + 1
        if event is SessionEvent.STARTED:
            changes.update(status=SessionStatus.ACTIVE.value, ended_at=None)
        elif event is SessionEvent.ENDED:
            changes.update(status=SessionStatus.ENDED.value, ended_at=at)
        async with self._db.begin() as conn:
            await store.verify_owner(conn, agent_id, agent_hash)
            await store.insert_ignoring(
                conn, self._db.dialect, _sessions, [_sessions.c.agent_id, _sessions.c.session_id],
                _new_row(agent_id, session_id, SessionSource.PLUGIN, at),
            )
            await conn.execute(
                sa.update(_sessions)
                .where(_sessions.c.agent_id == agent_id, _sessions.c.session_id == session_id)
                .values(**changes)
            )
            session = await store.written_session(conn, agent_id, session_id)
        self._agents.remember(agent_id, session_id)
        return session

    async def list(self, agent_id: str, size: int, token: str) -> tuple[list[Session], str]:
        """Most recently active first."""
        validate_agent_id(agent_id)
        limit = page_size(size)
        scope = f"sessions:{agent_id}"
        after = decode_page_token(token, scope=scope, types=(datetime, str))
        query = (sa.select(_sessions).where(_sessions.c.agent_id == agent_id)
                 .order_by(_sessions.c.last_activity_at.desc(), _sessions.c.session_id.desc()))
        if after is not None:
            # One row-value comparison: a range of ix_sessions_agent_activity from the cursor on
            # (spelt as an OR, both databases read the agent's sessions from the start to find it).
            active, session_id = after
            key = sa.tuple_(_sessions.c.last_activity_at, _sessions.c.session_id)
            query = query.where(key < sa.tuple_(sa.literal(active, UTCDateTime()), sa.literal(session_id)))
        async with self._db.read() as conn:
            await store.require_agent(conn, agent_id)
            rows = (await conn.execute(query.limit(limit + 1))).all()
        return next_page([store.session_from_row(row) for row in rows], limit, scope=scope,
                         key=lambda session: (session.last_activity_at, session.session_id))


def _new_row(agent_id: str, session_id: str, source: SessionSource, at: datetime) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "session_id": session_id,
        "source": source.value,
        "status": SessionStatus.ACTIVE.value,
        "started_at": at,
        "last_activity_at": at,
        "ended_at": None,
        "turn_count": 0,
    }


def _with_activity(session: Session, at: datetime) -> Session:
    return replace(session, last_activity_at=at)
