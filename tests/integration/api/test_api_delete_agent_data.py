"""`DELETE /v1/agents/{id}/data` against the real services on SQLite and PostgreSQL: only the
agent's credential may do it; afterwards no table of the Registry or the Observer holds a row of
the agent (nor of its credential hash), another agent's rows are untouched, and on SQLite the
deleted text is in neither the database file nor its WAL."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from smoltbot.core.storage import open_database
from smoltbot.observer.tables import exchange_payloads, exchanges
from smoltbot.observer.tables import metadata as observer_tables
from smoltbot.registry.store import metadata as registry_tables
from tests.integration.api.helpers import (
    Stack,
    anthropic_response,
    auth,
    hash_of,
    ingest,
    make_exchange,
    new_credential,
    seed_agent,
    wait_for_traces,
)

_TABLES = [table for metadata in (observer_tables, registry_tables) for table in metadata.sorted_tables]


async def _rows_of(stack: Stack, agent_id: str, agent_hash: str) -> dict[str, int]:
    """Rows per table that belong to the agent: by agent_id, and by credential hash where a table
    keeps one; raw payloads through their exchange."""
    db = open_database(stack.settings.effective_database_url)
    counts: dict[str, int] = {}
    try:
        async with db.read() as conn:
            for table in _TABLES:
                conditions = [table.c[name] == value for name, value in
                              (("agent_id", agent_id), ("agent_hash", agent_hash)) if name in table.c]
                if conditions:
                    counts[table.name] = (await conn.execute(
                        sa.select(sa.func.count()).select_from(table).where(sa.or_(*conditions)))).scalar_one()
            counts["exchange_payloads"] = (await conn.execute(
                sa.select(sa.func.count()).select_from(exchange_payloads)
                .join(exchanges, exchanges.c.exchange_id == exchange_payloads.c.exchange_id)
                .where(sa.or_(exchanges.c.agent_id == agent_id, exchanges.c.agent_hash == agent_hash))
            )).scalar_one()
    finally:
        await db.close()
    return counts


async def _failed_exchange_with_payload(stack: Stack, agent_id: str, agent_hash: str, marker: str) -> None:
    """A failed exchange keeps its raw payload (for an operator): the deletion must take it too."""
    db = open_database(stack.settings.effective_database_url)
    try:
        now = datetime.now(UTC)
        exchange_id = secrets.token_hex(16)
        async with db.begin() as conn:
            await conn.execute(sa.insert(exchanges).values(
                exchange_id=exchange_id, agent_hash=agent_hash, agent_id=agent_id, session_id=None,
                received_at=now, occurred_at=now, payload_bytes=64, state="failed", attempts=2,
                next_attempt_at=now, finished_at=now, last_error="analysis failed", record_kind="decision"))
            await conn.execute(sa.insert(exchange_payloads).values(
                exchange_id=exchange_id, payload=f"raw body {marker} raw body".encode()))
    finally:
        await db.close()


def _on_disk(stack: Stack, marker: str) -> list[str]:
    url = stack.settings.effective_database_url
    if not url.startswith("sqlite"):
        return []
    path = Path(url.removeprefix("sqlite:///"))
    return [candidate.name for candidate in (path, path.with_name(path.name + "-wal"))
            if candidate.exists() and marker.encode() in candidate.read_bytes()]


async def test_the_owner_deletes_everything_of_the_agent(api: httpx.AsyncClient, stack: Stack) -> None:
    owner = await seed_agent(api, stack)
    other = await seed_agent(api, stack, session="sess-api-other")
    owner_hash = hash_of(stack, owner.credential)
    marker = f"MARKER-{secrets.token_hex(8)}"
    reply = anthropic_response(text=f"Reading {marker}.", tool=("read_file", {"path": f"/srv/{marker}.txt"}))
    await ingest(stack, make_exchange(stack, owner.credential, reply, agent_id=owner.agent_id))
    await wait_for_traces(api, owner.agent_id, 4)
    await _failed_exchange_with_payload(stack, owner.agent_id, owner_hash, marker)
    claimed = await api.post(f"/v1/agents/{owner.agent_id}/claim", json={"email": "me@example.com"},
                             headers=auth(owner.credential))
    assert claimed.status_code == 200, claimed.text
    before = await _rows_of(stack, owner.agent_id, owner_hash)
    for table in ("traces", "exchanges", "exchange_payloads", "exchange_usage", "agents", "agent_credentials",
                  "agent_claims", "sessions", "alignment_cards"):
        assert before[table] > 0, (table, before)
    others_before = await _rows_of(stack, other.agent_id, hash_of(stack, other.credential))
    path = f"/v1/agents/{owner.agent_id}/data"

    anonymous = await api.delete(path)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["status"] == "UNAUTHENTICATED"
    stranger = await api.delete(path, headers=auth(new_credential()))
    assert stranger.status_code == 403 and stranger.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong_agent = await api.delete(path, headers=auth(other.credential))
    assert wrong_agent.status_code == 403
    # Nothing was deleted (drift input and state change by themselves as the detector works).
    settled = ("traces", "exchanges", "exchange_payloads", "exchange_usage", "agents", "agent_credentials",
               "agent_claims", "sessions", "alignment_cards")
    after_refusals = await _rows_of(stack, owner.agent_id, owner_hash)
    assert [after_refusals[table] for table in settled] == [before[table] for table in settled]

    deleted = await api.delete(path, headers=auth(owner.credential))
    assert deleted.status_code == 200, deleted.text
    body: dict[str, Any] = deleted.json()
    assert body["agent_id"] == owner.agent_id
    # What the detector consumes meanwhile (drift input) may be gone before the deletion: counted
    # for the settled tables; that nothing of any table is left is checked below.
    for table in settled:
        assert body["deleted_rows"].get(table, 0) >= before[table], (table, body)
    after = await _rows_of(stack, owner.agent_id, owner_hash)
    assert after == dict.fromkeys(after, 0), after
    others_after = await _rows_of(stack, other.agent_id, hash_of(stack, other.credential))
    assert [others_after[table] for table in settled] == [others_before[table] for table in settled]
    assert _on_disk(stack, marker) == []
    assert (await api.get(f"/v1/agents/{owner.agent_id}")).status_code == 404
    again = await api.delete(path, headers=auth(owner.credential))  # nothing left: still a success
    assert again.status_code == 200, again.text
    assert (await api.get(f"/v1/agents/{other.agent_id}")).status_code == 200
