"""Cards: normalising unified and legacy cards, naming the field of every error, and the default card."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from aap import AlignmentCard
from google.protobuf.json_format import ParseDict

from smoltbot.core.aap.cards import (
    CARD_VERSION,
    MAX_ACTIONS,
    MAX_CARD_BYTES,
    MAX_CARD_CONDITION_TERMS,
    MAX_ESCALATION_TRIGGERS,
    default_card,
    normalize_card,
)
from smoltbot.core.aap.conditions import MAX_CONDITION_TERMS
from smoltbot.core.errors import InvalidArgument
from smoltbot.v1 import card_pb2

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def unified_card(**overrides):
    card = {
        "card_version": CARD_VERSION,
        "card_id": "ac-given",
        "agent_id": "agent-1",
        "issued_at": "2026-04-26T00:00:00Z",
        "expires_at": "2027-04-26T00:00:00+02:00",
        "principal": {
            "type": "human",
            "identifier": "mailto:owner@example.com",
            "relationship": "delegated_authority",
        },
        "values": {
            "declared": ["principal_benefit", "transparency", "speed"],
            "definitions": {"speed": {"name": "Speed", "description": "Finish quickly", "priority": 2}},
        },
        "autonomy": {
            "bounded_actions": ["read_file", "search"],
            "forbidden_actions": ["delete_file"],
            "escalation_triggers": [
                {
                    "condition": 'action_name == "bash" and command contains "rm -rf"',
                    "action": "deny",
                    "reason": "destructive",
                },
            ],
            "max_autonomous_value": {"amount": 100, "currency": "EUR"},
        },
        "audit": {"retention_days": 30, "queryable": True, "query_endpoint": "https://example.com/traces"},
        "extensions": {"vendor": {"x": 1}},
    }
    card.update(overrides)
    return card


LEGACY_SPEC_EXAMPLE = {
    "aap_version": "0.1.0",
    "card_id": "ac-f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "agent_id": "did:web:shopping.agent.example.com",
    "issued_at": "2026-01-31T12:00:00Z",
    "expires_at": "2026-07-31T12:00:00Z",
    "principal": {
        "type": "human",
        "relationship": "delegated_authority",
        "escalation_contact": "mailto:user@example.com",
    },
    "values": {
        "declared": ["principal_benefit", "transparency", "minimal_data"],
        "conflicts_with": ["deceptive_marketing", "hidden_fees"],
        "hierarchy": "lexicographic",
    },
    "autonomy_envelope": {
        "bounded_actions": ["search", "compare", "recommend", "add_to_cart"],
        "escalation_triggers": [
            {
                "condition": 'action_type == "purchase"',
                "action": "escalate",
                "reason": "Purchases require approval",
            },
            {"condition": "purchase_value > 100", "action": "escalate", "reason": "Exceeds spending limit"},
            {
                "condition": "shares_personal_data",
                "action": "escalate",
                "reason": "Data sharing requires consent",
            },
        ],
        "max_autonomous_value": {"amount": 100, "currency": "USD"},
        "forbidden_actions": ["store_payment_credentials", "subscribe_to_services"],
    },
    "audit_commitment": {
        "trace_format": "ap-trace-v1",
        "retention_days": 90,
        "storage": {"type": "local"},
        "queryable": True,
        "query_endpoint": "https://shopping.agent.example.com/api/v1/traces",
        "tamper_evidence": "append_only",
    },
    "extensions": {"a2a": {"agent_card_url": "https://shopping.agent.example.com/.well-known/agent.json"}},
}


def assert_valid_everywhere(card):
    AlignmentCard.from_dict(card)
    ParseDict(card, card_pb2.AlignmentCard())


def field_of(data, **kwargs):
    with pytest.raises(InvalidArgument) as info:
        normalize_card(data, **{"agent_id": "agent-1", "now": NOW, **kwargs})
    return info.value.field


def test_unified_card_is_kept_and_timestamps_become_utc():
    card = normalize_card(unified_card(), agent_id="agent-1", now=NOW)
    assert card["card_id"] == "ac-given"
    assert card["expires_at"] == "2027-04-25T22:00:00Z"
    assert card["autonomy"]["escalation_triggers"][0]["action"] == "deny"
    assert card["values"]["definitions"]["speed"]["priority"] == 2
    assert card["extensions"] == {"vendor": {"x": 1}}
    assert_valid_everywhere(card)


def test_normalising_twice_changes_nothing():
    once = normalize_card(unified_card(), agent_id="agent-1", now=NOW)
    assert normalize_card(copy.deepcopy(once), agent_id="agent-1", now=NOW) == once


def test_legacy_card_is_migrated_to_the_unified_shape():
    card = normalize_card(LEGACY_SPEC_EXAMPLE, agent_id="did:web:shopping.agent.example.com", now=NOW)
    assert card["card_version"] == CARD_VERSION
    assert "aap_version" not in card and "autonomy_envelope" not in card and "audit_commitment" not in card
    assert card["autonomy"]["bounded_actions"] == ["search", "compare", "recommend", "add_to_cart"]
    assert len(card["autonomy"]["escalation_triggers"]) == 3
    assert card["audit"]["query_endpoint"] == "https://shopping.agent.example.com/api/v1/traces"
    # The unified shape rejects audit.storage; it is kept, not lost.
    assert "storage" not in card["audit"]
    assert card["extensions"]["aap_legacy"]["audit_storage"] == {"type": "local"}
    assert card["extensions"]["a2a"]["agent_card_url"].endswith("agent.json")
    # A typed principal needs an identifier now: the escalation contact stands in.
    assert card["principal"]["identifier"] == "mailto:user@example.com"
    assert_valid_everywhere(card)


def test_missing_ids_and_issue_time_are_filled():
    data = unified_card()
    del data["card_id"], data["issued_at"], data["agent_id"]
    card = normalize_card(data, agent_id="agent-1", now=NOW)
    assert card["agent_id"] == "agent-1"
    assert card["card_id"].startswith("ac-") and len(card["card_id"]) == 35
    assert card["issued_at"] == "2026-05-01T12:00:00Z"


def test_a_given_card_id_replaces_the_cards_own():
    card = normalize_card(unified_card(), agent_id="agent-1", card_id="ac-assigned", now=NOW)
    assert card["card_id"] == "ac-assigned"


def test_card_for_another_agent_is_rejected():
    assert field_of(unified_card(agent_id="agent-2")) == "agent_id"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c.update(forbiden_actions=[]), "forbiden_actions"),
        (lambda c: c["autonomy"].update(forbiden_actions=["x"]), "autonomy.forbiden_actions"),
        (lambda c: c["principal"].update(nmae="x"), "principal.nmae"),
        (lambda c: c["audit"].update(storage={"type": "local"}), "audit.storage"),
        (
            lambda c: c["autonomy"]["escalation_triggers"][0].update(when="x"),
            "autonomy.escalation_triggers[0].when",
        ),
        (lambda c: c["values"]["definitions"]["speed"].update(weight=1), "values.definitions.speed.weight"),
        (
            lambda c: c["autonomy"]["max_autonomous_value"].update(limit=1),
            "autonomy.max_autonomous_value.limit",
        ),
    ],
)
def test_unknown_keys_are_rejected_with_their_field(mutate, field):
    data = unified_card()
    mutate(data)
    assert field_of(data) == field


def test_extensions_may_hold_anything():
    card = normalize_card(
        unified_card(extensions={"anything": {"goes": [1, 2]}}), agent_id="agent-1", now=NOW
    )
    assert card["extensions"] == {"anything": {"goes": [1, 2]}}


def test_unparseable_condition_names_the_trigger():
    data = unified_card()
    data["autonomy"]["escalation_triggers"].append(
        {"condition": "amount >", "action": "escalate", "reason": "r"}
    )
    assert field_of(data) == "autonomy.escalation_triggers[1].condition"


def test_legacy_errors_name_the_legacy_field():
    data = copy.deepcopy(LEGACY_SPEC_EXAMPLE)
    data["autonomy_envelope"]["escalation_triggers"][0]["condition"] = "purchase_value =>"
    assert field_of(data, agent_id=data["agent_id"]) == "autonomy_envelope.escalation_triggers[0].condition"
    data = copy.deepcopy(LEGACY_SPEC_EXAMPLE)
    data["audit_commitment"]["retention_days"] = -1
    assert field_of(data, agent_id=data["agent_id"]) == "audit_commitment.retention_days"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda c: c["autonomy"]["escalation_triggers"][0].update(action="explode"),
            "autonomy.escalation_triggers[0].action",
        ),
        (lambda c: c["principal"].pop("identifier"), "principal"),
        (lambda c: c["autonomy"].update(bounded_actions=["delete_file"]), "autonomy"),
        (lambda c: c["values"].update(declared=["principal_benefit", "undefined_custom"]), "values"),
        (lambda c: c["audit"].pop("query_endpoint"), "audit"),
        (lambda c: c.pop("values"), "values"),
        (lambda c: c.update(autonomy_mode="sometimes"), "autonomy_mode"),
        (lambda c: c.update(card_version="unified/1999-01-01"), "card_version"),
        (lambda c: c.update(expires_at="2026-01-01T00:00:00Z"), "expires_at"),
        (lambda c: c.update(issued_at="not a date"), "issued_at"),
    ],
)
def test_invalid_cards_name_the_field(mutate, field):
    data = unified_card()
    mutate(data)
    assert field_of(data) == field


def test_a_card_must_be_an_object():
    with pytest.raises(InvalidArgument):
        normalize_card(["not", "a", "card"], agent_id="agent-1")  # type: ignore[arg-type]


def test_mixed_legacy_and_unified_sections_are_rejected():
    data = copy.deepcopy(LEGACY_SPEC_EXAMPLE)
    data["autonomy"] = data["autonomy_envelope"]
    assert field_of(data, agent_id=data["agent_id"]) == "autonomy"


def test_default_card_restricts_nothing_and_is_valid():
    card = default_card(
        "agent-1",
        card_id="ac-1",
        issued_at=NOW,
        query_endpoint="http://localhost:8080/v1/agents/agent-1/traces",
    )
    assert card["autonomy"]["bounded_actions"] == []
    assert not card["autonomy"].get("forbidden_actions")
    assert all(t["action"] == "log" for t in card["autonomy"]["escalation_triggers"])
    assert set(card["values"]["declared"]) == {
        "transparency",
        "honesty",
        "harm_prevention",
        "principal_benefit",
        "user_control",
    }
    assert card["principal"] == {"type": "unspecified", "relationship": "delegated_authority"}
    assert card["autonomy_mode"] == card["integrity_mode"] == "observe"
    assert card["audit"] == {
        "retention_days": 90,
        "queryable": True,
        "query_endpoint": "http://localhost:8080/v1/agents/agent-1/traces",
        "trace_format": "ap-trace-v1",
        "tamper_evidence": "append_only",
    }
    assert normalize_card(card, agent_id="agent-1", now=NOW) == card
    assert_valid_everywhere(card)


def _with_autonomy(**autonomy):
    card = unified_card()
    card["autonomy"] = {**card["autonomy"], **autonomy}
    return card


def _limit_error(data):
    with pytest.raises(InvalidArgument) as info:
        normalize_card({**data, "agent_id": "agent-1"}, agent_id="agent-1", now=NOW)
    assert info.value.reason == "LIMIT_EXCEEDED"
    return info.value.field, info.value.message


def test_cards_at_the_limits_are_accepted():
    triggers = [{"condition": f"amount > {i}", "action": "log", "reason": "r"}
                for i in range(MAX_ESCALATION_TRIGGERS)]
    card = normalize_card(_with_autonomy(escalation_triggers=triggers,
                                         bounded_actions=[f"tool_{i}" for i in range(MAX_ACTIONS)]),
                          agent_id="agent-1", now=NOW)
    assert len(card["autonomy"]["escalation_triggers"]) == MAX_ESCALATION_TRIGGERS


@pytest.mark.parametrize(
    ("mutate", "field", "limit"),
    [
        (lambda: _with_autonomy(escalation_triggers=[{"condition": "a", "action": "log", "reason": "r"}]
                                * (MAX_ESCALATION_TRIGGERS + 1)),
         "autonomy.escalation_triggers", "MAX_ESCALATION_TRIGGERS"),
        (lambda: _with_autonomy(forbidden_actions=[f"t{i}" for i in range(MAX_ACTIONS + 1)]),
         "autonomy.forbidden_actions", "MAX_ACTIONS"),
        (lambda: _with_autonomy(bounded_actions=[f"t{i}" for i in range(MAX_ACTIONS + 1)]),
         "autonomy.bounded_actions", "MAX_ACTIONS"),
        (lambda: {**unified_card(), "values": {"declared": [f"v{i}" for i in range(MAX_ACTIONS + 1)]}},
         "values.declared", "MAX_ACTIONS"),
        (lambda: _with_autonomy(escalation_triggers=[
            {"condition": " or ".join(f"a == {i}" for i in range(MAX_CONDITION_TERMS + 1)), "action": "log",
             "reason": "r"}]),
         "autonomy.escalation_triggers[0].condition", "MAX_CONDITION_TERMS"),
        (lambda: _with_autonomy(escalation_triggers=[
            {"condition": "a in [" + ",".join(str(i) for i in range(MAX_CONDITION_TERMS)) + "]",
             "action": "log", "reason": "r"}]),
         "autonomy.escalation_triggers[0].condition", "MAX_CONDITION_TERMS"),
        (lambda: _with_autonomy(escalation_triggers=[
            {"condition": " or ".join(f"a == {i}" for i in range(MAX_CONDITION_TERMS)), "action": "log",
             "reason": "r"}] * (MAX_CARD_CONDITION_TERMS // MAX_CONDITION_TERMS + 1)),
         "autonomy.escalation_triggers", "MAX_CARD_CONDITION_TERMS"),
        (lambda: {**unified_card(), "extensions": {"blob": "x" * MAX_CARD_BYTES}}, "card", "MAX_CARD_BYTES"),
        (lambda: {**LEGACY_SPEC_EXAMPLE, "autonomy_envelope": {
            **LEGACY_SPEC_EXAMPLE["autonomy_envelope"], "forbidden_actions": ["x"] * (MAX_ACTIONS + 1)}},
         "autonomy_envelope.forbidden_actions", "MAX_ACTIONS"),
    ],
)
def test_cards_over_a_limit_are_rejected_naming_the_field_and_the_limit(mutate, field, limit):
    got_field, message = _limit_error(mutate())
    assert got_field == field
    assert limit in message
