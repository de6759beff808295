"""Usage, cost and session position per model call: table `exchange_usage`.

One row per exchange (not per trace, so an exchange with several tool calls counts its tokens
once): the provider's token parts kept apart (null = not reported, which is not 0), the exact
cost (decimal text, and integer pico-dollars for sums; null = unknown, with the reason), the rung
of the session ladder that named the session, the sub-agent that made the call and its parent,
and the conversation turn. Rows are written with the exchange's traces; exchanges processed
before this revision have none (their tokens were never read).

On PostgreSQL the table gets row-level security and a public SELECT policy, as `traces` has.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchange_usage",
        sa.Column("exchange_id", sa.String(32), primary_key=True),
        sa.Column("agent_id", sa.String(144), nullable=False),
        sa.Column("session_id", sa.String(256), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("api", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_write_5m_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_write_1h_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_write_unknown_ttl_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=True),
        sa.Column("price_conditions", sa.String(1024), nullable=False),
        sa.Column("cost_usd", sa.String(48), nullable=True),
        sa.Column("cost_picousd", sa.BigInteger(), nullable=True),
        sa.Column("cost_reason", sa.String(256), nullable=False),
        sa.Column("price_checked", sa.String(10), nullable=False),
        sa.Column("session_rung", sa.String(48), nullable=False),
        sa.Column("sub_agent_source", sa.String(16), nullable=False),
        sa.Column("sub_agent_id", sa.String(256), nullable=True),
        sa.Column("parent_agent_id", sa.String(256), nullable=True),
        sa.Column("agent_type", sa.String(256), nullable=False),
        sa.Column("request_kind", sa.String(256), nullable=False),
        sa.Column("is_sub_agent", sa.Boolean(), nullable=False),
        sa.Column("starts_turn", sa.Boolean(), nullable=True),
        sa.Column("turn_position", sa.Integer(), nullable=True),
        sa.Column("conversation_turn", sa.Integer(), nullable=True),
    )
    op.create_index("ix_exchange_usage_session", "exchange_usage", ["agent_id", "session_id", "occurred_at"])
    op.create_index("ix_exchange_usage_agent_time", "exchange_usage", ["agent_id", "occurred_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE exchange_usage ENABLE ROW LEVEL SECURITY")
        op.execute("CREATE POLICY exchange_usage_public_read ON exchange_usage FOR SELECT USING (true)")


def downgrade() -> None:
    op.drop_table("exchange_usage")
