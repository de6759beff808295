"""Integrity counters: an agent's all-time integrity without rescanning its traces.

`integrity_totals` (per agent and record kind: traces, verified, violations, with reasoning,
with model analysis, failed) and `integrity_violation_totals` (per agent and violation type)
count the agent's traces created before `integrity_marks.rolled_to`; integrity adds the traces
created since, found by `ix_traces_agent_created`. The observer's retention pass moves the mark
forward (to a few minutes ago, so no transaction still writing traces can be behind it) and
takes deleted traces out of the counters in the transaction that deletes them
(`observer/retention_store.py`). Nothing is backfilled here: an agent without a mark is counted
from its traces, as before, until the first pass.

On PostgreSQL the tables get row-level security and no public policy (integrity is served by
the API).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TABLES = ("integrity_totals", "integrity_violation_totals", "integrity_marks")


def upgrade() -> None:
    counts = ("traces", "verified", "violations", "with_reasoning", "with_model_analysis", "failed")
    op.create_table(
        "integrity_totals",
        sa.Column("agent_id", sa.String(144), primary_key=True),
        sa.Column("record_kind", sa.String(16), primary_key=True),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in counts),
    )
    op.create_table(
        "integrity_violation_totals",
        sa.Column("agent_id", sa.String(144), primary_key=True),
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "integrity_marks",
        sa.Column("agent_id", sa.String(144), primary_key=True),
        sa.Column("rolled_to", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_traces_agent_created", "traces", ["agent_id", "created_at"])
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.drop_index("ix_traces_agent_created", "traces")
    for table in reversed(_TABLES):
        op.drop_table(table)
