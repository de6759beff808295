"""Retention of the history ledger: the index its batches read, and where the ledger was cut.

* `ix_evidence_history_agent_started`: an agent's ledger rows past their time, oldest first (the
  retention batch's query; the session index has the session between the agent and the time).
* `evidence_cuts`: per session whose oldest ledger rows retention deleted, the cut-off it deleted
  them by (`cut_before`: the rows of the session's calls started before it are gone). A later
  call of that session carries turns the ledger can no longer vouch for; the check says they are
  unknown instead of calling them unrelayed. A session retention never cut has no row, so a forged
  history in it is still found. No digests, no content. A row goes one retention period after its
  cut-off (`observer/retention_store.py`).

On PostgreSQL both ledger tables get row-level security and no public policy, like the others
(0009 left `evidence_history` without it).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_evidence_history_agent_started", "evidence_history", ["agent_id", "started_at"])
    op.create_table(
        "evidence_cuts",
        sa.Column("agent_id", sa.String(144), primary_key=True),
        sa.Column("session_id", sa.String(256), primary_key=True),
        sa.Column("cut_before", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_evidence_cuts_agent_cut", "evidence_cuts", ["agent_id", "cut_before"])
    if op.get_bind().dialect.name == "postgresql":
        for table in ("evidence_history", "evidence_cuts"):
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE evidence_history DISABLE ROW LEVEL SECURITY")
    op.drop_index("ix_evidence_cuts_agent_cut", table_name="evidence_cuts")
    op.drop_table("evidence_cuts")
    op.drop_index("ix_evidence_history_agent_started", table_name="evidence_history")
