"""The history ledger: per model call, the keyed digests of the turn the gateway relayed and the
result of checking the history the call resent (core/evidence, observer/evidence_store.py).

One row per exchange, written with its traces and never updated: exchanges of one session may be
processed out of order, by several workers or observers, and a check reads the rows of the calls
that started before its own (`started_at`, indexed per session), so it needs no lock and gives the
same answer whatever the processing order. Digests only: never content.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evidence_history",
        sa.Column("exchange_id", sa.String(32), primary_key=True),
        sa.Column("agent_id", sa.String(144), nullable=False),
        sa.Column("session_id", sa.String(256)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("relayed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("diverged_at", sa.Integer()),
        sa.Column("finding_count", sa.Integer(), nullable=False),
        sa.Column("rewrite_count", sa.Integer(), nullable=False),
        sa.Column("ledger_json", sa.Text(), nullable=False),
        sa.Column("check_json", sa.Text(), nullable=False),
    )
    op.create_index("ix_evidence_history_session", "evidence_history",
                    ["agent_id", "session_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_evidence_history_session", table_name="evidence_history")
    op.drop_table("evidence_history")
