"""Record kinds: which exchanges are model decisions, which are other API activity, and which
the upstream refused.

`traces.record_kind`: "decision" (a model call, POST /v1/messages) or "activity" (any other
endpoint: count_tokens, models, batches, files, ...). Integrity and drift count decisions only;
activity is listed beside them. Existing traces are decisions unless they recorded another
request path (context.environment.request_path), which this migration reads back.

`exchanges.record_kind`, set by intake: "decision", "activity", "auth_rejected" (the upstream
answered 401/403: no agent, no trace, only this counted row) or "minimal" (the gateway could
not capture the full exchange: a failure trace says what failed). Null for rows stored before
this revision; the processor classifies those from their payload.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both backends (SQLite allows it with a constant default): no table
    # rebuild, and PostgreSQL's row-level security policies stay as they are.
    op.add_column("traces",
                  sa.Column("record_kind", sa.String(16), nullable=False, server_default="decision"))
    op.add_column("exchanges", sa.Column("record_kind", sa.String(16), nullable=True))
    # Traces written before record kinds: anything but a model call was counted as a decision.
    op.execute(
        "UPDATE traces SET record_kind = 'activity' "
        "WHERE trace_json NOT LIKE '%\"request_path\":\"/v1/messages\"%' "
        "AND trace_json LIKE '%\"request_path\":%'"
    )
    # ...and was fed to the drift detector: what it has not seen yet it never will.
    op.execute("DELETE FROM drift_pending WHERE trace_id IN "
               "(SELECT trace_id FROM traces WHERE record_kind = 'activity')")
    op.create_index("ix_traces_agent_kind_timestamp", "traces", ["agent_id", "record_kind", "timestamp"])


def downgrade() -> None:
    op.drop_index("ix_traces_agent_kind_timestamp", "traces")
    op.drop_column("exchanges", "record_kind")
    op.drop_column("traces", "record_kind")
