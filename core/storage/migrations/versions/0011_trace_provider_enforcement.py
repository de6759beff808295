"""The traces list's provider and enforcement filters read columns and indexes, not trace JSON.

* `traces.provider`: the provider the call went to (`observation.provider`; "anthropic" for the
  traces stored before providers were recorded, as `trace_proto` serves them).
* `traces.enforcement`: what the gateway did on the call (`enforcement.action`: allowed, blocked,
  escalated, nudged, not_enforced); null when it recorded nothing (enforcement off).

Both written by the observer with the trace; existing traces are backfilled from their JSON here
(only the rows whose value is not the column's default are rewritten). The indexes put the
filter's value between the agent (or nothing, for /v1/traces) and the list's order
(`timestamp, trace_id`), so a filtered page reads the matching traces only; the enforcement ones
are partial (most traces have no enforcement record, and a filter always names a value).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ENFORCED = sa.text("enforcement IS NOT NULL")


def upgrade() -> None:
    # Plain ADD COLUMN on both backends (SQLite allows it with a constant default): no table
    # rebuild, and PostgreSQL's row-level security policies stay as they are.
    op.add_column("traces", sa.Column("provider", sa.String(16), nullable=False, server_default="anthropic"))
    op.add_column("traces", sa.Column("enforcement", sa.String(16), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        provider = "(trace_json::jsonb #>> '{observation,provider}')"
        action = "(trace_json::jsonb #>> '{enforcement,action}')"
    else:
        provider = "json_extract(trace_json, '$.observation.provider')"
        action = "json_extract(trace_json, '$.enforcement.action')"
    op.execute(f"UPDATE traces SET provider = substr({provider}, 1, 16) "
               f"WHERE {provider} IS NOT NULL AND {provider} <> 'anthropic'")
    op.execute(f"UPDATE traces SET enforcement = substr({action}, 1, 16) WHERE {action} IS NOT NULL")
    op.create_index("ix_traces_agent_provider_timestamp", "traces",
                    ["agent_id", "provider", "timestamp", "trace_id"])
    op.create_index("ix_traces_provider_timestamp", "traces", ["provider", "timestamp", "trace_id"])
    op.create_index("ix_traces_agent_enforcement_timestamp", "traces",
                    ["agent_id", "enforcement", "timestamp", "trace_id"],
                    sqlite_where=_ENFORCED, postgresql_where=_ENFORCED)
    op.create_index("ix_traces_enforcement_timestamp", "traces", ["enforcement", "timestamp", "trace_id"],
                    sqlite_where=_ENFORCED, postgresql_where=_ENFORCED)


def downgrade() -> None:
    for index in ("ix_traces_enforcement_timestamp", "ix_traces_agent_enforcement_timestamp",
                  "ix_traces_provider_timestamp", "ix_traces_agent_provider_timestamp"):
        op.drop_index(index, table_name="traces")
    op.drop_column("traces", "enforcement")
    op.drop_column("traces", "provider")
