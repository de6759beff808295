"""The tables the migrations must create: each service's SQLAlchemy tables, which its queries
are built from. `env.py` gives them to Alembic as `target_metadata`, and
`tests/integration/test_schema_matches_migrations.py` checks, on SQLite and PostgreSQL, that a
migrated database has exactly these tables and columns (types and nullability).

Indexes, foreign keys and unique constraints are declared in the migrations alone: the tables
here build queries, and no query names an index.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["service_metadata"]


def service_metadata() -> list[sa.MetaData]:
    """The Registry's and the Observer's tables (imported here, when a migration runs, so that
    importing `smoltbot.core.storage` does not load the services)."""
    from smoltbot.observer.tables import metadata as observer_tables
    from smoltbot.registry.store import metadata as registry_tables

    return [registry_tables, observer_tables]
