"""An index for numbering conversation turns: the highest turn of a session without reading its rows.

The observer numbers the turns of a batch of calls with one read per session
(`observer/usage_store.py`): the session's highest turn before the batch's earliest call. When
every stored call of the session is older than that (the usual case: calls are stored in about the
order they were made), this index answers it from its last entry; without it the session's rows
were read one by one, at every batch.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_exchange_usage_session_turn", "exchange_usage",
                    ["agent_id", "session_id", "conversation_turn"])


def downgrade() -> None:
    op.drop_index("ix_exchange_usage_session_turn", table_name="exchange_usage")
