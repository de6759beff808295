"""Exchange.enforcement onto the traces, and the traces list filter on it, on SQLite and PostgreSQL:
the real Observer (and Registry) fed exchanges over Ingest, read back through ListTraces."""

from __future__ import annotations

import grpc
import pytest

from smoltbot.v1 import exchange_pb2
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.exchanges import make_exchange, message, text, tool_use

pytestmark = pytest.mark.timeout(60)


def enforced(agent_hash: str, agent_id: str, mode: str, calls: list[tuple[str, str, str]],
             reason: str = "") -> exchange_pb2.Exchange:
    """An exchange whose answer makes `calls` ((name, verdict, action)) as the gateway recorded them."""
    blocks = [tool_use(name, {"command": "ls"}, tool_id=f"toolu_{i:02d}{name}")
              for i, (name, _, _) in enumerate(calls)]
    answer = message(text("Working."), *blocks, stop_reason="tool_use") if blocks else message(text("Hi."))
    exchange = make_exchange(agent_hash, answer, agent_id=agent_id)
    exchange.enforcement.CopyFrom(exchange_pb2.Enforcement(mode=mode, card_id="ac-x",
                                                           not_enforced_reason=reason))
    for i, (name, verdict, action) in enumerate(calls):
        exchange.enforcement.tool_calls.add(tool_use_id=f"toolu_{i:02d}{name}", name=name, index=i + 1,
                                            verdict=verdict, action=action, reason=f"{name} rule")
    return exchange


async def test_each_trace_gets_its_calls_enforcement_and_the_list_filters_on_it(
        observer_stack: ObserverStack) -> None:
    agent_id, agent_hash = await observer_stack.agent()
    exchanges = [
        enforced(agent_hash, agent_id, "enforce",
                 [("Bash", "deny", "blocked"), ("Read", "allow", "allowed")]),
        enforced(agent_hash, agent_id, "nudge", [("Bash", "deny", "nudged")]),
        enforced(agent_hash, agent_id, "unknown", [], reason="the card could not be read"),
        make_exchange(agent_hash, message(text("From an older gateway.")), agent_id=agent_id),
    ]
    await observer_stack.ingest(exchanges)
    ids = [e.exchange_id for e in exchanges]
    by_exchange = await observer_stack.traces_by_exchange(ids, agent_id=agent_id)
    first, nudged, unknown, older = (by_exchange[e.exchange_id] for e in exchanges)
    got = [(t.action.name, t.enforcement.verdict, t.enforcement.action, t.enforcement.reason) for t in first]
    assert got == [("Bash", "deny", "blocked", "Bash rule"), ("Read", "allow", "allowed", "Read rule")]
    assert [(t.enforcement.mode, t.enforcement.action) for t in nudged] == [("nudge", "nudged")]
    assert [(t.enforcement.mode, t.enforcement.action, t.enforcement.reason) for t in unknown] == [
        ("unknown", "not_enforced", "the card could not be read")]
    assert not older[0].HasField("enforcement")

    async def names(**fields: object) -> list[str]:
        return sorted(f"{t.action.name}:{t.enforcement.action}"
                      for t in await observer_stack.list_traces(agent_id=agent_id, **fields))

    assert await names(enforcement=["blocked"]) == ["Bash:blocked"]
    assert await names(enforcement=["nudged", "not_enforced"]) == ["Bash:nudged", "respond:not_enforced"]
    assert len(await names()) == 5
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await observer_stack.list_traces(agent_id=agent_id, enforcement=["ignored"])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "enforcement" in str(refused.value.details())
