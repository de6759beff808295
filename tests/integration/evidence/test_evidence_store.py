"""The processor's evidence stage on both databases: a call waits while an earlier call of its session
is unfinished, is checked without it once `evidence_wait_seconds` have passed (and says so), and
reads only the ledger rows of calls that started before it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from smoltbot.observer.evidence_store import EvidenceRow, EvidenceStore
from smoltbot.observer.tables import exchanges
from tests.integration.observer.conftest import ObserverStack


async def _unfinished(stack: ObserverStack, exchange_id: str, session: str, ended: datetime) -> None:
    async with stack.db.begin() as conn:
        await conn.execute(exchanges.insert().values(
            exchange_id=exchange_id, agent_hash="a" * 64, agent_id="smolt-x", session_id=session,
            received_at=ended, occurred_at=ended, payload_bytes=10, state="pending", attempts=0,
            next_attempt_at=ended, record_kind="decision"))


def _row(exchange_id: str, started: datetime) -> EvidenceRow:
    return EvidenceRow(exchange_id=exchange_id, agent_id="smolt-x", session_id="s", started_at=started,
                       relayed_at=started + timedelta(seconds=1), status="intact", diverged_at=None,
                       finding_count=0, rewrite_count=0, ledger_json=json.dumps({"turn": None}),
                       check_json="{}")


async def test_a_call_waits_for_earlier_calls_then_is_checked_without_them_and_says_so(
        observer_stack: ObserverStack) -> None:
    now = datetime.now(UTC)
    await _unfinished(observer_stack, "e" * 32, "s", now - timedelta(seconds=20))
    await _unfinished(observer_stack, "f" * 32, "s", now - timedelta(seconds=1))  # this call
    settings = observer_stack.observer_settings
    patient = EvidenceStore(observer_stack.db, settings.model_copy(update={"evidence_wait_seconds": 60}))
    hurried = EvidenceStore(observer_stack.db, settings.model_copy(update={"evidence_wait_seconds": 5}))
    await patient.write([_row("a" * 32, now - timedelta(seconds=40)),
                         _row("b" * 32, now - timedelta(seconds=2))])
    call = [("f" * 32, "smolt-x", "s", now - timedelta(seconds=10))]

    jobs, waiting = await patient.jobs_for(call)
    assert jobs == {} and "e" * 32 in waiting["f" * 32]

    jobs, waiting = await hurried.jobs_for(call)
    assert waiting == {}
    job = jobs["f" * 32]
    assert job.notes and "e" * 32 in job.notes[0] and "not recorded within 5s" in job.notes[0]
    # Rows of calls started before this one only (b started after it).
    assert [row.exchange_id for row in job.rows] == ["a" * 32]

    # Without a session there is nothing to wait for and no ledger.
    jobs, waiting = await patient.jobs_for([("c" * 32, "smolt-x", None, now)])
    assert waiting == {} and jobs["c" * 32].rows == () and jobs["c" * 32].session_id is None
