"""The anthropic analyzer's validation of structured output, and its circuit breaker."""

from __future__ import annotations

from typing import Any

import pytest

from smoltbot.core.breaker import CircuitBreaker
from smoltbot.observer.anthropic_analyzer import (
    ANALYSIS_TOOL,
    AnalysisInvalid,
    AnthropicAnalyzer,
    analysis_schema,
    parse_analysis,
)
from smoltbot.observer.extraction import extract

RESPONSE = (b'{"type":"message","model":"claude-x","stop_reason":"tool_use","content":['
            b'{"type":"thinking","thinking":"Read the file.","signature":"s"},'
            b'{"type":"tool_use","id":"toolu_1","name":"read_file","input":{"path":"/a"}}]}')


def _decision() -> tuple[Any, Any]:
    extraction = extract(b"", RESPONSE, http_status=200, streamed=False, outcome="complete")
    return extraction.decisions()[0], extraction


def _valid(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "alternatives": [{"option_id": "taken", "description": "read the file"},
                         {"option_id": "ask", "description": "ask first", "score": 0.3}],
        "selected": "taken",
        "selection_reasoning": "The reasoning says to read the file.",
        "values_applied": ["transparency", "transparency"],
        "confidence": 0.8,
    }
    data.update(changes)
    return data


def test_a_valid_reply_becomes_an_analysis_with_the_taken_option_first() -> None:
    decision, extraction = _decision()
    analysis = parse_analysis(_valid(), decision, extraction)
    assert analysis.selected == "taken"
    assert [a["option_id"] for a in analysis.alternatives] == ["taken", "ask"]
    assert analysis.values_applied == ["transparency"]
    assert analysis.confidence == 0.8


def test_the_observed_action_is_added_when_the_model_leaves_it_out() -> None:
    decision, extraction = _decision()
    analysis = parse_analysis(_valid(alternatives=[]), decision, extraction)
    assert analysis.alternatives[0]["option_id"] == "taken"
    assert "read_file" in analysis.alternatives[0]["description"]


def test_a_percentage_confidence_is_read_as_one() -> None:
    decision, extraction = _decision()
    assert parse_analysis(_valid(confidence=85), decision, extraction).confidence == 0.85


@pytest.mark.parametrize(("changes", "message"), [
    ({"selected": "ask"}, "selected"),
    ({"confidence": 140}, "confidence"),
    ({"confidence": True}, "confidence"),
    ({"confidence": "high"}, "confidence"),
    ({"selection_reasoning": " "}, "selection_reasoning"),
    ({"values_applied": "honesty"}, "values_applied"),
    ({"alternatives": [{"option_id": "", "description": "x"}]}, "option_id"),
    ({"alternatives": [{"option_id": "a", "description": "x"}, {"option_id": "a", "description": "y"}]},
     "repeated"),
    ({"alternatives": [{"option_id": "a", "description": "x", "score": -0.5}]}, "score"),
])
def test_replies_that_break_the_schema_are_rejected_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    decision, extraction = _decision()
    with pytest.raises(AnalysisInvalid, match=message):
        parse_analysis(_valid(**changes), decision, extraction)


def test_secrets_in_the_model_reply_are_masked() -> None:
    decision, extraction = _decision()
    key = "sk-ant-api03-" + "a1" * 20
    analysis = parse_analysis(_valid(selection_reasoning=f"It used {key}."), decision, extraction)
    assert key not in analysis.selection_reasoning


def test_the_schema_is_the_analysis_shape_and_forces_the_taken_selection() -> None:
    schema = analysis_schema()
    assert set(schema["required"]) == {"alternatives", "selected", "selection_reasoning", "values_applied",
                                       "confidence"}
    assert schema["properties"]["selected"]["enum"] == ["taken"]
    assert ANALYSIS_TOOL.isidentifier()


def test_the_breaker_opens_after_consecutive_failures_and_lets_one_trial_through() -> None:
    now = [100.0]
    breaker = CircuitBreaker(failures=2, reset_after=30.0, clock=lambda: now[0])
    assert breaker.allow()
    breaker.failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] += 29.9
    assert breaker.state == "open" and not breaker.allow(), "open until reset_after has passed"
    now[0] += 0.1
    assert breaker.allow(), "half-open: one trial"
    assert not breaker.allow(), "only one trial at a time"
    breaker.failure()
    assert breaker.state == "open"
    now[0] += 30.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


async def test_without_an_api_key_the_local_analysis_is_used_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    analyzer = AnthropicAnalyzer(model="claude-haiku-4-5")
    _, extraction = _decision()
    result = await analyzer.analyze(extraction, {"values": {"declared": []}}, "complete")
    await analyzer.close()
    assert result.analyzer == "local"
    assert "api_key" in result.fallback_reason or "client could not be created" in result.fallback_reason
    assert len(result.analyses) == 1
