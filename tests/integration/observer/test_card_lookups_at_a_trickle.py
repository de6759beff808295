"""At a trickle of calls, the Observer asks the Registry for an agent's card far less than once
per call, and still checks each call against the card in force when it started, a card stored
through another Registry process on the same database included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from smoltbot.core.grpc_client import open_channel
from smoltbot.core.tls import TlsConfig
from smoltbot.registry.server import build_server as build_registry
from smoltbot.v1 import exchange_pb2, registry_service_pb2_grpc
from smoltbot.v1 import registry_service_pb2 as rpb
from tests.integration.observer.conftest import ObserverStack, free_port
from tests.integration.observer.exchanges import make_exchange, message, thinking, tool_use
from tests.integration.observer.test_verification_through_service import FORBID_DELETE, FORBID_READ, _kinds

CALLS = 16
#: 50 calls a second, the visibility benchmark's rate.
SPACING = 0.02


def _count_card_lookups(observer_stack: ObserverStack) -> list[int]:
    """Counts the GetActiveCard calls the Observer's Registry client makes (and makes them)."""
    assert observer_stack.observer is not None
    client: Any = observer_stack.observer.components.processor.registry
    real: Callable[..., Any] = client._stub.GetActiveCard
    count = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    client._stub.GetActiveCard = counting
    return count


def _started_now(agent_hash: str, name: str, path: str) -> exchange_pb2.Exchange:
    # make_exchange's call started 0.9 s before it ended: this one started now. A session of its
    # own: calls of one session wait for their predecessors' records (the evidence checks).
    return make_exchange(agent_hash, message(thinking(f"I will call {name}."), tool_use(name, {"path": path}),
                                             stop_reason="tool_use"),
                         ended_at=datetime.now(UTC) + timedelta(seconds=0.9), session_hint=path)


async def _trickle(observer_stack: ObserverStack, agent_hash: str, name: str) -> list[exchange_pb2.Exchange]:
    sent = []
    for i in range(CALLS):
        exchange = _started_now(agent_hash, name, f"/srv/{i}")
        await observer_stack.ingest([exchange])
        sent.append(exchange)
        await asyncio.sleep(SPACING)
    return sent


async def test_a_trickle_of_calls_shares_card_lookups_and_each_call_gets_the_card_in_force(
        observer_stack: ObserverStack) -> None:
    # A second Registry process on the same database: the cards are stored through it, while the
    # Observer asks its own Registry, which never sees those PutCard calls.
    other = await build_registry(observer_stack.settings, address=f"127.0.0.1:{free_port()}")
    await other.start()
    channel = open_channel(f"127.0.0.1:{other.port}", TlsConfig.from_settings(observer_stack.settings))
    other_stub = registry_service_pb2_grpc.RegistryServiceStub(channel)

    async def put(agent_id: str, agent_hash: str, card: dict[str, Any]) -> str:
        response = await other_stub.PutCard(rpb.PutCardRequest(
            agent_id=agent_id, agent_hash=agent_hash, card_json=json.dumps(card)))
        return str(response.card.card_id)

    # These calls end 0.9 s from now (they start now): the evidence checks would do each again
    # after it ended, which only slows the test.
    await observer_stack.stop_observer()
    observer_stack.observer_overrides = {"evidence_enabled": False}
    await observer_stack.start_observer()
    try:
        agent_id, agent_hash = await observer_stack.agent()
        delete_id = await put(agent_id, agent_hash, FORBID_DELETE)
        lookups = _count_card_lookups(observer_stack)

        under_delete = await _trickle(observer_stack, agent_hash, "delete_file")
        found = await observer_stack.traces_by_exchange([e.exchange_id for e in under_delete])
        for exchange in under_delete:
            (trace,) = found[exchange.exchange_id]
            assert trace.card_id == delete_id and _kinds(trace)[0] == {"forbidden_action"}
        # One lookup per call before (the Registry vouched for its card up to its own clock only).
        assert lookups[0] <= CALLS // 3, lookups[0]

        # A call that started before the next card was stored, traced after it: the old card.
        before_put = _started_now(agent_hash, "delete_file", "/srv/before")
        # The Observer's cache holds the first card, vouched for into the future, when the
        # second is stored: every call started after PutCard returned gets the second.
        await observer_stack.ingest([_started_now(agent_hash, "delete_file", "/srv/warm")])
        read_id = await put(agent_id, agent_hash, FORBID_READ)
        under_read = [_started_now(agent_hash, "read_file", "/srv/right-after")]
        await observer_stack.ingest([before_put, *under_read])
        under_read += await _trickle(observer_stack, agent_hash, "read_file")
        found = await observer_stack.traces_by_exchange([e.exchange_id for e in [before_put, *under_read]])
        (trace,) = found[before_put.exchange_id]
        assert trace.card_id == delete_id and _kinds(trace)[0] == {"forbidden_action"}
        for exchange in under_read:
            (trace,) = found[exchange.exchange_id]
            assert trace.card_id == read_id and _kinds(trace)[0] == {"forbidden_action"}, exchange.exchange_id
    finally:
        await channel.close()
        await other.stop(0.2)
