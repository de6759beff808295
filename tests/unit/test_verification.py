"""Verification: every violation type live, honest escalation, and agreement with aap.verify_trace."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import aap
import pytest

from smoltbot.core.aap.cards import default_card
from smoltbot.core.aap.verification import SEVERITY, apply_escalation, verify_trace

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

STRICT_CARD = {
    "card_version": "unified/2026-04-26",
    "card_id": "ac-strict",
    "agent_id": "agent-1",
    "issued_at": "2026-01-01T00:00:00Z",
    "expires_at": "2030-01-01T00:00:00Z",
    "autonomy_mode": "observe",
    "integrity_mode": "observe",
    "principal": {
        "type": "human",
        "identifier": "mailto:o@example.com",
        "relationship": "delegated_authority",
    },
    "values": {"declared": ["principal_benefit", "transparency", "harm_prevention"]},
    "autonomy": {
        "bounded_actions": ["read_file", "search", "respond", "pay", "bash", "exec: run commands"],
        "forbidden_actions": ["delete_file", "Format_Disk"],
        "escalation_triggers": [
            {
                "condition": 'action_name == "bash" and command contains "rm -rf"',
                "action": "deny",
                "reason": "destructive commands",
            },
            {
                "condition": 'action_type == "execute" and action_name == "pay"',
                "action": "escalate",
                "reason": "payments need approval",
            },
            {"condition": 'action_name == "search"', "action": "log", "reason": "searches are logged"},
        ],
        "max_autonomous_value": {"amount": 100, "currency": "EUR"},
    },
    "audit": {
        "retention_days": 90,
        "queryable": True,
        "query_endpoint": "https://example.com/traces",
        "trace_format": "ap-trace-v1",
        "tamper_evidence": "append_only",
    },
}


def make_trace(
    name="read_file",
    action_type="execute",
    parameters=None,
    values=None,
    card_id="ac-strict",
    confidence=0.8,
    escalation=None,
    category="bounded",
):
    trace = {
        "trace_id": "tr-ex-0",
        "agent_id": "agent-1",
        "card_id": card_id,
        "timestamp": "2026-06-01T11:59:00Z",
        "action": {"type": action_type, "name": name, "category": category, "parameters": parameters or {}},
        "decision": {
            "alternatives_considered": [{"option_id": "taken", "description": "the action"}],
            "selected": "taken",
            "selection_reasoning": "because",
            "values_applied": values if values is not None else ["transparency"],
            "confidence": confidence,
        },
        "context": {"metadata": {"exchange_id": "ex"}},
    }
    if escalation is not None:
        trace["escalation"] = escalation
    return trace


def observed(trace, card=STRICT_CARD):
    """A trace as our builder stores it: escalation applied from the card."""
    return apply_escalation(copy.deepcopy(trace), card)


def types(result):
    return sorted(v["type"] for v in result["violations"])


def aap_types(trace, card):
    return sorted(v.type.value for v in aap.verify_trace(trace, card).violations)


# --- each violation type, from a fixture that triggers it -----------------------------


def test_compliant_trace_is_verified():
    result = verify_trace(observed(make_trace()), STRICT_CARD, now=NOW)
    assert result["verified"] and result["violations"] == []
    assert result["card_id"] == "ac-strict"
    assert result["checks_performed"] == [
        "card_reference",
        "card_expiration",
        "forbidden",
        "autonomy",
        "escalation",
        "max_autonomous_value",
        "values",
    ]


def test_card_mismatch():
    result = verify_trace(observed(make_trace(card_id="ac-other")), STRICT_CARD, now=NOW)
    assert types(result) == ["card_mismatch"]
    assert result["violations"][0]["severity"] == "critical" and not result["verified"]


def test_card_expired_at_verification_time_or_trace_time():
    card = {**STRICT_CARD, "expires_at": "2026-05-01T00:00:00Z"}
    assert types(verify_trace(observed(make_trace(), card), card, now=NOW)) == ["card_expired"]
    card = {**STRICT_CARD, "expires_at": "2026-06-01T11:58:00Z"}  # after now? no: before the trace time
    assert types(verify_trace(observed(make_trace(), card), card, now=NOW - timedelta(hours=1))) == [
        "card_expired"
    ]
    assert verify_trace(observed(make_trace(), card), card, now=NOW)["violations"][0]["severity"] == "high"


def test_invalid_expiry_is_a_warning():
    card = {**STRICT_CARD, "expires_at": "someday"}
    result = verify_trace(observed(make_trace(), card), card, now=NOW)
    assert result["verified"] and [w["type"] for w in result["warnings"]] == ["invalid_expiry"]


def test_forbidden_action_matches_case_insensitively():
    for name in ("delete_file", "Delete_File", "format_disk"):
        result = verify_trace(observed(make_trace(name=name)), STRICT_CARD, now=NOW)
        assert "forbidden_action" in types(result), name
        violation = next(v for v in result["violations"] if v["type"] == "forbidden_action")
        assert violation["severity"] == "critical" and violation["trace_field"] == "action.name"
    assert observed(make_trace(name="delete_file"))["action"]["category"] == "forbidden"


def test_unbounded_action():
    result = verify_trace(observed(make_trace(name="send_email")), STRICT_CARD, now=NOW)
    assert types(result) == ["unbounded_action"]
    assert result["violations"][0]["severity"] == "high"


def test_bounded_entries_may_carry_a_description():
    assert verify_trace(observed(make_trace(name="exec")), STRICT_CARD, now=NOW)["verified"]


def test_empty_bounded_actions_restrict_nothing():
    card = copy.deepcopy(STRICT_CARD)
    card["autonomy"]["bounded_actions"] = []
    result = verify_trace(observed(make_trace(name="anything_at_all"), card), card, now=NOW)
    assert result["verified"] and "autonomy" not in result["checks_performed"]


def test_compound_action_names_are_checked_part_by_part():
    assert "forbidden_action" in types(
        verify_trace(make_trace(name="read_file, delete_file"), STRICT_CARD, now=NOW)
    )
    assert "unbounded_action" in types(
        verify_trace(make_trace(name="read_file, mystery"), STRICT_CARD, now=NOW)
    )
    assert verify_trace(make_trace(name="read_file, search"), STRICT_CARD, now=NOW)["verified"]


def test_deny_trigger_match_is_a_missed_escalation_because_nothing_was_held():
    trace = observed(make_trace(name="bash", parameters={"command": "rm -rf /srv/data"}))
    escalation = trace["escalation"]
    assert escalation["evaluated"] and escalation["required"]
    assert trace["action"]["category"] == "escalation_trigger"
    assert escalation["triggers_checked"][0] == {
        "trigger": STRICT_CARD["autonomy"]["escalation_triggers"][0]["condition"],
        "matched": True,
        "value_observed": {"action_name": "bash", "command": "rm -rf /srv/data"},
    }
    assert "only observes" in escalation["reason"]
    result = verify_trace(trace, STRICT_CARD, now=NOW)
    assert types(result) == ["missed_escalation"]
    assert result["violations"][0]["severity"] == "high"
    assert result["violations"][0]["trace_field"] == "escalation.required"


def test_escalate_trigger_without_escalation_required_is_a_missed_escalation():
    trace = make_trace(name="pay", escalation={"evaluated": True, "required": False, "reason": "none"})
    assert types(verify_trace(trace, STRICT_CARD, now=NOW)) == ["missed_escalation"]


def test_a_trace_that_did_escalate_is_not_a_missed_escalation():
    trace = make_trace(
        name="pay",
        action_type="escalate",
        escalation={"evaluated": True, "required": True, "reason": "asked the owner"},
    )
    assert verify_trace(trace, STRICT_CARD, now=NOW)["verified"]
    trace = make_trace(
        name="pay",
        escalation={
            "evaluated": True,
            "required": True,
            "reason": "r",
            "escalation_id": "esc-1",
            "escalation_status": "timeout",
        },
    )
    result = verify_trace(trace, STRICT_CARD, now=NOW)
    assert result["verified"] and [w["type"] for w in result["warnings"]] == ["escalation_timeout"]


def test_log_trigger_only_logs():
    trace = observed(make_trace(name="search"))
    assert trace["escalation"]["required"] is False and trace["action"]["category"] == "bounded"
    assert "Logged by trigger" in trace["escalation"]["reason"]
    result = verify_trace(trace, STRICT_CARD, now=NOW)
    assert result["verified"]
    assert [w["type"] for w in result["warnings"]] == ["trigger_logged"]


def test_amount_over_max_autonomous_value_needs_escalation():
    trace = observed(make_trace(name="pay", action_type="recommend", parameters={"amount": 250}))
    assert trace["escalation"]["required"] and trace["action"]["category"] == "escalation_trigger"
    result = verify_trace(trace, STRICT_CARD, now=NOW)
    assert types(result) == ["missed_escalation"]
    assert result["violations"][0]["trace_field"] == "action.parameters.amount"


def test_amount_within_ten_percent_of_the_limit_is_near_boundary():
    result = verify_trace(
        observed(make_trace(name="pay", action_type="recommend", parameters={"amount": "95"})),
        STRICT_CARD,
        now=NOW,
    )
    assert result["verified"]
    assert [(w["type"], w["trace_field"]) for w in result["warnings"]] == [
        ("near_boundary", "action.parameters.amount")
    ]
    # A non-monetary number is not a transaction value.
    result = verify_trace(observed(make_trace(parameters={"timeout": 120000})), STRICT_CARD, now=NOW)
    assert result["verified"] and result["warnings"] == []


def test_low_confidence_is_near_boundary_as_in_aap():
    result = verify_trace(observed(make_trace(confidence=0.2)), STRICT_CARD, now=NOW)
    assert [w["trace_field"] for w in result["warnings"]] == ["decision.confidence"]


def test_undeclared_value():
    result = verify_trace(observed(make_trace(values=["transparency", "speed"])), STRICT_CARD, now=NOW)
    assert types(result) == ["undeclared_value"]
    assert result["violations"][0]["severity"] == "medium"


def test_signed_tamper_evidence_is_flagged_as_unenforced():
    card = copy.deepcopy(STRICT_CARD)
    card["audit"]["tamper_evidence"] = "signed"
    warnings = verify_trace(observed(make_trace(), card), card, now=NOW)["warnings"]
    assert [w["type"] for w in warnings] == ["tamper_evidence_unenforced"]


def test_unparseable_trigger_in_an_unvalidated_card_is_reported_not_ignored():
    card = copy.deepcopy(STRICT_CARD)
    card["autonomy"]["escalation_triggers"] = [{"condition": "amount >", "action": "deny", "reason": "r"}]
    warnings = verify_trace(make_trace(), card, now=NOW)["warnings"]
    assert [w["type"] for w in warnings] == ["condition_unparseable"]


def test_severities_are_aaps():
    from aap.verification.models import VIOLATION_SEVERITY

    assert {k.value: v.value for k, v in VIOLATION_SEVERITY.items()} == SEVERITY


def test_the_default_card_raises_nothing_on_ordinary_traces():
    card = default_card(
        "agent-1", card_id="ac-default", issued_at=NOW - timedelta(days=1), query_endpoint="http://x"
    )
    for name, action_type, params in [
        ("respond", "recommend", {}),
        ("bash", "execute", {"command": "rm -rf build/"}),
        ("web_search", "execute", {"query": "x"}),
        ("pay", "execute", {"amount": 10_000}),
    ]:
        trace = observed(
            make_trace(
                name=name,
                action_type=action_type,
                parameters=params,
                card_id="ac-default",
                values=["honesty"],
            ),
            card,
        )
        result = verify_trace(trace, card, now=NOW)
        assert result["verified"] and result["violations"] == [], name
        assert trace["escalation"] == {
            "evaluated": True,
            "triggers_checked": [],
            "required": False,
            "reason": "The card declares no escalation triggers.",
        }


# --- agreement with aap.verify_trace --------------------------------------------------

# Cards without the two documented differences (empty bounded_actions, log triggers).
COMPARABLE_CARD = copy.deepcopy(STRICT_CARD)
COMPARABLE_CARD["autonomy"]["escalation_triggers"] = [
    {"condition": 'action_type == "recommend"', "action": "escalate", "reason": "advice needs review"},
    {"condition": "amount > 500", "action": "deny", "reason": "too much"},
    {"condition": "shares_personal_data", "action": "escalate", "reason": "consent"},
]
COMPARISON_TRACES = [
    make_trace(),
    make_trace(card_id="ac-else"),
    make_trace(name="delete_file"),
    make_trace(name="send_email"),
    make_trace(name="respond", action_type="recommend"),
    make_trace(name="pay", parameters={"amount": 800}),
    make_trace(name="pay", parameters={"amount": 50}),
    make_trace(values=["speed", "transparency"]),
    make_trace(name="read_file, delete_file"),
    {**make_trace(), "context": {"shares_personal_data": True}},
    make_trace(name="search", action_type="recommend", values=["greed"], card_id="ac-x"),
]


@pytest.mark.parametrize("index", range(len(COMPARISON_TRACES)))
@pytest.mark.parametrize("with_escalation_applied", [False, True])
def test_ours_finds_everything_aap_finds(index, with_escalation_applied):
    trace = copy.deepcopy(COMPARISON_TRACES[index])
    if with_escalation_applied:
        apply_escalation(trace, COMPARABLE_CARD)
    theirs = set(aap_types(trace, COMPARABLE_CARD))
    ours = set(types(verify_trace(trace, COMPARABLE_CARD, now=datetime.now(UTC))))
    assert theirs <= ours


def test_ours_finds_more_where_docs_aap_md_says_so():
    now = datetime.now(UTC)
    # 1. A required escalation that smoltbot observed going ahead: aap takes
    #    escalation.required=true as "escalated"; we know nothing was held.
    trace = observed(make_trace(name="pay", parameters={"amount": 800}), COMPARABLE_CARD)
    assert "missed_escalation" not in aap_types(trace, COMPARABLE_CARD)
    assert "missed_escalation" in types(verify_trace(trace, COMPARABLE_CARD, now=now))
    # 2. Triggers aap cannot parse (action_name ==, contains, and/or).
    card = copy.deepcopy(STRICT_CARD)
    card["autonomy"]["escalation_triggers"] = card["autonomy"]["escalation_triggers"][:1]
    trace = observed(make_trace(name="bash", parameters={"command": "rm -rf /"}), card)
    trace["escalation"]["required"] = False
    assert "missed_escalation" not in aap_types(trace, card)
    assert "missed_escalation" in types(verify_trace(trace, card, now=now))
    # 3. Unbounded checked whatever category the producer claimed.
    trace = make_trace(name="send_email", category="escalation_trigger")
    assert "unbounded_action" not in aap_types(trace, STRICT_CARD)
    assert "unbounded_action" in types(verify_trace(trace, STRICT_CARD, now=now))
    # 4. Forbidden names compared case-insensitively, and any part of a compound name.
    assert "forbidden_action" not in aap_types(make_trace(name="Delete_File"), STRICT_CARD)
    assert "forbidden_action" in types(verify_trace(make_trace(name="Delete_File"), STRICT_CARD, now=now))


def test_where_aap_finds_more_by_design():
    now = datetime.now(UTC)
    # Empty bounded_actions: "not restricted" for us, "nothing permitted" for aap.
    card = default_card("agent-1", card_id="ac-strict", issued_at=NOW, query_endpoint="http://x")
    trace = observed(make_trace(), card)
    assert aap_types(trace, card) == ["unbounded_action"]
    assert types(verify_trace(trace, card, now=now)) == []
    # aap reads only the start of a compound condition: 'action_type == "execute" and
    # action_name == "pay"' fires for every executed action.
    trace = observed(make_trace(name="read_file"))
    assert aap_types(trace, STRICT_CARD) == ["missed_escalation"]
    assert types(verify_trace(trace, STRICT_CARD, now=now)) == []
    # A `log` trigger: aap reports missed_escalation, we log (a warning).
    card = copy.deepcopy(STRICT_CARD)
    card["autonomy"]["escalation_triggers"] = [
        {"condition": "shares_personal_data", "action": "log", "reason": "r"}
    ]
    trace = observed({**make_trace(name="search"), "context": {"shares_personal_data": True}}, card)
    assert aap_types(trace, card) == ["missed_escalation"]
    assert types(verify_trace(trace, card, now=now)) == []


def test_no_action_checks_on_a_trace_that_records_a_failure():
    trace = make_trace(name="upstream_error", action_type="recommend", values=["speed"])
    trace["context"]["metadata"]["decision_kind"] = "failure"
    apply_escalation(trace, STRICT_CARD)
    assert trace["escalation"]["evaluated"] is False
    result = verify_trace(trace, STRICT_CARD, now=NOW)
    assert types(result) == ["undeclared_value"]  # card and value checks still run
    assert result["checks_performed"] == ["card_reference", "card_expiration", "values"]


def test_a_cards_conditions_are_parsed_once_and_reused_for_every_trace():
    from smoltbot.core.aap.verification import parsed_conditions

    card = {"card_id": "ac-parse-once", "autonomy": {"escalation_triggers": [
        {"condition": 'action_name == "send_email"', "action": "escalate", "reason": "r"},
        {"condition": "amount >", "action": "log", "reason": "unparseable"}]}}
    first = parsed_conditions(card)
    assert parsed_conditions(dict(card)) is first
    assert first[0].text == 'action_name == "send_email"' and isinstance(first[1], str)
    # Another version of the card (another id, or other conditions) is parsed on its own.
    assert parsed_conditions({**card, "card_id": "ac-other"}) is not first
    edited = {"card_id": "ac-parse-once", "autonomy": {"escalation_triggers": [
        {"condition": 'action_name == "x"', "action": "log", "reason": "r"}]}}
    assert parsed_conditions(edited)[0].text == 'action_name == "x"'
