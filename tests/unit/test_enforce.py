"""The card's verdict on a tool call (core.aap.enforcement) and the Messages rewriters
(gateway.enforce.anthropic): whole answers and streams in any chunking."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from smoltbot.core.aap.cards import normalize_card
from smoltbot.core.aap.enforcement import Verdict, check_tool_call, fail_policy_of, mode_of
from smoltbot.gateway.capture import Capture
from smoltbot.gateway.enforce import CardCache, EnforcementMetrics, Enforcer, ResponseFilter
from smoltbot.gateway.enforce.anthropic import SseEnforcer, rewrite_message
from smoltbot.gateway.enforce.nudges import Nudges
from smoltbot.gateway.enforce.texts import NUDGE_PREFIX, replacement_text
from smoltbot.gateway.sse import MessageAccumulator

AGENT = "smolt-0123456789abcdef"
GZIP = 16 + zlib.MAX_WBITS


def card(**autonomy: Any) -> dict[str, Any]:
    return normalize_card({
        "integrity_mode": "enforce",
        "principal": {"type": "unspecified", "relationship": "delegated_authority"},
        "values": {"declared": ["transparency"]},
        "autonomy": {"bounded_actions": [], **autonomy},
        "audit": {"retention_days": 30, "queryable": False, "trace_format": "ap-trace-v1"},
    }, agent_id=AGENT)


CARD = card(
    forbidden_actions=["bash"],
    escalation_triggers=[
        {"condition": 'parameters.path contains "/etc"', "action": "escalate", "reason": "system files"},
        {"condition": 'action_name == "delete_file"', "action": "deny", "reason": "no deletions"},
        {"condition": 'action_name == "read_file"', "action": "log", "reason": "audit reads"},
    ],
    max_autonomous_value={"amount": 100, "currency": "USD"},
)


@pytest.mark.parametrize(("name", "tool_input", "decision", "said"), [
    ("Bash", {"command": "ls"}, "deny", "forbids the tool 'Bash'"),
    ("delete_file", {"path": "/tmp/x"}, "deny", "no deletions"),
    ("write_file", {"path": "/etc/hosts"}, "escalate", "system files"),
    ("pay", {"amount": 250}, "escalate", "max_autonomous_value"),
    ("read_file", {"path": "/home/a"}, "allow", ""),
    ("get_weather", {"location": "Paris"}, "allow", ""),
    # deny wins over escalate
    ("delete_file", {"path": "/etc/passwd"}, "deny", "no deletions"),
])
def test_the_verdict_follows_forbidden_actions_triggers_and_money(
        name: str, tool_input: dict[str, Any], decision: str, said: str) -> None:
    verdict = check_tool_call(CARD, name, tool_input)
    assert verdict.decision == decision
    assert said in verdict.reason


def test_mode_is_the_strictest_master_switch_and_fail_policy_defaults_to_allow() -> None:
    assert mode_of({"integrity_mode": "observe", "autonomy_mode": "enforce"}) == "enforce"
    assert mode_of({"integrity_mode": "nudge"}) == "nudge"
    assert mode_of({}) == "observe"
    assert fail_policy_of(CARD) == "allow"
    assert fail_policy_of({"extensions": {"smoltbot": {"enforcement": {"fail_policy": "block"}}}}) == "block"
    assert fail_policy_of(None) == "allow"


def decide(name: str, tool_input: Any, tool_use_id: str) -> Verdict:
    return check_tool_call(CARD, name, tool_input, tool_use_id)


THINKING = {"type": "thinking", "thinking": "Let me think \u00e9", "signature": "EqQBCgIYAhIM+sig/=="}


def message(*blocks: dict[str, Any], stop_reason: str = "tool_use") -> dict[str, Any]:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
            "content": list(blocks), "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5}}


def tool(name: str, tool_input: dict[str, Any], n: int = 0) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_0{n}", "name": name, "input": tool_input}


def test_whole_answer_without_a_stopped_call_is_left_as_its_bytes() -> None:
    body = json.dumps(message(THINKING, tool("get_weather", {"location": "Paris"}))).encode()
    rewritten, records = rewrite_message(body, decide, replace=True)
    assert rewritten is None
    assert [(r.name, r.verdict.decision, r.replaced) for r in records] == [("get_weather", "allow", False)]


def test_whole_answer_forbidden_call_becomes_text_and_the_turn_ends() -> None:
    original = message(THINKING, {"type": "text", "text": "I'll run it."},
                       tool("Bash", {"command": "rm -rf /"}))
    rewritten, records = rewrite_message(json.dumps(original).encode(), decide, replace=True)
    assert rewritten is not None
    out = json.loads(rewritten)
    assert out["stop_reason"] == "end_turn"
    assert out["content"][:2] == original["content"][:2]  # thinking and signature as they were
    assert out["content"][2] == {"type": "text", "text": replacement_text(
        "Bash", {"command": "rm -rf /"}, records[0].verdict)}
    assert {k: v for k, v in out.items() if k not in ("content", "stop_reason")} == {
        k: v for k, v in original.items() if k not in ("content", "stop_reason")}


def test_whole_answer_keeps_tool_use_stop_while_an_allowed_call_remains() -> None:
    original = message(tool("Bash", {"command": "ls"}, 1), tool("get_weather", {"location": "Oslo"}, 2))
    rewritten, records = rewrite_message(json.dumps(original).encode(), decide, replace=True)
    out = json.loads(rewritten or b"")
    assert out["stop_reason"] == "tool_use"
    assert out["content"][1] == original["content"][1]
    assert [r.replaced for r in records] == [True, False]


def test_nudge_mode_judges_but_never_replaces() -> None:
    body = json.dumps(message(tool("Bash", {"command": "ls"}))).encode()
    rewritten, records = rewrite_message(body, decide, replace=False)
    assert rewritten is None and records[0].verdict.decision == "deny" and not records[0].replaced


def sse(*events: tuple[str, dict[str, Any]]) -> list[bytes]:
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


def stream_of(blocks: list[dict[str, Any]], stop_reason: str = "tool_use") -> list[bytes]:
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": {
        **message(stop_reason=stop_reason), "content": [], "stop_reason": None}})]
    for index, block in enumerate(blocks):
        if block["type"] == "tool_use":
            start = {**block, "input": {}}
            text = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": text[i:i + 5]}
                      for i in range(0, len(text), 5)]
        elif block["type"] == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]},
                      {"type": "signature_delta", "signature": block["signature"]}]
        else:
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": block["text"]}]
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": start}))
        events.append(("ping", {"type": "ping"}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                   for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason,
                                                                         "stop_sequence": None},
                                     "usage": {"output_tokens": 9}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return sse(*events)


def run(chunks: list[bytes], size: int, *, replace: bool = True) -> tuple[bytes, SseEnforcer, list[bytes]]:
    raw = b"".join(chunks)
    enforcer = SseEnforcer(decide, replace=replace)
    sent = [enforcer.feed(raw[i:i + size]) for i in range(0, len(raw), size)]
    sent.append(enforcer.end())
    return b"".join(sent), enforcer, sent


def final(raw: bytes) -> dict[str, Any]:
    accumulator = MessageAccumulator()
    accumulator.feed(raw)
    accumulator.close()
    assert accumulator.message is not None
    return accumulator.message


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_stream_without_a_stopped_call_is_byte_identical(size: int) -> None:
    chunks = stream_of([THINKING, {"type": "text", "text": "Hi"}, tool("get_weather", {"location": "X"})])
    out, enforcer, _ = run(chunks, size)
    assert out == b"".join(chunks)
    assert [r.verdict.decision for r in enforcer.records] == ["allow"]


@pytest.mark.parametrize("size", [1, 13, 100_000])
def test_stream_forbidden_call_is_replaced_at_its_index_and_the_turn_ends(size: int) -> None:
    chunks = stream_of([THINKING, tool("Bash", {"command": "rm -rf /"}), tool("get_weather", {"l": "X"}, 2)])
    out, enforcer, _ = run(chunks, size)
    got = final(out)
    assert got["content"][0] == THINKING
    assert got["content"][1] == {"type": "text", "text": replacement_text(
        "Bash", {"command": "rm -rf /"}, enforcer.records[0].verdict)}
    assert got["content"][2]["name"] == "get_weather"
    assert got["stop_reason"] == "tool_use"  # an allowed call remains
    alone, _, _ = run(stream_of([THINKING, tool("Bash", {"command": "ls"})]), size)
    assert final(alone)["stop_reason"] == "end_turn"
    # Events before the held block went out exactly as they came.
    assert out.startswith(b"".join(chunks[:6]))


def test_stream_text_and_thinking_events_are_sent_as_they_complete_while_a_tool_call_is_held() -> None:
    chunks = stream_of([THINKING, tool("Bash", {"command": "ls"})])
    enforcer = SseEnforcer(decide, replace=True)
    outputs = [enforcer.feed(chunk) for chunk in chunks]
    # message_start, thinking start, ping, two deltas, stop: each out at once, unchanged.
    assert outputs[:6] == chunks[:6]
    tool_start = 6
    assert outputs[tool_start] == b""  # held from content_block_start ...
    stop = next(i for i in range(tool_start, len(chunks)) if b"content_block_stop" in chunks[i])
    assert all(o == b"" for o in outputs[tool_start:stop])
    assert b'"text_delta"' in outputs[stop]  # ... to content_block_stop, then replaced


def test_escalate_becomes_a_request_for_approval() -> None:
    out, enforcer, _ = run(stream_of([tool("write_file", {"path": "/etc/hosts"})]), 50)
    text = final(out)["content"][0]["text"]
    assert enforcer.records[0].verdict.decision == "escalate"
    assert "explicit approval" in text and "system files" in text


def test_nudge_stream_passes_unchanged_and_records_the_verdict() -> None:
    chunks = stream_of([tool("Bash", {"command": "ls"})])
    out, enforcer, _sent = run(chunks, 1, replace=False)
    assert out == b"".join(chunks)
    assert enforcer.records[0].verdict.decision == "deny" and not enforcer.records[0].replaced


def test_nudge_note_goes_once_at_the_end_of_the_last_user_message() -> None:
    nudges = Nudges()
    nudges.add(AGENT, "s1", [("Bash", check_tool_call(CARD, "Bash", {}))])
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    other, note = nudges.apply(AGENT, "s2", body, {})
    assert other == body and note == ""
    changed, note = nudges.apply(AGENT, "s1", body, {})
    assert note.startswith(NUDGE_PREFIX)
    assert json.loads(changed)["messages"][-1]["content"] == [{"type": "text", "text": "hi"},
                                                              {"type": "text", "text": note}]
    assert nudges.apply(AGENT, "s1", body, {}) == (body, "")


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_streams_with_cr_line_ends_are_read_too(ending: bytes) -> None:
    chunks = [c.replace(b"\n", ending) for c in stream_of([THINKING, tool("Bash", {"command": "ls"})])]
    out, enforcer, _ = run(chunks, 5)
    assert final(out)["content"][1]["type"] == "text" and enforcer.records[0].replaced
    assert out.startswith(b"".join(chunks[:6]))


def response_filter(*, replace: bool, encoding: str = "", sse: bool = True) -> Any:
    enforcer = Enforcer(CardCache("127.0.0.1:1"), EnforcementMetrics(CollectorRegistry()))
    capture = Capture(agent_hash="a" * 64, session_hint="", method="POST", path="/v1/messages", query="",
                      request_headers=[], request_body=b"{}", started_ns=0)
    capture.agent_id = AGENT
    headers: CIMultiDict[str] = CIMultiDict()
    made = ResponseFilter(enforcer, capture, mode="enforce" if replace else "nudge", card=CARD,
                          replace=replace, sse=sse, encoding=encoding, out_headers=headers)
    return made, capture, headers


def test_a_broken_stream_releases_the_held_tool_call_as_it_came_and_is_recorded() -> None:
    chunks = stream_of([THINKING, tool("Bash", {"command": "ls"})])
    cut = next(i for i, c in enumerate(chunks) if b"input_json_delta" in c) + 1  # inside the tool block
    compressor = zlib.compressobj(wbits=GZIP)
    made, capture, _ = response_filter(replace=True, encoding="gzip")
    sent = [made.feed(compressor.compress(c) + compressor.flush(zlib.Z_SYNC_FLUSH)) for c in chunks[:cut]]
    assert sent[-1] == b""  # the tool call is held
    sent.append(made.feed(b"not gzip at all"))
    assert b"".join(sent) == b"".join(chunks[:cut])  # fail-open: everything held went out unchanged
    assert capture.enforcement.not_enforced_reason.startswith("enforcement failed")


def test_nudge_relays_every_byte_as_it_came_encoding_included() -> None:
    raw = b"".join(stream_of([tool("Bash", {"command": "ls"})]))
    wire = zlib.compress(raw, wbits=GZIP)
    made, capture, _ = response_filter(replace=False, encoding="gzip")
    out = b"".join(made.feed(wire[i:i + 50]) for i in range(0, len(wire), 50)) + made.end()
    assert out == wire
    calls = [(c.name, c.verdict, c.action) for c in capture.enforcement.tool_calls]
    assert calls == [("Bash", "deny", "nudged")]


def test_a_whole_answer_that_did_not_change_keeps_its_encoding() -> None:
    body = zlib.compress(json.dumps(message(tool("get_weather", {"l": "X"}))).encode(), wbits=GZIP)
    made, _, headers = response_filter(replace=True, encoding="gzip", sse=False)
    assert made.whole(body) == body and headers["content-encoding"] == "gzip"
    blocked = zlib.compress(json.dumps(message(tool("Bash", {}))).encode(), wbits=GZIP)
    made, _, headers = response_filter(replace=True, encoding="gzip", sse=False)
    out = json.loads(made.whole(blocked))
    assert out["stop_reason"] == "end_turn" and "content-encoding" not in headers
