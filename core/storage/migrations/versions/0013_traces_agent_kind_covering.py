"""An agent's recent decisions read from one index: `ix_traces_agent_kind_covering` replaces
`ix_traces_agent_kind_timestamp` (0003).

The integrity's recent window (the agent's last `window` decisions, newest first by
`timestamp, trace_id`, with the flags it sums) could not be served in order by
`(agent_id, record_kind, timestamp)`: without `trace_id` the order needs a sort, so SQLite's
planner took `ix_traces_kind_timestamp` instead, which has the whole order, and walked every
agent's decisions newest first until it had found `window` of this agent's (with 200 agents,
about 200 times as many rows, each a table lookup for its agent: 6.6 ms at 2 million traces
against 0.04 ms). The new index has the whole order after the agent and kind, and the columns the
window sums, so the window is one short range of one index and no table read. On PostgreSQL the
summed columns are INCLUDEd (not part of the key); on SQLite they end the key. The old index is a
prefix of the new one, so every other read it served (the traces list by agent and kind, the
timeline's first decision) keeps an index range.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_KEY = ["agent_id", "record_kind", "timestamp", "trace_id"]
_SUMMED = ["verified", "violation_count", "has_reasoning", "model_analysis", "failed"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_traces_agent_kind_covering", "traces", _KEY, postgresql_include=_SUMMED)
    else:
        op.create_index("ix_traces_agent_kind_covering", "traces", _KEY + _SUMMED)
    op.drop_index("ix_traces_agent_kind_timestamp", "traces")


def downgrade() -> None:
    op.create_index("ix_traces_agent_kind_timestamp", "traces", ["agent_id", "record_kind", "timestamp"])
    op.drop_index("ix_traces_agent_kind_covering", "traces")
