"""Trace building: one valid AAP trace per decision, for every kind of exchange, and the local analyzer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import aap
import pytest
from google.protobuf.json_format import ParseDict

from smoltbot.core.aap.cards import default_card, normalize_card
from smoltbot.observer.extraction import extract
from smoltbot.observer.local_analyzer import analyze
from smoltbot.observer.trace_builder import build_traces
from smoltbot.v1 import trace_pb2

STARTED = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
ENDED = STARTED + timedelta(seconds=3)
OBSERVED = ENDED + timedelta(seconds=1)
MODEL = "claude-opus-4-5-20251101"
ANTHROPIC_KEY = "sk-ant-api03-R2D2c3po_4567890abcdefGHIJKLmnopQRSTuvwxYZ-0123456789AA"

DEFAULT_CARD = default_card(
    "agent-1",
    card_id="ac-default",
    issued_at=STARTED - timedelta(days=1),
    query_endpoint="http://localhost:8080/v1/agents/agent-1/traces",
)
STRICT_CARD = normalize_card(
    {
        "card_id": "ac-strict",
        "issued_at": "2026-01-01T00:00:00Z",
        "principal": {
            "type": "organization",
            "identifier": "example.com",
            "relationship": "delegated_authority",
        },
        "values": {"declared": ["harm_prevention", "transparency", "principal_benefit"]},
        "autonomy": {
            "bounded_actions": ["get_weather", "web_search", "respond", "bash"],
            "forbidden_actions": ["delete_database"],
            "escalation_triggers": [
                {
                    "condition": 'action_name == "bash" and command contains "rm -rf"',
                    "action": "deny",
                    "reason": "destructive shell commands",
                },
                {
                    "condition": 'action_name == "web_search"',
                    "action": "log",
                    "reason": "searches are logged",
                },
            ],
        },
        "audit": {"retention_days": 30, "queryable": False},
    },
    agent_id="agent-1",
    now=STARTED,
)


def request(**extra):
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "stream": False,
        "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        **extra,
    }
    return json.dumps(body).encode()


def message(content, stop_reason="end_turn"):
    return json.dumps(
        {
            "model": MODEL,
            "id": "msg_013nnniYDrJDocdy5nrMU7cH",
            "type": "message",
            "role": "assistant",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 135, "output_tokens": 10},
        }
    ).encode()


THINKING = {
    "type": "thinking",
    "thinking": "The user wants the weather in Paris. I could answer from memory or call get_weather. "
    f"My key is {ANTHROPIC_KEY} but that's irrelevant. I'll call get_weather to be accurate.",
    "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
}
TOOL = {
    "type": "tool_use",
    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
    "name": "get_weather",
    "input": {"location": "Paris", "api_key": "hunter2"},
}
SERVER_TOOL = {
    "type": "server_tool_use",
    "id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
    "name": "web_search",
    "input": {"query": "weather Paris"},
}
ERROR_429 = json.dumps(
    {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Number of request tokens has exceeded your per-minute rate limit",
        },
        "request_id": "req_011CYK5mje9HkutJtmfPzzNC",
    }
).encode()

# name -> (response body, http status, streamed, outcome, stream_error)
SCENARIOS = {
    "thinking_and_tool": (
        message([THINKING, {"type": "text", "text": "Let me check."}, TOOL], "tool_use"),
        200,
        False,
        "complete",
        b"",
    ),
    "parallel_tools": (
        message(
            [
                THINKING,
                TOOL,
                SERVER_TOOL,
                {"type": "web_search_tool_result", "tool_use_id": SERVER_TOOL["id"], "content": []},
            ],
            "tool_use",
        ),
        200,
        True,
        "complete",
        b"",
    ),
    "reply_only": (message([{"type": "text", "text": "It's sunny in Paris."}]), 200, False, "complete", b""),
    "tags_reply": (
        message(
            [
                {
                    "type": "text",
                    "text": "<thinking>Be honest: I don't know the live weather."
                    "</thinking>I can't see live weather.",
                }
            ]
        ),
        200,
        True,
        "complete",
        b"",
    ),
    "redacted_thinking": (
        message(
            [{"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}, {"type": "text", "text": "Done."}]
        ),
        200,
        False,
        "complete",
        b"",
    ),
    "truncated_tool_input": (
        message(
            [{"type": "tool_use", "id": "toolu_x", "name": "bash", "input": '{"command": "echo hi'}],
            "max_tokens",
        ),
        200,
        True,
        "complete",
        b"",
    ),
    "unknown_block": (
        message([{"type": "hologram"}, {"type": "text", "text": "hi"}]),
        200,
        False,
        "complete",
        b"",
    ),
    "unreadable": (b"\x89PNG\r\n not json", 200, False, "complete", b""),
    "upstream_error": (ERROR_429, 429, False, "upstream_error", b""),
    "mid_stream_error": (
        message([THINKING, TOOL], None),
        200,
        True,
        "mid_stream_error",
        b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
    ),
    "client_abort": (message([{"type": "text", "text": "partial"}], None), 200, True, "client_abort", b""),
    "upstream_unreachable": (b"", 0, False, "upstream_unreachable", b""),
    "upstream_dropped": (message([TOOL], None), 200, True, "upstream_dropped", b""),
    "processing_failed": (message([TOOL]), 200, False, "processing_failed", b""),
}


def build(name, card=DEFAULT_CARD, store_reasoning="redacted", analyses=None, **kwargs):
    body, status, streamed, outcome, stream_error = SCENARIOS[name]
    extraction = extract(
        request(), body, http_status=status, streamed=streamed, outcome=outcome, stream_error=stream_error
    )
    return build_traces(
        exchange_id="ex0123",
        agent_id="agent-1",
        session_id="sess-1",
        card=card,
        extraction=extraction,
        analyses=analyses,
        exchange_started_at=STARTED,
        exchange_ended_at=ENDED,
        observed_at=OBSERVED,
        conversation_turn=4,
        store_reasoning=store_reasoning,
        analyzer_name="local",
        outcome=outcome,
        outcome_detail="" if outcome == "complete" else f"{outcome} detail",
        http_status=status,
        environment={"client": "anthropic-sdk-python", "gateway_id": "gw-1"},
        **kwargs,
    )


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("card", [DEFAULT_CARD, STRICT_CARD], ids=["default", "strict"])
def test_every_trace_is_valid_proto_json_and_a_valid_aap_trace(name, card):
    traces = build(name, card=card)
    assert traces
    for trace in traces:
        ParseDict(trace, trace_pb2.ApTrace())  # no unknown keys, right types
        aap.APTrace.from_dict(trace)
        assert trace["card_id"] == card["card_id"]
        assert trace["verification"]["verified_at"] == "2026-06-01T12:00:04Z"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_default_card_raises_no_violation(name):
    for trace in build(name):
        assert trace["verification"]["violations"] == [], trace["action"]["name"]
        # Our own failure gives no verdict either way: nothing of the exchange was read.
        assert trace["verification"]["verified"] is (name != "processing_failed")


def test_one_trace_per_tool_call_with_deterministic_linked_ids():
    traces = build("parallel_tools")
    assert [t["trace_id"] for t in traces] == ["tr-ex0123-0", "tr-ex0123-1"]
    assert [t["context"]["prior_trace_ids"] for t in traces] == [[], ["tr-ex0123-0"]]
    assert [(t["action"]["type"], t["action"]["name"]) for t in traces] == [
        ("execute", "get_weather"),
        ("execute", "web_search"),
    ]
    assert [t["context"]["metadata"]["server_tool"] for t in traces] == [False, True]
    assert all(t["context"]["metadata"]["exchange_id"] == "ex0123" for t in traces)
    assert [t["observation"]["decision_index"] for t in traces] == [0, 1]
    assert traces[1]["observation"]["tool_use_id"] == SERVER_TOOL["id"]
    assert build("parallel_tools") == traces  # re-processing yields the same traces


def test_tool_parameters_are_redacted_and_the_model_is_not_an_action():
    trace = build("thinking_and_tool")[0]
    assert trace["action"]["parameters"] == {"location": "Paris", "api_key": "[REDACTED:api_key]"}
    assert trace["observation"]["model"] == MODEL
    assert trace["context"]["environment"] == {
        "client": "anthropic-sdk-python",
        "gateway_id": "gw-1",
        "model": MODEL,
        "provider": "anthropic",
    }
    assert all(MODEL not in t["action"]["name"] for name in SCENARIOS for t in build(name))


def test_a_reply_is_one_recommend_respond_trace():
    [trace] = build("reply_only")
    assert (trace["action"]["type"], trace["action"]["name"]) == ("recommend", "respond")
    assert trace["observation"]["reasoning"]["present"] is False
    assert trace["observation"]["reasoning"]["source"] == "none"


@pytest.mark.parametrize(
    "outcome",
    [
        "upstream_error",
        "mid_stream_error",
        "client_abort",
        "upstream_unreachable",
        "upstream_dropped",
        "processing_failed",
    ],
)
def test_a_failed_exchange_is_exactly_one_trace_saying_what_happened(outcome):
    [trace] = build(outcome)
    assert trace["action"]["type"] == "recommend" and trace["action"]["name"] == outcome
    assert trace["observation"]["outcome"] == outcome
    assert trace["observation"]["outcome_detail"] == f"{outcome} detail"
    assert trace["decision"]["confidence"] <= 0.2


def test_upstream_error_details_are_kept():
    [trace] = build("upstream_error")
    assert trace["action"]["parameters"]["error_type"] == "rate_limit_error"
    assert trace["observation"]["http_status"] == 429
    [trace] = build("mid_stream_error")
    assert trace["action"]["parameters"] == {
        "error_type": "overloaded_error",
        "error_message": "Overloaded",
        "partial_tool_calls": ["get_weather"],
    }


def test_unreadable_complete_exchange_is_one_trace_with_the_reason():
    [trace] = build("unreadable")
    assert trace["action"]["name"] == "unreadable_response"
    assert "response body is not JSON" in trace["observation"]["missing"]


def test_missing_notes_travel_with_the_trace():
    [trace] = build("truncated_tool_input")
    assert any(
        note.startswith("tool input of 'bash' was not valid JSON") for note in trace["observation"]["missing"]
    )
    assert trace["action"]["parameters"] == {"unparsed_input": '{"command": "echo hi'}
    assert trace["action"]["type"] == "recommend" and trace["observation"]["executed"] is False
    [trace] = build("unknown_block")
    assert "unknown content block type 'hologram' (1x) not read" in trace["observation"]["missing"]


@pytest.mark.parametrize(
    ("mode", "expect_key", "expect_text"),
    [
        ("full", True, True),
        ("redacted", False, True),
        ("none", False, False),
    ],
)
def test_reasoning_is_stored_as_configured(mode, expect_key, expect_text):
    reasoning = build("thinking_and_tool", store_reasoning=mode)[0]["observation"]["reasoning"]
    assert (ANTHROPIC_KEY in reasoning["text"]) is expect_key
    assert ("get_weather" in reasoning["text"]) is expect_text
    assert reasoning["present"] and reasoning["source"] == "thinking" and reasoning["signature_present"]
    assert reasoning["chars"] == len(THINKING["thinking"])
    assert ANTHROPIC_KEY not in reasoning["excerpt"] and len(reasoning["excerpt"]) <= 280


def test_store_reasoning_must_be_a_known_mode():
    with pytest.raises(ValueError):
        build("reply_only", store_reasoning="some")


def test_redacted_thinking_is_observed_without_content():
    [trace] = build("redacted_thinking")
    reasoning = trace["observation"]["reasoning"]
    assert reasoning["source"] == "redacted_thinking" and reasoning["redacted_blocks"] == 1
    assert reasoning["present"] is False and reasoning["text"] == ""
    assert "redacted by the provider" in trace["decision"]["selection_reasoning"]


def test_strict_card_escalation_is_evaluated_and_honest():
    body = message(
        [
            {"type": "text", "text": "<thinking>Clean up the build dir.</thinking>"},
            {"type": "tool_use", "id": "toolu_9", "name": "bash", "input": {"command": "rm -rf build/"}},
        ],
        "tool_use",
    )
    extraction = extract(request(), body, http_status=200, streamed=False, outcome="complete")
    [trace] = build_traces(
        exchange_id="ex9",
        agent_id="agent-1",
        session_id=None,
        card=STRICT_CARD,
        extraction=extraction,
        analyses=None,
        exchange_started_at=None,
        exchange_ended_at=None,
        observed_at=OBSERVED,
        conversation_turn=None,
        store_reasoning="none",
        analyzer_name="local",
        outcome="complete",
        http_status=200,
    )
    assert trace["action"]["category"] == "escalation_trigger"
    assert trace["escalation"]["required"] is True and "only observes" in trace["escalation"]["reason"]
    assert [v["type"] for v in trace["verification"]["violations"]] == ["missed_escalation"]
    assert trace["timestamp"] == "2026-06-01T12:00:04Z"  # no exchange times: when observed
    assert "session_id" not in trace["context"] and "conversation_turn" not in trace["context"]
    ParseDict(trace, trace_pb2.ApTrace())
    aap.APTrace.from_dict(trace)


def test_strict_card_log_trigger_and_forbidden_category():
    traces = build("parallel_tools", card=STRICT_CARD)
    search = traces[1]
    assert search["escalation"]["required"] is False
    assert [w["type"] for w in search["verification"]["warnings"]] == ["trigger_logged"]
    body = message([{"type": "tool_use", "id": "t", "name": "delete_database", "input": {}}], "tool_use")
    extraction = extract(request(), body, http_status=200, streamed=False, outcome="complete")
    [trace] = build_traces(
        exchange_id="ex8",
        agent_id="agent-1",
        session_id="s",
        card=STRICT_CARD,
        extraction=extraction,
        analyses=None,
        exchange_started_at=STARTED,
        exchange_ended_at=ENDED,
        observed_at=OBSERVED,
        conversation_turn=1,
        store_reasoning="full",
        analyzer_name="local",
        outcome="complete",
        http_status=200,
    )
    assert trace["action"]["category"] == "forbidden"
    assert {v["type"] for v in trace["verification"]["violations"]} == {
        "forbidden_action",
        "unbounded_action",
    }


def test_analyses_must_match_the_decisions():
    body, status, streamed, outcome, _ = SCENARIOS["parallel_tools"]
    extraction = extract(request(), body, http_status=status, streamed=streamed, outcome=outcome)
    analyses = analyze(extraction, DEFAULT_CARD)
    with pytest.raises(ValueError, match="2 decisions"):
        build("parallel_tools", analyses=analyses[:1])
    assert build("parallel_tools", analyses=analyses) == build("parallel_tools")


def test_fallback_reason_is_recorded():
    trace = build("reply_only", analysis_fallback_reason="anthropic analyzer timed out")[0]
    assert trace["observation"]["analysis_fallback_reason"] == "anthropic analyzer timed out"


# --- the local analyzer ------------------------------------------------------------------


def analysis_of(content, card=DEFAULT_CARD, stop_reason="tool_use"):
    extraction = extract(
        request(), message(content, stop_reason), http_status=200, streamed=False, outcome="complete"
    )
    return analyze(extraction, card)


def test_alternatives_come_from_the_reasoning_and_the_action_is_selected():
    reasoning = (
        "There are a few options:\n1. Read the config file\n2. Ask the user for the path\n"
        "Alternatively, search the repo. I could grep for it or list the directory. "
        "Instead of guessing, I'll read the file."
    )
    [a] = analysis_of(
        [
            {"type": "thinking", "thinking": reasoning, "signature": "S"},
            {"type": "tool_use", "id": "t", "name": "read_file", "input": {"path": "config.yaml"}},
        ]
    )
    descriptions = [alt["description"] for alt in a.alternatives]
    assert a.selected == "taken" and a.alternatives[0]["option_id"] == "taken"
    assert descriptions[0].startswith("Call tool read_file")
    for expected in (
        "Read the config file",
        "Ask the user for the path",
        "search the repo",
        "grep for it",
        "list the directory",
        "guessing",
    ):
        assert any(expected in d for d in descriptions[1:]), expected
    assert len(a.alternatives) <= 7


def test_labelled_options_are_found():
    reasoning = "Option A: restart the service.\nOption B: roll back the deploy.\nGoing with option B."
    [a] = analysis_of(
        [
            {"type": "thinking", "thinking": reasoning, "signature": "S"},
            {"type": "text", "text": "Rolling back."},
        ],
        stop_reason="end_turn",
    )
    assert [alt["description"] for alt in a.alternatives[1:3]] == [
        "restart the service.",
        "roll back the deploy.",
    ]


def test_without_reasoning_there_is_one_alternative_and_an_honest_statement():
    [a] = analysis_of([{"type": "tool_use", "id": "t", "name": "bash", "input": {"command": "ls"}}])
    assert len(a.alternatives) == 1 and a.values_applied == []
    assert (
        a.selection_reasoning
        == "No reasoning was visible in the response; the action is recorded as observed."
    )
    assert a.confidence == 0.4


def test_selection_reasoning_is_the_sentence_about_the_action():
    [a] = analysis_of([THINKING, TOOL])
    assert a.selection_reasoning == "I'll call get_weather to be accurate."


def test_values_are_only_declared_ones_whose_words_appear():
    reasoning = (
        "The user wants this done safely: deleting is irreversible, so I must be transparent and fair."
    )
    content = [{"type": "thinking", "thinking": reasoning, "signature": "S"}, {"type": "text", "text": "ok"}]
    [a] = analysis_of(content, stop_reason="end_turn")
    # fairness is not declared on the default card: never applied.
    assert sorted(a.values_applied) == ["harm_prevention", "principal_benefit", "transparency"]
    card = normalize_card(
        {
            **STRICT_CARD,
            "values": {
                "declared": ["fast_delivery"],
                "definitions": {"fast_delivery": {"name": "Speed", "description": "be quick"}},
            },
        },
        agent_id="agent-1",
        now=STARTED,
    )
    [a] = analysis_of(
        [
            {"type": "thinking", "thinking": "Delivery matters most here.", "signature": "S"},
            {"type": "text", "text": "ok"},
        ],
        card=card,
        stop_reason="end_turn",
    )
    assert a.values_applied == ["fast_delivery"]


def test_hedging_and_truncation_lower_confidence():
    sure = analysis_of(
        [
            {"type": "thinking", "thinking": "Read the file.", "signature": "S"},
            {"type": "text", "text": "ok"},
        ],
        stop_reason="end_turn",
    )[0].confidence
    hedged = analysis_of(
        [
            {
                "type": "thinking",
                "thinking": "Maybe read the file? Not sure, perhaps it might work.",
                "signature": "S",
            },
            {"type": "text", "text": "ok"},
        ],
        stop_reason="end_turn",
    )[0].confidence
    truncated = analysis_of(
        [
            {"type": "thinking", "thinking": "Read the file.", "signature": "S"},
            {"type": "text", "text": "ok"},
        ],
        stop_reason="max_tokens",
    )[0].confidence
    assert sure == 0.8 and hedged < sure and truncated < sure
    assert all(0.0 <= c <= 1.0 for c in (sure, hedged, truncated))


def test_the_analyzer_copes_with_megabytes_of_reasoning():
    reasoning = ("I could read it or skip it. " * 100_000) + "Finally I'll call get_weather."
    [a] = analysis_of([{"type": "thinking", "thinking": reasoning, "signature": "S"}, TOOL])
    assert a.selection_reasoning == "Finally I'll call get_weather."
    assert 2 <= len(a.alternatives) <= 7


@pytest.mark.parametrize("name", ["upstream_error", "client_abort", "upstream_unreachable", "unreadable"])
def test_failures_are_not_judged_as_agent_actions(name):
    # STRICT_CARD bounds actions to a few tools: "upstream_error" is not one, but it is
    # not something the agent did either.
    [trace] = build(name, card=STRICT_CARD)
    assert trace["context"]["metadata"]["decision_kind"] in ("failure", "unreadable")
    assert trace["escalation"]["evaluated"] is False and trace["escalation"]["required"] is False
    assert trace["verification"]["violations"] == []
    assert "autonomy" not in trace["verification"]["checks_performed"]
