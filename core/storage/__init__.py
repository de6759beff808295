"""Storage shared by every service: one async `Database` over SQLite or PostgreSQL, and the
one Alembic migration chain, applied at start with `migrate(db)`.

    db = open_database(settings.effective_database_url)
    await migrate(db)
    async with db.begin() as conn:   # write transaction
        ...
    async with db.read() as conn:    # read-only snapshot
        ...
    await db.close()
"""

from smoltbot.core.storage.database import (
    Database,
    Dialect,
    UTCDateTime,
    insert_ignoring_conflicts,
    is_unavailable_error,
    open_database,
    utcnow,
)
from smoltbot.core.storage.migrate import current_revision, head_revision, migrate

__all__ = [
    "Database",
    "Dialect",
    "UTCDateTime",
    "current_revision",
    "head_revision",
    "insert_ignoring_conflicts",
    "is_unavailable_error",
    "migrate",
    "open_database",
    "utcnow",
]
