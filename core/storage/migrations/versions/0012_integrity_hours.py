"""Integrity roll-ups per hour: the integrity timeline without reading the agent's week of traces.

`integrity_hours` (per agent and hour of trace time, in whole hours since the Unix epoch: the
agent's decisions and how many were verified) counts the same traces as the counters of 0007,
those created before the agent's `integrity_marks.rolled_to`; the timeline adds the traces created
since (`observer/integrity_counters.py`), and the retention pass keeps both exact in the same
transactions. Filled here for the agents that have a mark, in one set-based statement (one pass
over the traces the marks cover, grouped in the database).

On PostgreSQL the table gets row-level security and no public policy, as the counters.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integrity_hours",
        sa.Column("agent_id", sa.String(144), primary_key=True),
        sa.Column("hour", sa.BigInteger(), primary_key=True),
        sa.Column("traces", sa.BigInteger(), nullable=False),
        sa.Column("verified", sa.BigInteger(), nullable=False),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    # The same hour as `integrity_counters.hour_of` (floor of the epoch seconds / 3600).
    if postgresql:
        hour = 'CAST(floor(extract(epoch FROM t."timestamp") / 3600) AS BIGINT)'
    else:
        hour = "CAST(strftime('%s', t.\"timestamp\") AS BIGINT) / 3600"
    verified = "CASE WHEN t.verified THEN 1 ELSE 0 END"
    op.execute(
        f"INSERT INTO integrity_hours (agent_id, hour, traces, verified) "
        f"SELECT t.agent_id, {hour}, count(*), sum({verified}) "
        f"FROM traces t JOIN integrity_marks m ON m.agent_id = t.agent_id "
        f"WHERE t.record_kind = 'decision' AND t.created_at < m.rolled_to "
        f"GROUP BY t.agent_id, {hour}")
    if postgresql:
        op.execute("ALTER TABLE integrity_hours ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.drop_table("integrity_hours")
