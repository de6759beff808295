"""Registry tables: agents, their credentials and claims, sessions, alignment cards.

The credential hash lives in `agent_credentials`, apart from `agents`, so that a public-read
policy on `agents` (Supabase's anon role) can never expose it. On PostgreSQL every table gets
row-level security; only `agents` and `alignment_cards` get a public SELECT policy. The
services connect as the tables' owner, which RLS does not restrict.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: Agent and card ids: "smolt-" + up to 128 hex digits when an id had to be extended.
_ID = 144
_TABLES = ("agents", "agent_credentials", "agent_claims", "sessions", "alignment_cards")
_PUBLIC_READ = ("agents", "alignment_cards")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(_ID), primary_key=True),
        _timestamp("created_at"),
        _timestamp("last_seen_at"),
        # No foreign key: cards reference agents, and a cycle would complicate every insert.
        # The registry sets it in the same transaction as the card it names.
        sa.Column("active_card_id", sa.String(_ID), nullable=True),
    )
    op.create_index("ix_agents_last_seen", "agents", ["last_seen_at", "agent_id"])

    op.create_table(
        "agent_credentials",
        sa.Column("agent_id", sa.String(_ID), sa.ForeignKey("agents.agent_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("agent_hash", sa.String(128), nullable=False),
        _timestamp("created_at"),
        sa.UniqueConstraint("agent_hash", name="uq_agent_credentials_agent_hash"),
    )

    op.create_table(
        "agent_claims",
        sa.Column("agent_id", sa.String(_ID), sa.ForeignKey("agents.agent_id", ondelete="CASCADE"),
                  primary_key=True),
        _timestamp("claimed_at"),
        sa.Column("email", sa.String(320), nullable=True),
    )

    op.create_table(
        "sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("agent_id", sa.String(_ID), sa.ForeignKey("agents.agent_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("session_id", sa.String(256), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _timestamp("started_at"),
        _timestamp("last_activity_at"),
        _timestamp("ended_at", nullable=True),
        sa.Column("turn_count", sa.Integer(), nullable=False, server_default="0"),
        sa.UniqueConstraint("agent_id", "session_id", name="uq_sessions_agent_session"),
        sa.CheckConstraint("source IN ('client', 'inferred', 'plugin')", name="ck_sessions_source"),
        sa.CheckConstraint("status IN ('active', 'ended')", name="ck_sessions_status"),
        sa.CheckConstraint("turn_count >= 0", name="ck_sessions_turn_count"),
    )
    # ListSessions (most recently active first) and the idle rule (latest inferred session).
    op.create_index("ix_sessions_agent_activity", "sessions", ["agent_id", "last_activity_at", "session_id"])
    op.create_index("ix_sessions_agent_source_activity", "sessions",
                    ["agent_id", "source", "last_activity_at"])

    op.create_table(
        "alignment_cards",
        sa.Column("card_id", sa.String(_ID), primary_key=True),
        sa.Column("agent_id", sa.String(_ID), sa.ForeignKey("agents.agent_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("card_json", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _timestamp("created_at"),
        sa.UniqueConstraint("agent_id", "version", name="uq_alignment_cards_agent_version"),
        sa.CheckConstraint("version >= 1", name="ck_alignment_cards_version"),
    )
    # Exactly one active card per agent, enforced by the database itself.
    op.create_index(
        "ux_alignment_cards_one_active", "alignment_cards", ["agent_id"], unique=True,
        sqlite_where=sa.text("active"), postgresql_where=sa.text("active"),
    )

    if op.get_bind().dialect.name == "postgresql":
        for table in (*_TABLES, "alembic_version"):
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        for table in _PUBLIC_READ:
            op.execute(f"CREATE POLICY {table}_public_read ON {table} FOR SELECT USING (true)")


def downgrade() -> None:
    op.drop_table("alignment_cards")
    op.drop_table("sessions")
    op.drop_table("agent_claims")
    op.drop_table("agent_credentials")
    op.drop_table("agents")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE alembic_version DISABLE ROW LEVEL SECURITY")
