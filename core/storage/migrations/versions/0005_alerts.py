"""Alerts and webhooks: tables `alert_subscriptions`, `alert_deliveries` (the outbox) and
`alert_feed` (how far the feed has read each source of events).

A subscription belongs to one agent and names a URL, the events it wants and its signing
secret (kept to sign deliveries; shown to the owner once, never served again). A delivery is
one event for one subscription, unique on (subscription_id, event_key), so an event found
again is never queued twice; it is leased to one observer at a time while being sent
(`lease_owner`, `lease_expires_at`), as exchanges are.

No public-read policy on PostgreSQL: subscriptions hold URLs that may carry a token.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_subscriptions",
        sa.Column("subscription_id", sa.String(48), primary_key=True),
        sa.Column("agent_id", sa.String(144), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("events", sa.String(256), nullable=False),
        sa.Column("min_severity", sa.String(16), nullable=False),
        sa.Column("failure_rate_threshold", sa.Float(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_alert_subscriptions_agent", "alert_subscriptions", ["agent_id", "created_at"])
    op.create_table(
        "alert_deliveries",
        sa.Column("delivery_id", sa.String(48), primary_key=True),
        sa.Column("subscription_id", sa.String(48), nullable=False),
        sa.Column("agent_id", sa.String(144), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("event_key", sa.String(256), nullable=False),
        sa.Column("summary", sa.String(512), nullable=False),
        sa.Column("event_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("subscription_id", "event_key", name="uq_alert_deliveries_event"),
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_alert_deliveries_agent", "alert_deliveries", ["agent_id", "created_at"])
    op.create_table(
        "alert_feed",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("read_to", sa.DateTime(timezone=True), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in ("alert_subscriptions", "alert_deliveries", "alert_feed"):
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.drop_table("alert_feed")
    op.drop_table("alert_deliveries")
    op.drop_table("alert_subscriptions")
