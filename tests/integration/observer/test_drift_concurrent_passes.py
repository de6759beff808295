"""Two drift passes over the same agent at once (two observers sharing a database): each reads
and computes with no lock held, so their writes are conditional. The second write of two that
read the same state is refused (no alert recorded twice), as is one that read a state another
pass has since moved (no input lost), and one whose traces were deleted meanwhile (nothing of
a deleted agent is written back). Passes are interleaved through `DriftWatch.plan` (read and
compute) and `DriftWatch.apply` (the write)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from smoltbot.core.storage import open_database
from smoltbot.observer.drift_store import DriftStore
from smoltbot.observer.drift_watch import DriftWatch
from smoltbot.v1 import exchange_pb2
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.test_drift import CARD, _calls


@pytest.fixture
async def two_watches(observer_stack: ObserverStack) -> AsyncIterator[tuple[DriftWatch, DriftWatch]]:
    """Two drift watches as two observers have them (a connection pool each), the Observer's
    own watch stopped so that only the test's passes feed."""
    assert observer_stack.observer is not None
    own = observer_stack.observer.components.drift
    await own.stop()
    other_db = open_database(observer_stack.settings.effective_database_url)
    try:
        yield (DriftWatch(DriftStore(observer_stack.db), own.registry, observer_stack.observer_settings),
               DriftWatch(DriftStore(other_db), own.registry, observer_stack.observer_settings))
    finally:
        await other_db.close()


async def _stored(stack: ObserverStack, exchanges: list[exchange_pb2.Exchange]) -> None:
    await stack.ingest(exchanges)
    await stack.wait_finished([e.exchange_id for e in exchanges])


async def _rows(stack: ObserverStack, agent_id: str) -> tuple[int | None, int, list[dict[str, object]]]:
    """The agent's detector cursor (None: no state row), queued traces and alerts' details."""
    async with stack.db.read() as conn:
        observed = (await conn.execute(sa.text("SELECT observed FROM drift_states WHERE agent_id = :a"),
                                       {"a": agent_id})).scalar()
        queued = (await conn.execute(sa.text("SELECT count(*) FROM drift_pending WHERE agent_id = :a"),
                                     {"a": agent_id})).scalar_one()
        alerts = (await conn.execute(sa.text("SELECT alert_json FROM drift_alerts WHERE agent_id = :a"),
                                     {"a": agent_id})).scalars().all()
    return observed, int(queued), [json.loads(alert) for alert in alerts]


async def test_of_two_passes_that_read_the_same_state_only_the_first_write_counts(
        observer_stack: ObserverStack, two_watches: tuple[DriftWatch, DriftWatch]) -> None:
    first, second = two_watches
    start = datetime.now(UTC) + timedelta(minutes=1)  # after the card: in force for every call
    agent_id, agent_hash = await observer_stack.agent()
    await observer_stack.put_card(agent_id, agent_hash, json.dumps(CARD))
    sent = _calls(agent_hash, ["read_file", "list_dir"] * 5 + ["delete_file"] * 5, start)
    await _stored(observer_stack, sent)

    both = [await first.plan([agent_id]), await second.plan([agent_id])]
    assert all(plan.outcomes[0].findings for plan in both), "each pass found the drift"
    assert await second.apply(both[1]) == set()
    assert await first.apply(both[0]) == {agent_id}, "refused: the agent is run again"

    observed, queued, alerts = await _rows(observer_stack, agent_id)
    assert (observed, queued) == (len(sent), 0)
    (alert,) = alerts
    assert alert["findings"] == 1, "the finding was recorded once"
    assert await first.run_agents([agent_id]) == set()  # nothing left, nothing changed
    assert await _rows(observer_stack, agent_id) == (observed, 0, alerts)


async def test_a_pass_whose_state_moved_since_it_read_writes_nothing(
        observer_stack: ObserverStack, two_watches: tuple[DriftWatch, DriftWatch]) -> None:
    """The first pass reads the traces of 10 s on; then an older call's trace is stored while a
    call between them is still unprocessed (a gateway's spool replayed late), so the second
    pass feeds only the older trace, held back from the rest by that call (the watermark): the
    two passes fed different traces from the same state, and the first's write would undo the
    second's."""
    first, second = two_watches
    start = datetime.now(UTC) + timedelta(minutes=1)
    agent_id, agent_hash = await observer_stack.agent()
    await observer_stack.put_card(agent_id, agent_hash, json.dumps(CARD))
    later = _calls(agent_hash, ["read_file", "list_dir", "read_file"], start + timedelta(seconds=10))
    await _stored(observer_stack, later)
    planned = await first.plan([agent_id])
    assert [len(outcome.fed) for outcome in planned.outcomes] == [3]

    older = _calls(agent_hash, ["list_dir"], start)
    await _stored(observer_stack, older)
    assert observer_stack.observer is not None
    await observer_stack.observer.components.processor.stop(0.5)  # the next call stays unprocessed
    between = _calls(agent_hash, ["read_file"], start + timedelta(seconds=5))
    await observer_stack.ingest(between)
    assert await observer_stack.exchange_states([e.exchange_id for e in between]) == {
        between[0].exchange_id: "pending"}
    assert await second.run_agents([agent_id]) == set()
    assert (await _rows(observer_stack, agent_id))[:2] == (1, 3)

    assert await first.apply(planned) == {agent_id}
    assert (await _rows(observer_stack, agent_id))[:2] == (1, 3), "the older trace's feed stands"

    await observer_stack.stop_observer()
    await observer_stack.start_observer()  # processes the call left pending; its watch feeds the rest
    await observer_stack.wait_finished([e.exchange_id for e in between])
    await observer_stack.wait_drift_settled(agent_id)
    observed, queued, _ = await _rows(observer_stack, agent_id)
    assert (observed, queued) == (len(older) + len(between) + len(later), 0), "each trace fed once"


async def test_a_pass_over_an_agent_whose_data_was_deleted_meanwhile_writes_nothing(
        observer_stack: ObserverStack, two_watches: tuple[DriftWatch, DriftWatch]) -> None:
    watch, _ = two_watches
    start = datetime.now(UTC) + timedelta(minutes=1)
    agent_id, agent_hash = await observer_stack.agent()
    await observer_stack.put_card(agent_id, agent_hash, json.dumps(CARD))
    drifting = ["read_file", "list_dir"] * 5 + ["delete_file"] * 5
    await _stored(observer_stack, _calls(agent_hash, drifting, start))
    planned = await watch.plan([agent_id])
    assert planned.outcomes[0].findings

    assert observer_stack.stub is not None
    await observer_stack.stub.DeleteAgentData(
        pb.DeleteAgentDataRequest(agent_id=agent_id, agent_hash=agent_hash))
    assert await watch.apply(planned) == {agent_id}
    assert await _rows(observer_stack, agent_id) == (None, 0, []), "no state or alert written back"
