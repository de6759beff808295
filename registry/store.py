"""The Registry's tables (as created by migration 0001) and the queries its domain modules
share. Records here are plain dataclasses: nothing above this module sees a Row or a proto.
"""

from __future__ import annotations

import enum
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from smoltbot.core.errors import NotFound, PermissionDenied, Unauthenticated
from smoltbot.core.storage import Dialect, UTCDateTime, insert_ignoring_conflicts

__all__ = [
    "Agent",
    "Card",
    "Session",
    "SessionSource",
    "SessionStatus",
    "agent_claims",
    "agent_credentials",
    "agents",
    "alignment_cards",
    "delete_agent_rows",
    "get_agent",
    "get_agent_by_hash",
    "lock_agent",
    "metadata",
    "sessions",
    "verify_owner",
]

_ID = 144

metadata = sa.MetaData()

agents = sa.Table(
    "agents", metadata,
    sa.Column("agent_id", sa.String(_ID), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("active_card_id", sa.String(_ID), nullable=True),
)

agent_credentials = sa.Table(
    "agent_credentials", metadata,
    sa.Column("agent_id", sa.String(_ID), sa.ForeignKey("agents.agent_id"), primary_key=True),
    sa.Column("agent_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

agent_claims = sa.Table(
    "agent_claims", metadata,
    sa.Column("agent_id", sa.String(_ID), sa.ForeignKey("agents.agent_id"), primary_key=True),
    sa.Column("claimed_at", UTCDateTime(), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("agent_id", sa.String(_ID), sa.ForeignKey("agents.agent_id"), nullable=False),
    sa.Column("session_id", sa.String(256), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("last_activity_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("turn_count", sa.Integer(), nullable=False),
    sa.UniqueConstraint("agent_id", "session_id"),
)

alignment_cards = sa.Table(
    "alignment_cards", metadata,
    sa.Column("card_id", sa.String(_ID), primary_key=True),
    sa.Column("agent_id", sa.String(_ID), sa.ForeignKey("agents.agent_id"), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("card_json", sa.Text(), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)


class SessionSource(enum.StrEnum):
    CLIENT = "client"
    INFERRED = "inferred"
    PLUGIN = "plugin"


class SessionStatus(enum.StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Agent:
    agent_id: str
    created_at: datetime
    last_seen_at: datetime
    active_card_id: str | None
    claimed_at: datetime | None

    @property
    def claimed(self) -> bool:
        return self.claimed_at is not None


@dataclass(frozen=True, slots=True)
class Session:
    agent_id: str
    session_id: str
    source: SessionSource
    status: SessionStatus
    started_at: datetime
    last_activity_at: datetime
    ended_at: datetime | None
    turn_count: int


@dataclass(frozen=True, slots=True)
class Card:
    card_id: str
    agent_id: str
    version: int
    active: bool
    created_at: datetime
    #: The card in AAP's unified JSON shape, as normalised when it was stored.
    data: dict[str, Any]


# --- agents -----------------------------------------------------------------------------

_AGENT_COLUMNS = (agents.c.agent_id, agents.c.created_at, agents.c.last_seen_at, agents.c.active_card_id,
                  agent_claims.c.claimed_at)
_AGENTS_WITH_CLAIMS = agents.outerjoin(agent_claims, agent_claims.c.agent_id == agents.c.agent_id)


def agent_query() -> sa.Select[Any]:
    return sa.select(*_AGENT_COLUMNS).select_from(_AGENTS_WITH_CLAIMS)


def agent_from_row(row: sa.Row[Any]) -> Agent:
    return Agent(row.agent_id, row.created_at, row.last_seen_at, row.active_card_id, row.claimed_at)


async def get_agent(conn: AsyncConnection, agent_id: str) -> Agent | None:
    row = (await conn.execute(agent_query().where(agents.c.agent_id == agent_id))).first()
    return agent_from_row(row) if row is not None else None


async def require_agent(conn: AsyncConnection, agent_id: str) -> Agent:
    agent = await get_agent(conn, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id} not found", reason="AGENT_NOT_FOUND", agent_id=agent_id)
    return agent


async def get_agent_by_hash(conn: AsyncConnection, agent_hash: str) -> Agent | None:
    query = (agent_query()
             .join(agent_credentials, agent_credentials.c.agent_id == agents.c.agent_id)
             .where(agent_credentials.c.agent_hash == agent_hash))
    row = (await conn.execute(query)).first()
    return agent_from_row(row) if row is not None else None


async def lock_agent(conn: AsyncConnection, agent_id: str) -> None:
    """Locks the agent's row for this transaction (PostgreSQL; SQLite's writes are serial
    anyway), so that read-then-write sequences per agent cannot interleave. NotFound when
    the agent does not exist."""
    query = sa.select(agents.c.agent_id).where(agents.c.agent_id == agent_id).with_for_update()
    if (await conn.execute(query)).first() is None:
        raise NotFound(f"agent {agent_id} not found", reason="AGENT_NOT_FOUND", agent_id=agent_id)


async def verify_owner(conn: AsyncConnection, agent_id: str, agent_hash: str) -> None:
    """Proof of ownership: the caller's credential hash must be the agent's.

    Missing hash -> Unauthenticated; unknown agent -> NotFound; another hash ->
    PermissionDenied. The comparison is constant-time.
    """
    if not agent_hash:
        raise Unauthenticated("agent_hash is required to act for an agent", field="agent_hash")
    query = sa.select(agent_credentials.c.agent_hash).where(agent_credentials.c.agent_id == agent_id)
    stored = (await conn.execute(query)).scalar_one_or_none()
    if stored is None:
        raise NotFound(f"agent {agent_id} not found", reason="AGENT_NOT_FOUND", agent_id=agent_id)
    if not hmac.compare_digest(stored.encode(), agent_hash.lower().encode()):
        raise PermissionDenied(f"agent_hash does not belong to agent {agent_id}", agent_id=agent_id)


async def delete_agent_rows(conn: AsyncConnection, dialect: Dialect, agent_id: str) -> dict[str, int]:
    """Deletes the agent and every row of it, children first (sessions, cards, claim,
    credential, then the agent); on SQLite with secure_delete, so the bytes are zeroed in the
    file. Returns rows deleted per table."""
    if dialect == "sqlite":
        await conn.exec_driver_sql("PRAGMA secure_delete = ON")
    try:
        counts = {}
        for table in (sessions, alignment_cards, agent_claims, agent_credentials, agents):
            result = await conn.execute(table.delete().where(table.c.agent_id == agent_id))
            counts[table.name] = int(result.rowcount or 0)
        return counts
    finally:
        if dialect == "sqlite":
            await conn.exec_driver_sql("PRAGMA secure_delete = OFF")


async def insert_ignoring(conn: AsyncConnection, dialect: Dialect, table: sa.Table,
                          conflict: Sequence[sa.Column[Any]], values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when the row was inserted."""
    statement = insert_ignoring_conflicts(dialect, table, *conflict).values(**values)
    returned = table.primary_key.columns.values()[0]
    return (await conn.execute(statement.returning(returned))).first() is not None


# --- sessions ---------------------------------------------------------------------------

def session_from_row(row: sa.Row[Any]) -> Session:
    return Session(
        agent_id=row.agent_id,
        session_id=row.session_id,
        source=SessionSource(row.source),
        status=SessionStatus(row.status),
        started_at=row.started_at,
        last_activity_at=row.last_activity_at,
        ended_at=row.ended_at,
        turn_count=row.turn_count,
    )


async def get_session(conn: AsyncConnection, agent_id: str, session_id: str) -> Session | None:
    query = sa.select(sessions).where(sessions.c.agent_id == agent_id, sessions.c.session_id == session_id)
    row = (await conn.execute(query)).first()
    return session_from_row(row) if row is not None else None


async def written_session(conn: AsyncConnection, agent_id: str, session_id: str) -> Session:
    """The session this transaction has just inserted or updated. Its absence is a bug, not a
    client's mistake: an explicit error (an `assert` would vanish under ``python -O``)."""
    session = await get_session(conn, agent_id, session_id)
    if session is None:
        raise RuntimeError(f"session {session_id!r} of {agent_id} is missing right after it was written")
    return session


# --- cards ------------------------------------------------------------------------------

def card_from_row(row: sa.Row[Any]) -> Card:
    return Card(
        card_id=row.card_id,
        agent_id=row.agent_id,
        version=row.version,
        active=bool(row.active),
        created_at=row.created_at,
        data=json.loads(row.card_json),
    )
