"""The Observer's tables, as migrations 0002 onwards create them
(`tests/integration/test_schema_matches_migrations.py` checks that they agree), and the one rule every
storage module follows for long ``IN`` lists and multi-row inserts.

The observer's data-access rule: SQL runs only in its storage modules, each over these tables:
`queue` (exchanges waiting to be processed, and the writing of their traces), `usage_store`
(tokens, cost and session position per model call, written with the traces), `trace_store`
(traces as served, integrity aggregates, tool-execution reports), `drift_store` (the drift
detector's queue, states and alerts), `retention_store` (retention batches, the owner's
deletion) and `integrity_counters` (all-time integrity sums). Everything else calls their
methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from smoltbot.core.storage import UTCDateTime

__all__ = [
    "IN_CHUNK",
    "alert_deliveries",
    "alert_feed",
    "alert_subscriptions",
    "chunks",
    "drift_alerts",
    "drift_pending",
    "drift_states",
    "evidence_cuts",
    "evidence_history",
    "exchange_payloads",
    "exchange_usage",
    "exchanges",
    "integrity_hours",
    "integrity_marks",
    "integrity_totals",
    "integrity_violation_totals",
    "metadata",
    "retention_state",
    "tool_executions",
    "trace_violations",
    "traces",
]

metadata = sa.MetaData()

exchanges = sa.Table(
    "exchanges", metadata,
    sa.Column("exchange_id", sa.String(32), primary_key=True),
    sa.Column("agent_hash", sa.String(128), nullable=False),
    sa.Column("agent_id", sa.String(144)),
    sa.Column("session_id", sa.String(256)),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("payload_bytes", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("last_error", sa.Text()),
    sa.Column("finished_at", UTCDateTime()),
    # decision | activity | auth_rejected | minimal (record_kinds); null for rows stored before 0003.
    sa.Column("record_kind", sa.String(16)),
)

exchange_payloads = sa.Table(
    "exchange_payloads", metadata,
    sa.Column("exchange_id", sa.String(32), primary_key=True),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
)

traces = sa.Table(
    "traces", metadata,
    sa.Column("trace_id", sa.String(96), primary_key=True),
    sa.Column("exchange_id", sa.String(32), nullable=False),
    sa.Column("decision_index", sa.Integer(), nullable=False),
    sa.Column("agent_id", sa.String(144), nullable=False),
    sa.Column("session_id", sa.String(256)),
    sa.Column("card_id", sa.String(144), nullable=False),
    sa.Column("timestamp", UTCDateTime(), nullable=False),
    sa.Column("verified", sa.Boolean(), nullable=False),
    sa.Column("violation_count", sa.Integer(), nullable=False),
    sa.Column("action_type", sa.String(32), nullable=False),
    sa.Column("action_name", sa.String(256), nullable=False),
    sa.Column("tool_use_id", sa.String(256)),
    sa.Column("executed", sa.Boolean()),
    sa.Column("has_reasoning", sa.Boolean(), nullable=False),
    sa.Column("model_analysis", sa.Boolean(), nullable=False),
    sa.Column("failed", sa.Boolean(), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("trace_json", sa.Text(), nullable=False),
    # decision | activity: integrity and drift count decisions only.
    sa.Column("record_kind", sa.String(16), nullable=False),
    # The traces list's filters (migration 0011): observation.provider ("anthropic" for traces
    # stored before providers were recorded) and enforcement.action (null: no enforcement record).
    sa.Column("provider", sa.String(16), nullable=False, server_default="anthropic"),
    sa.Column("enforcement", sa.String(16)),
)

trace_violations = sa.Table(
    "trace_violations", metadata,
    sa.Column("trace_id", sa.String(96), primary_key=True),
    sa.Column("position", sa.Integer(), primary_key=True),
    sa.Column("agent_id", sa.String(144), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
)

drift_pending = sa.Table(
    "drift_pending", metadata,
    sa.Column("trace_id", sa.String(96), primary_key=True),
    sa.Column("agent_id", sa.String(144), nullable=False),
    sa.Column("agent_hash", sa.String(128), nullable=False),
    sa.Column("card_id", sa.String(144), nullable=False),
    sa.Column("timestamp", UTCDateTime(), nullable=False),
)

drift_states = sa.Table(
    "drift_states", metadata,
    sa.Column("agent_id", sa.String(144), primary_key=True),
    sa.Column("card_id", sa.String(144), nullable=False),
    sa.Column("observed", sa.Integer(), nullable=False),
    sa.Column("state_json", sa.Text(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

drift_alerts = sa.Table(
    "drift_alerts", metadata,
    sa.Column("alert_id", sa.String(48), primary_key=True),
    sa.Column("agent_id", sa.String(144), nullable=False),
    sa.Column("card_id", sa.String(144), nullable=False),
    sa.Column("direction", sa.String(32), nullable=False),
    sa.Column("reference", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("similarity", sa.Float(), nullable=False),
    sa.Column("sustained_traces", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("alert_json", sa.Text(), nullable=False),
)

tool_executions = sa.Table(
    "tool_executions", metadata,
    sa.Column("agent_id", sa.String(144), primary_key=True),
    sa.Column("tool_use_id", sa.String(256), primary_key=True),
    sa.Column("executed", sa.Boolean(), nullable=False),
    sa.Column("reported_at", UTCDateTime(), nullable=False),
)

# One row per model call (never per trace: an exchange with three tool calls is one call's
# tokens). Token parts are None when the provider did not report them (not 0); cost_usd is the
# exact Decimal as text and cost_picousd the same in integer 1e-12 USD for SQL sums, both None
# when the cost is unknown (cost_reason says why). Written with the exchange's traces.
exchange_usage = sa.Table(
    "exchange_usage", metadata,
    sa.Column("exchange_id", sa.String(32), primary_key=True),
    sa.Column("agent_id", sa.String(144), nullable=False),
    sa.Column("session_id", sa.String(256)),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("api", sa.String(32), nullable=False),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("input_tokens", sa.BigInteger()),
    sa.Column("cache_read_tokens", sa.BigInteger()),
    sa.Column("cache_write_5m_tokens", sa.BigInteger()),
    sa.Column("cache_write_1h_tokens", sa.BigInteger()),
    sa.Column("cache_write_unknown_ttl_tokens", sa.BigInteger()),
    sa.Column("output_tokens", sa.BigInteger()),
    sa.Column("reasoning_tokens", sa.BigInteger()),
    sa.Column("price_conditions", sa.String(1024), nullable=False),
    sa.Column("cost_usd", sa.String(48)),
    sa.Column("cost_picousd", sa.BigInteger()),
    sa.Column("cost_reason", sa.String(256), nullable=False),
    sa.Column("price_checked", sa.String(10), nullable=False),
    sa.Column("session_rung", sa.String(48), nullable=False),
    sa.Column("sub_agent_source", sa.String(16), nullable=False),
    sa.Column("sub_agent_id", sa.String(256)),
    sa.Column("parent_agent_id", sa.String(256)),
    sa.Column("agent_type", sa.String(256), nullable=False),
    sa.Column("request_kind", sa.String(256), nullable=False),
    sa.Column("is_sub_agent", sa.Boolean(), nullable=False),
    sa.Column("starts_turn", sa.Boolean()),
    sa.Column("turn_position", sa.Integer()),
    sa.Column("conversation_turn", sa.Integer()),
)

# Per agent: what retention deleted, and since when the agent's record is complete (older rows
# are gone, so integrity and usage hold from `since`). Written by `observer.retention` (0006).
retention_state = sa.Table(
    "retention_state", metadata,
    sa.Column("agent_id", sa.String(144), primary_key=True),
    sa.Column("since", UTCDateTime(), nullable=False),
    sa.Column("deleted_traces", sa.BigInteger(), nullable=False),
    sa.Column("deleted_rows", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Alerts and webhooks (migration 0005, observer/alerts/): subscriptions, the delivery outbox
# (unique on subscription_id + event_key in the migration) and how far the feed has read.
alert_subscriptions = sa.Table(
    "alert_subscriptions", metadata,
    sa.Column("subscription_id", sa.String(48), primary_key=True),
    sa.Column("agent_id", sa.String(144), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("events", sa.String(256), nullable=False),
    sa.Column("min_severity", sa.String(16), nullable=False),
    sa.Column("failure_rate_threshold", sa.Float(), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

alert_deliveries = sa.Table(
    "alert_deliveries", metadata,
    sa.Column("delivery_id", sa.String(48), primary_key=True),
    sa.Column("subscription_id", sa.String(48), nullable=False),
    sa.Column("agent_id", sa.String(144), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("event_key", sa.String(256), nullable=False),
    sa.Column("summary", sa.String(512), nullable=False),
    sa.Column("event_json", sa.Text(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("last_status", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.String(512), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime()),
)

alert_feed = sa.Table(
    "alert_feed", metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("read_to", UTCDateTime(), nullable=False),
)

# Integrity counters (0007): an agent's all-time sums without rescanning its traces. They count
# the traces created before `integrity_marks.rolled_to`; integrity adds the few created since.
# Kept exact: `retention_store` adds traces to them and takes deleted ones out in the same
# transactions, one at a time.
integrity_totals = sa.Table(
    "integrity_totals", metadata,
    sa.Column("agent_id", sa.String(144), primary_key=True),
    sa.Column("record_kind", sa.String(16), primary_key=True),
    sa.Column("traces", sa.BigInteger(), nullable=False),
    sa.Column("verified", sa.BigInteger(), nullable=False),
    sa.Column("violations", sa.BigInteger(), nullable=False),
    sa.Column("with_reasoning", sa.BigInteger(), nullable=False),
    sa.Column("with_model_analysis", sa.BigInteger(), nullable=False),
    sa.Column("failed", sa.BigInteger(), nullable=False),
)

integrity_violation_totals = sa.Table(
    "integrity_violation_totals", metadata,
    sa.Column("agent_id", sa.String(144), primary_key=True),
    sa.Column("type", sa.String(64), primary_key=True),
    sa.Column("count", sa.BigInteger(), nullable=False),
)

integrity_marks = sa.Table(
    "integrity_marks", metadata,
    sa.Column("agent_id", sa.String(144), primary_key=True),
    sa.Column("rolled_to", UTCDateTime(), nullable=False),
)

# Integrity roll-ups per hour (0012): the agent's decisions created before its mark, per hour of
# their trace time (`hour`: whole hours since the Unix epoch), so the 7-day timeline reads at most
# 168 rows plus the traces created since the mark. Kept exactly as the counters above are.
integrity_hours = sa.Table(
    "integrity_hours", metadata,
    sa.Column("agent_id", sa.String(144), primary_key=True),
    sa.Column("hour", sa.BigInteger(), primary_key=True),
    sa.Column("traces", sa.BigInteger(), nullable=False),
    sa.Column("verified", sa.BigInteger(), nullable=False),
)

# The history ledger (migration 0009, observer/evidence_store.py): per model call, digests of the turn
# relayed (ledger_json) and the check of the history it resent (status, check_json). Never content.
evidence_history = sa.Table(
    "evidence_history", metadata,
    sa.Column("exchange_id", sa.String(32), primary_key=True),
    sa.Column("agent_id", sa.String(144), nullable=False),
    sa.Column("session_id", sa.String(256)),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("relayed_at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("diverged_at", sa.Integer()),
    sa.Column("finding_count", sa.Integer(), nullable=False),
    sa.Column("rewrite_count", sa.Integer(), nullable=False),
    sa.Column("ledger_json", sa.Text(), nullable=False),
    sa.Column("check_json", sa.Text(), nullable=False),
)

# Per session whose oldest ledger rows retention deleted: the cut-off it deleted them by. Turns
# relayed before it are unknown to a later check, not unrelayed (0010, retention_store).
evidence_cuts = sa.Table(
    "evidence_cuts", metadata,
    sa.Column("agent_id", sa.String(144), primary_key=True),
    sa.Column("session_id", sa.String(256), primary_key=True),
    sa.Column("cut_before", UTCDateTime(), nullable=False),
)

#: Bound parameters per statement stay well under SQLite's 32766 and asyncpg's 32767.
IN_CHUNK = 500


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    """`items` in slices of at most `size`, one statement each."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
