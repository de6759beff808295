"""Observer tables: the exchange queue, traces and their violations, drift state and alerts,
reported tool executions.

`exchanges` is both the intake log and the work queue: its primary key is what makes a
re-sent exchange a duplicate, and `state`/`next_attempt_at`/`lease_*` drive processing. The
payload (the serialized Exchange, request body included) lives beside it in
`exchange_payloads`: a queue row is updated three or four times (claimed, retried, finished)
and SQLite rewrites a whole row on every update, so a 6 KB payload inside it cost five times
the I/O. The payload is deleted once the exchange is done, so raw conversations are not kept
beside the redacted traces; a failed exchange keeps it for an operator to look into.

`traces` rows are written once and never rewritten (only `executed` is set by a plugin
report); `drift_pending` lists the traces the drift detector has not seen yet.

On PostgreSQL every table gets row-level security; `traces`, `trace_violations` and
`drift_alerts` get a public SELECT policy. `exchanges` (raw request bodies), `drift_states`
and `tool_executions` get none. The services connect as the tables' owner, which RLS does not
restrict.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_AGENT_ID = 144  # as in 0001
_TABLES = ("exchanges", "exchange_payloads", "traces", "trace_violations", "drift_pending", "drift_states",
           "drift_alerts", "tool_executions")
_PUBLIC_READ = ("traces", "trace_violations", "drift_alerts")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "exchanges",
        sa.Column("exchange_id", sa.String(32), primary_key=True),
        sa.Column("agent_hash", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(_AGENT_ID), nullable=True),
        sa.Column("session_id", sa.String(256), nullable=True),
        _timestamp("received_at"),
        # When the exchange happened (its end, else its start, else receipt): the trace time.
        _timestamp("occurred_at"),
        # What a claim will load into memory (claims are capped in bytes, not only in rows).
        sa.Column("payload_bytes", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        # Pending: when it may be tried. Processing: when its lease expires (= lease_expires_at),
        # so one index serves both "due" and "abandoned" work.
        _timestamp("next_attempt_at"),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        _timestamp("lease_expires_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _timestamp("finished_at", nullable=True),
        sa.CheckConstraint("state IN ('pending', 'processing', 'done', 'failed')", name="ck_exchanges_state"),
        sa.CheckConstraint("attempts >= 0", name="ck_exchanges_attempts"),
    )
    op.create_index("ix_exchanges_due", "exchanges", ["state", "next_attempt_at"])
    # Drift holds an agent's traces back while older exchanges of the agent are unfinished.
    op.create_index("ix_exchanges_agent_hash_state", "exchanges", ["agent_hash", "state", "occurred_at"])

    op.create_table(
        "exchange_payloads",
        sa.Column("exchange_id", sa.String(32), sa.ForeignKey("exchanges.exchange_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
    )

    op.create_table(
        "traces",
        sa.Column("trace_id", sa.String(96), primary_key=True),
        sa.Column("exchange_id", sa.String(32), nullable=False),
        sa.Column("decision_index", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(_AGENT_ID), nullable=False),
        sa.Column("session_id", sa.String(256), nullable=True),
        sa.Column("card_id", sa.String(_AGENT_ID), nullable=False),
        _timestamp("timestamp"),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("violation_count", sa.Integer(), nullable=False),
        sa.Column("action_type", sa.String(32), nullable=False),
        sa.Column("action_name", sa.String(256), nullable=False),
        sa.Column("tool_use_id", sa.String(256), nullable=True),
        # Reported by the agent's plugin (ReportToolExecution); merged into observation.executed.
        sa.Column("executed", sa.Boolean(), nullable=True),
        sa.Column("has_reasoning", sa.Boolean(), nullable=False),
        sa.Column("model_analysis", sa.Boolean(), nullable=False),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        _timestamp("created_at"),
        sa.Column("trace_json", sa.Text(), nullable=False),
        sa.UniqueConstraint("exchange_id", "decision_index", name="uq_traces_exchange_decision"),
    )
    op.create_index("ix_traces_timestamp", "traces", ["timestamp", "trace_id"])
    op.create_index("ix_traces_agent_timestamp", "traces", ["agent_id", "timestamp", "trace_id"])
    op.create_index("ix_traces_session_timestamp", "traces", ["session_id", "timestamp", "trace_id"])
    op.create_index("ix_traces_agent_verified_timestamp", "traces", ["agent_id", "verified", "timestamp"])
    op.create_index("ix_traces_agent_tool_use", "traces", ["agent_id", "tool_use_id"],
                    sqlite_where=sa.text("tool_use_id IS NOT NULL"),
                    postgresql_where=sa.text("tool_use_id IS NOT NULL"))

    op.create_table(
        "trace_violations",
        sa.Column("trace_id", sa.String(96), sa.ForeignKey("traces.trace_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("agent_id", sa.String(_AGENT_ID), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
    )
    op.create_index("ix_trace_violations_agent_type", "trace_violations", ["agent_id", "type"])

    op.create_table(
        "drift_pending",
        sa.Column("trace_id", sa.String(96), sa.ForeignKey("traces.trace_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("agent_id", sa.String(_AGENT_ID), nullable=False),
        # For the watermark: the agent's unfinished exchanges are found by hash (their agent id
        # may not be known yet).
        sa.Column("agent_hash", sa.String(128), nullable=False),
        sa.Column("card_id", sa.String(_AGENT_ID), nullable=False),
        _timestamp("timestamp"),
    )
    op.create_index(
        "ix_drift_pending_agent_timestamp", "drift_pending", ["agent_id", "timestamp", "trace_id"]
    )

    op.create_table(
        "drift_states",
        sa.Column("agent_id", sa.String(_AGENT_ID), primary_key=True),
        # The card the detector last compared against (its baseline reference spans cards).
        sa.Column("card_id", sa.String(_AGENT_ID), nullable=False),
        sa.Column("observed", sa.Integer(), nullable=False),
        sa.Column("state_json", sa.Text(), nullable=False),
        _timestamp("updated_at"),
    )

    op.create_table(
        "drift_alerts",
        sa.Column("alert_id", sa.String(48), primary_key=True),
        sa.Column("agent_id", sa.String(_AGENT_ID), nullable=False),
        sa.Column("card_id", sa.String(_AGENT_ID), nullable=False),
        sa.Column("direction", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.Column("sustained_traces", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        # trace_ids, analysis, indicators, references: the served alert's variable parts.
        sa.Column("alert_json", sa.Text(), nullable=False),
        sa.CheckConstraint("status IN ('open', 'resolved')", name="ck_drift_alerts_status"),
    )
    op.create_index("ix_drift_alerts_agent_created", "drift_alerts", ["agent_id", "created_at", "alert_id"])
    op.create_index("ix_drift_alerts_created", "drift_alerts", ["created_at", "alert_id"])
    # No floods: at most one open alert per agent and direction, enforced by the database.
    op.create_index("ux_drift_alerts_one_open", "drift_alerts", ["agent_id", "direction"], unique=True,
                    sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))

    op.create_table(
        "tool_executions",
        sa.Column("agent_id", sa.String(_AGENT_ID), primary_key=True),
        sa.Column("tool_use_id", sa.String(256), primary_key=True),
        sa.Column("executed", sa.Boolean(), nullable=False),
        _timestamp("reported_at"),
    )

    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        for table in _PUBLIC_READ:
            op.execute(f"CREATE POLICY {table}_public_read ON {table} FOR SELECT USING (true)")


def downgrade() -> None:
    op.drop_table("tool_executions")
    op.drop_table("drift_alerts")
    op.drop_table("drift_states")
    op.drop_table("drift_pending")
    op.drop_table("trace_violations")
    op.drop_table("traces")
    op.drop_table("exchange_payloads")
    op.drop_table("exchanges")
