"""Alembic environment for smoltbot. Migrations run only through
`smoltbot.core.storage.migrate.migrate`, which lends us a connection (and holds the lock that
serialises concurrent starts); there is no offline/SQL-script mode."""

from __future__ import annotations

from alembic import context

from smoltbot.core.storage.migrations.metadata import service_metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run smoltbot migrations with smoltbot.core.storage.migrate.migrate(db)")

context.configure(
    connection=connection,
    # What autogenerate compares the database with (see metadata.py).
    target_metadata=service_metadata(),
    # Our SQLite connections emit a real BEGIN (see database.py), so DDL is transactional on
    # both backends: a failed migration leaves nothing half-applied.
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
