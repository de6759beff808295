"""The card condition language: every form, clear parse errors, and parity with the aap package."""

from __future__ import annotations

import pytest
from aap.verification.api import _evaluate_condition as aap_evaluate

from smoltbot.core.aap.conditions import MAX_CONDITION_TERMS, parse


def _trace(parameters=None, metadata=None, context_extra=None, action_type="execute", name="bash"):
    context = {"metadata": metadata or {}, **(context_extra or {})}
    return {
        "trace_id": "tr-1",
        "action": {"type": action_type, "name": name, "category": "bounded", "parameters": parameters or {}},
        "decision": {"values_applied": [], "confidence": 0.8},
        "escalation": {"evaluated": True, "required": False},
        "context": context,
    }


def matched(condition: str, trace: dict) -> bool:
    return parse(condition).evaluate(trace)[0]


def test_action_type_equality():
    assert matched('action_type == "execute"', _trace())
    assert not matched('action_type == "recommend"', _trace())
    assert matched("action_type == 'execute'", _trace())
    assert matched('action_type != "recommend"', _trace())


def test_action_name_and_category():
    trace = _trace(name="delete_file")
    assert matched('action_name == "delete_file"', trace)
    assert not matched('action_name == "read_file"', trace)
    assert matched('action_category == "bounded"', trace)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("amount > 100", True),
        ("amount >= 150", True),
        ("amount < 150", False),
        ("amount <= 150", True),
        ("amount == 150", True),
        ("amount != 150", False),
        ("amount > 150.5", False),
        ("amount > -1", True),
    ],
)
def test_numeric_comparisons(condition, expected):
    assert matched(condition, _trace(parameters={"amount": 150})) is expected


def test_numeric_strings_are_coerced_like_aap():
    assert matched("amount > 100", _trace(parameters={"amount": "150"}))
    assert not matched("amount > 100", _trace(parameters={"amount": "lots"}))


def test_field_looked_up_in_parameters_then_metadata_then_context():
    assert matched("amount > 100", _trace(parameters={"amount": 500}))
    assert matched("amount > 100", _trace(metadata={"amount": 500}))
    assert matched("conversation_turn > 2", _trace(context_extra={"conversation_turn": 3}))
    # The same name in two places: a match in either place matches.
    both = _trace(parameters={"amount": 500}, metadata={"amount": 5})
    assert matched("amount > 100", both)
    assert matched("amount < 10", both)


def test_missing_field_never_matches_a_comparison():
    trace = _trace()
    for condition in ("amount > 1", "amount < 1", "amount == 1", "amount != 1", 'name == "x"'):
        assert not matched(condition, trace), condition
    assert matched("not amount > 1", trace)


def test_dotted_paths():
    trace = _trace(
        parameters={"path": "/etc/passwd", "options": {"force": True}}, metadata={"exchange_id": "ex1"}
    )
    assert matched('parameters.path == "/etc/passwd"', trace)
    assert matched('action.parameters.path contains "/etc"', trace)
    assert matched("options.force", trace)
    assert matched('metadata.exchange_id == "ex1"', trace)
    assert matched("decision.confidence >= 0.8", trace)


def test_bare_boolean_flags():
    assert matched("shares_personal_data", _trace(parameters={"shares_personal_data": True}))
    assert matched("shares_personal_data", _trace(metadata={"shares_personal_data": 1}))
    assert matched("shares_personal_data", _trace(context_extra={"shares_personal_data": True}))
    assert not matched("shares_personal_data", _trace(parameters={"shares_personal_data": False}))
    assert not matched("shares_personal_data", _trace())


def test_in_list_and_contains():
    trace = _trace(parameters={"command": "sudo rm -rf /tmp/x", "tags": ["prod", "db"]}, name="bash")
    assert matched('action_name in ["bash", "shell"]', trace)
    assert not matched('action_name in ["read"]', trace)
    assert matched('command contains "rm -rf"', trace)
    assert not matched('command contains "RM -RF"', trace)
    assert matched('tags contains "prod"', trace)
    assert matched('contains(command, "sudo")', trace)
    assert matched('tags in ["prod"]', trace)


def test_boolean_operators_and_parentheses():
    trace = _trace(parameters={"amount": 150, "currency": "EUR"}, name="pay")
    assert matched('action_name == "pay" and amount > 100', trace)
    assert not matched('action_name == "pay" and amount > 1000', trace)
    assert matched('amount > 1000 or currency == "EUR"', trace)
    assert matched('not (amount > 1000 or currency == "USD")', trace)
    assert matched('(action_name == "x" or action_name == "pay") and not currency == "USD"', trace)
    assert matched('action_name == "pay" AND amount > 100', trace)
    assert matched('action_name == "pay" && !(amount > 1000)', trace)


def test_value_observed_reports_what_the_field_held():
    trace = _trace(parameters={"amount": 150, "command": "ls"})
    assert parse("amount > 100").evaluate(trace) == (True, 150)
    assert parse("amount > 1000").evaluate(trace) == (False, 150)
    assert parse("missing_field > 1").evaluate(trace) == (False, None)
    matched_, observed = parse('amount > 100 and command == "ls"').evaluate(trace)
    assert matched_ and observed == {"amount": 150, "command": "ls"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "amount >",
        "amount > > 1",
        '"a" == "b"',
        "x => 5",
        "(a",
        "a)",
        "a b",
        'a matches "x"',
        "a == [1, b]",
        "contains(a)",
        "a.",
        "amount = 5",
        "1 2",
    ],
)
def test_unparseable_conditions_raise_a_clear_value_error(text):
    with pytest.raises(ValueError, match=r"condition"):
        parse(text)


def test_overlong_or_deeply_nested_conditions_are_rejected():
    with pytest.raises(ValueError, match="at most"):
        parse("a or " * 1000 + "a")
    with pytest.raises(ValueError, match="nests deeper"):
        parse("not " * 100 + "a")


def test_parsing_never_evaluates_code():
    with pytest.raises(ValueError):
        parse("__import__('os').system('true')")


# --- parity with the aap package ------------------------------------------------------

# Conditions in the forms aap's `_evaluate_condition` understands completely.
AAP_FORMS = [
    'action_type == "execute"',
    'action_type == "recommend"',
    "amount > 100",
    "amount >= 150",
    "amount < 150",
    "amount <= 99",
    "amount == 150",
    "amount != 150",
    "amount > 99.5",
    "conversation_turn > 2",
    "shares_personal_data",
]
PARITY_TRACES = [
    _trace(),
    _trace(parameters={"amount": 150}),
    _trace(parameters={"amount": "150"}),
    _trace(parameters={"amount": 50}, action_type="recommend"),
    _trace(metadata={"amount": 150}),
    _trace(context_extra={"amount": 99, "conversation_turn": 3}),
    _trace(context_extra={"shares_personal_data": True}),
    _trace(context_extra={"shares_personal_data": False}),
    _trace(parameters={"amount": True}),
]


@pytest.mark.parametrize("condition", AAP_FORMS)
def test_every_form_aap_understands_evaluates_the_same(condition):
    for trace in PARITY_TRACES:
        assert matched(condition, trace) == aap_evaluate(condition, trace), trace


def test_where_aap_reads_one_place_ours_matches_a_superset():
    # aap reads context, then metadata, then parameters, and stops at the first hit;
    # a bare flag only in context. Ours matches whenever aap does, and more.
    traces = [
        _trace(parameters={"amount": 500}, metadata={"amount": 5}),
        _trace(parameters={"shares_personal_data": True}),
        _trace(metadata={"shares_personal_data": True}),
    ]
    for condition in ("amount > 100", "amount < 10", "shares_personal_data"):
        for trace in traces:
            if aap_evaluate(condition, trace):
                assert matched(condition, trace)
    assert matched("amount > 100", traces[0]) and not aap_evaluate("amount > 100", traces[0])
    assert matched("shares_personal_data", traces[1]) and not aap_evaluate("shares_personal_data", traces[1])


def test_aap_reads_only_a_prefix_of_compound_conditions():
    # Documented in docs/aap.md: aap's regexes match the start of the condition and
    # ignore the rest, so it fires on 'action_type == "execute" and ...' for every
    # execute action. Ours evaluates the whole condition.
    condition = 'action_type == "execute" and amount > 100'
    trace = _trace(parameters={"amount": 5})
    assert aap_evaluate(condition, trace) is True
    assert matched(condition, trace) is False


def test_conditions_with_too_many_terms_are_rejected_naming_the_limit():
    parse(" or ".join(f"a == {i}" for i in range(MAX_CONDITION_TERMS)))
    with pytest.raises(ValueError, match="MAX_CONDITION_TERMS"):
        parse(" or ".join(f"a == {i}" for i in range(MAX_CONDITION_TERMS + 1)))
    with pytest.raises(ValueError, match="MAX_CONDITION_TERMS"):
        parse("a in [" + ", ".join(str(i) for i in range(MAX_CONDITION_TERMS)) + "]")
