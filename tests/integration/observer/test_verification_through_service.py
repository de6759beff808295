"""Fixture cards trigger each verification check through the running service; the default
card triggers none. The aap package's own `verify_trace` agrees on the violations it knows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aap
from google.protobuf import json_format

from smoltbot.observer.queue import ClaimedExchange, Finished
from smoltbot.observer.server import build_server as build_observer
from smoltbot.v1 import exchange_pb2, trace_pb2
from smoltbot.v1 import registry_service_pb2 as rpb
from tests.integration.observer.conftest import ObserverStack
from tests.integration.observer.exchanges import error_body, make_exchange, message, text, thinking, tool_use

STRICT_CARD: dict[str, Any] = {
    "card_version": "unified/2026-04-26",
    "autonomy_mode": "observe",
    "integrity_mode": "observe",
    "principal": {"type": "human", "identifier": "ops@example.com", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency", "honesty", "harm_prevention", "principal_benefit"]},
    "autonomy": {
        "bounded_actions": ["read_file", "send_email", "transfer_funds", "log_event", "respond"],
        "forbidden_actions": ["delete_file"],
        "escalation_triggers": [
            {
                "condition": 'action_name == "send_email"',
                "action": "escalate",
                "reason": "emails need approval",
            },
            {"condition": 'action_name == "log_event"', "action": "log", "reason": "audit trail"},
            {"condition": 'parameters.path contains "/secrets/"', "action": "deny", "reason": "secret store"},
        ],
        "max_autonomous_value": {"amount": 500, "currency": "USD"},
    },
    "audit": {
        "retention_days": 30,
        "queryable": True,
        "trace_format": "ap-trace-v1",
        "query_endpoint": "http://127.0.0.1:8000/v1/traces",
        "tamper_evidence": "append_only",
    },
}
EXPIRED_CARD = {**STRICT_CARD, "issued_at": "2025-01-01T00:00:00Z", "expires_at": "2025-06-01T00:00:00Z"}


def _tool(agent_hash: str, name: str, tool_input: dict[str, Any], *,
          ended_at: datetime | None = None) -> exchange_pb2.Exchange:
    # make_exchange's call started 0.9 s before it ended: by default it ends a second from now,
    # so that it started after the cards this test stored (the card in force at the call's start
    # is the one it is checked against).
    return make_exchange(agent_hash, message(thinking(f"I will call {name}."), tool_use(name, tool_input),
                                             stop_reason="tool_use"),
                         ended_at=ended_at or datetime.now(UTC) + timedelta(seconds=1))


def _kinds(trace: trace_pb2.ApTrace) -> tuple[set[str], set[str]]:
    return ({v.type for v in trace.verification.violations}, {w.type for w in trace.verification.warnings})


def _aap_dict(trace: trace_pb2.ApTrace) -> dict[str, Any]:
    return json_format.MessageToDict(trace, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


async def test_fixture_cards_trigger_every_check_and_the_default_card_none(
    observer_stack: ObserverStack,
) -> None:
    strict_id, strict_hash = await observer_stack.agent()
    strict_card_id = await observer_stack.put_card(strict_id, strict_hash, json.dumps(STRICT_CARD))
    expired_id, expired_hash = await observer_stack.agent()
    await observer_stack.put_card(expired_id, expired_hash, json.dumps(EXPIRED_CARD))
    default_id, default_hash = await observer_stack.agent()

    cases = {
        "bounded": _tool(strict_hash, "read_file", {"path": "/srv/readme.md"}),
        "forbidden": _tool(strict_hash, "delete_file", {"path": "/srv/readme.md"}),
        "unbounded": _tool(strict_hash, "shell_exec", {"command": "ls"}),
        "escalate_trigger": _tool(strict_hash, "send_email", {"to": "a@example.com"}),
        "deny_trigger": _tool(strict_hash, "read_file", {"path": "/srv/secrets/db.txt"}),
        "log_trigger": _tool(strict_hash, "log_event", {"event": "start"}),
        "over_limit": _tool(strict_hash, "transfer_funds", {"amount": 1200, "to": "acct-1"}),
        "near_limit": _tool(strict_hash, "transfer_funds", {"amount": 480, "to": "acct-1"}),
        "expired": _tool(expired_hash, "read_file", {"path": "/srv/readme.md"}),
    }
    default_exchanges = [
        _tool(default_hash, "delete_file", {"path": "/"}),
        _tool(default_hash, "transfer_funds", {"amount": 10_000_000}),
        make_exchange(default_hash, message(thinking("Be honest and transparent."), text("Hi."))),
        make_exchange(default_hash, error_body("overloaded_error", "Overloaded"), status=529,
                      outcome=exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR),
    ]
    await observer_stack.ingest([*cases.values(), *default_exchanges])
    found = await observer_stack.traces_by_exchange(
        [exchange.exchange_id for exchange in [*cases.values(), *default_exchanges]])
    trace = {name: found[exchange.exchange_id][0] for name, exchange in cases.items()}

    expected_violations = {
        "bounded": set(),
        "forbidden": {"forbidden_action", "unbounded_action"},  # not in bounded_actions either
        "unbounded": {"unbounded_action"},
        "escalate_trigger": {"missed_escalation"},
        "deny_trigger": {"missed_escalation"},
        "log_trigger": set(),
        "over_limit": {"missed_escalation"},
        "near_limit": set(),
        "expired": {"card_expired"},
    }
    for name, violations in expected_violations.items():
        assert _kinds(trace[name])[0] == violations, name
        assert trace[name].verification.verified is (not violations), name
    assert "trigger_logged" in _kinds(trace["log_trigger"])[1]
    assert "near_boundary" in _kinds(trace["near_limit"])[1]
    assert trace["forbidden"].action.category == "forbidden"
    assert trace["escalate_trigger"].escalation.required and trace["escalate_trigger"].action.category == \
        "escalation_trigger"
    assert trace["bounded"].card_id == strict_card_id == trace["bounded"].verification.card_id
    assert {"card_reference", "forbidden", "autonomy", "escalation", "max_autonomous_value", "values"} <= set(
        trace["bounded"].verification.checks_performed)
    assert "card_expiration" in trace["expired"].verification.checks_performed

    for exchange in default_exchanges:
        for default_trace in found[exchange.exchange_id]:
            assert default_trace.agent_id == default_id
            assert default_trace.verification.verified, list(default_trace.verification.violations)
            assert not default_trace.verification.violations

    # The aap package agrees on the violations it knows; ours may find more (it cannot read
    # `action_name == ...` conditions, for one). It flags every action under an empty
    # bounded_actions, so it runs on the strict card only.
    card = (
        await observer_stack.registry_stub.GetActiveCard(rpb.GetActiveCardRequest(agent_id=strict_id))
    ).card
    card_dict = json_format.MessageToDict(card, preserving_proto_field_name=True)
    for name in expected_violations:
        if name == "expired":
            continue
        theirs = aap.verify_trace(_aap_dict(trace[name]), card_dict)
        their_kinds = {str(getattr(v.type, "value", v.type)) for v in theirs.violations}
        assert their_kinds <= _kinds(trace[name])[0], (name, their_kinds)
        assert bool(their_kinds) <= bool(_kinds(trace[name])[0])
        if name in ("bounded", "unbounded"):
            assert their_kinds == _kinds(trace[name])[0], (name, their_kinds)
    assert "forbidden_action" in {str(getattr(v.type, "value", v.type)) for v in aap.verify_trace(
        _aap_dict(trace["forbidden"]), card_dict).violations}


FORBID_DELETE: dict[str, Any] = {**STRICT_CARD, "autonomy": {
    "bounded_actions": [], "forbidden_actions": ["delete_file"], "escalation_triggers": []}}
FORBID_READ: dict[str, Any] = {**STRICT_CARD, "autonomy": {
    "bounded_actions": [], "forbidden_actions": ["read_file"], "escalation_triggers": []}}


async def _put_at(observer_stack: ObserverStack, agent_id: str, agent_hash: str,
                  card: dict[str, Any]) -> tuple[str, datetime]:
    """Stores a card; returns its id and a moment just after the Registry stored it."""
    card_id = await observer_stack.put_card(agent_id, agent_hash, json.dumps(card))
    await asyncio.sleep(0.01)
    return card_id, datetime.now(UTC)


async def test_each_call_is_checked_against_the_card_in_force_when_it_started(
        observer_stack: ObserverStack) -> None:
    # Cached like a busy production observer (a minute): no cache may serve a card for a call
    # that started after a newer card was stored.
    await observer_stack.stop_observer()
    observer_stack.observer_overrides = {"observer_card_ttl": 60.0}
    await observer_stack.start_observer()
    agent_id, agent_hash = await observer_stack.agent()
    default_id = (await observer_stack.registry_stub.GetActiveCard(
        rpb.GetActiveCardRequest(agent_id=agent_id))).card.card_id
    before_any = datetime.now(UTC)
    await asyncio.sleep(0.01)
    delete_id, after_delete = await _put_at(observer_stack, agent_id, agent_hash, FORBID_DELETE)

    # A call made under the first card, traced at once (the observer now has the card cached).
    first = _tool(agent_hash, "delete_file", {"path": "/a"}, ended_at=after_delete + timedelta(seconds=1))
    await observer_stack.ingest([first])
    (first_trace,) = await observer_stack.traces_of(first.exchange_id)
    assert first_trace.card_id == delete_id and not first_trace.verification.verified

    read_id, after_read = await _put_at(observer_stack, agent_id, agent_hash, FORBID_READ)
    exchanges = {
        # started before any card was uploaded: the default card
        "early": _tool(agent_hash, "delete_file", {"path": "/b"}, ended_at=before_any),
        # started under the first card, arriving late (after the second was stored)
        "late": _tool(agent_hash, "delete_file", {"path": "/c"},
                      ended_at=after_delete + timedelta(seconds=0.95)),
        # started right after the second card was stored, inside the old cache's lifetime
        "new": _tool(agent_hash, "read_file", {"path": "/d"}, ended_at=after_read + timedelta(seconds=0.95)),
    }
    await observer_stack.ingest(exchanges.values())
    found = await observer_stack.traces_by_exchange([e.exchange_id for e in exchanges.values()])
    traces = {name: found[exchange.exchange_id][0] for name, exchange in exchanges.items()}
    assert traces["early"].card_id == default_id and traces["early"].verification.verified
    assert traces["late"].card_id == delete_id
    assert _kinds(traces["late"])[0] == {"forbidden_action"}
    assert traces["new"].card_id == read_id
    assert _kinds(traces["new"])[0] == {"forbidden_action"}
    assert {t.verification.card_id for t in traces.values()} == {default_id, delete_id, read_id}

    # Processing the same exchanges again, on a restarted observer and on a second one running
    # beside it (cold caches), gives the same card and the same verdict.
    await observer_stack.stop_observer()
    restarted = await observer_stack.start_observer()
    second = await build_observer(
        observer_stack.observer_settings.model_copy(update={"observer_poll_interval": 5.0}),
        address="127.0.0.1:0",
    )
    try:
        for observer in (restarted, second):
            for name, exchange in exchanges.items():
                item = ClaimedExchange(
                    exchange.exchange_id,
                    agent_hash,
                    None,
                    None,
                    exchange.SerializeToString(),
                    attempts=1,
                    # Received a while ago (they were processed once already): a history check
                    # is done again only for an exchange received within the grace.
                    received_at=datetime.now(UTC) - timedelta(minutes=5),
                )
                result = await observer.components.processor.process(item)
                assert isinstance(result, Finished), result
                (again,) = [stored.trace for stored in result.traces]
                assert again["card_id"] == traces[name].card_id, name
                violations = {v["type"] for v in again["verification"]["violations"]}
                assert violations == _kinds(traces[name])[0], name
    finally:
        await second.stop(0.2)
