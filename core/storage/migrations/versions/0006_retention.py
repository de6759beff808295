"""Retention: table `retention_state`, and the indexes retention and the list reads need.

`retention_state` has one row per agent whose old data retention deleted: since when the
agent's record is complete (`since`: older traces, violations, usage rows, tool executions and
exchange records are gone) and how many rows were deleted. Integrity says over which period it
holds from it. On PostgreSQL it gets row-level security and no public policy.

Indexes, each for a query that would otherwise scan a table that only grows:
* `ix_exchanges_agent_occurred`: an agent's exchange records past their time (retention) and
  all of them (owner deletion); records with no agent (the upstream refused the credential) are
  the `agent_id IS NULL` range of the same index.
* `ix_traces_kind_timestamp`: `GET /v1/traces?record_kind=...` without an agent, newest first.
* `ix_tool_executions_agent_reported`: an agent's tool-execution reports past their time.
* `ix_drift_alerts_agent_updated`: an agent's resolved alerts past their time.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_state",
        sa.Column("agent_id", sa.String(144), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_traces", sa.BigInteger(), nullable=False),
        sa.Column("deleted_rows", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_exchanges_agent_occurred", "exchanges", ["agent_id", "occurred_at"])
    op.create_index("ix_traces_kind_timestamp", "traces", ["record_kind", "timestamp", "trace_id"])
    op.create_index("ix_tool_executions_agent_reported", "tool_executions", ["agent_id", "reported_at"])
    op.create_index("ix_drift_alerts_agent_updated", "drift_alerts", ["agent_id", "updated_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE retention_state ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.drop_index("ix_drift_alerts_agent_updated", "drift_alerts")
    op.drop_index("ix_tool_executions_agent_reported", "tool_executions")
    op.drop_index("ix_traces_kind_timestamp", "traces")
    op.drop_index("ix_exchanges_agent_occurred", "exchanges")
    op.drop_table("retention_state")
