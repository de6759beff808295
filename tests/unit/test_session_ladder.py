"""The session ladder (rungs and their order), sub-agent markers and user turns, against the request
shapes Claude Code, Codex and the SDKs send; hostile input is bounded and never raises."""

from __future__ import annotations

import json
import random
import time

import pytest
from multidict import CIMultiDict

from smoltbot.core.sessions import (
    ResponseChains,
    Rung,
    SessionName,
    name_session,
    parse_json_body,
    previous_response_id,
    response_id_in,
    starts_user_turn,
    sub_agent,
    usable_session_id,
)
from smoltbot.core.usage import API_ANTHROPIC_MESSAGES, API_GEMINI, API_OPENAI_CHAT, API_OPENAI_RESPONSES
from tests.support.openai_responses_wire import responses_events, responses_object
from tests.support.openai_standin import plan_reply
from tests.support.standin_server import Seed, canonical

CC_SESSION = "6a1f0c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
DEVICE = "d" * 64
# Claude Code >= 2.1.78: metadata.user_id is a JSON string.
CC_BODY = {
    "model": "claude-opus-4-6",
    "max_tokens": 32000,
    "metadata": {"user_id": json.dumps({"device_id": DEVICE, "account_uuid": "", "session_id": CC_SESSION})},
    "messages": [{"role": "user", "content": [{"type": "text", "text": "fix the bug"}]}],
}
# Older Claude Code: user_<hash>_account_<uuid>_session_<uuid> (account may be empty).
LEGACY_USER_ID = f"user_{DEVICE}_account_0b9c8d7e-6f5a-4b3c-2d1e-0f9a8b7c6d5e_session_{CC_SESSION}"

#: One request carrying every rung, each with its own value; most specific first.
LADDER = [
    (Rung.SMOLTBOT_HEADER, {"x-smoltbot-session": "ours"}),
    (Rung.CLAUDE_CODE_HEADER, {"X-Claude-Code-Session-Id": "cc-header"}),
    (Rung.CLAUDE_CODE_METADATA, "body"),
    (Rung.CODEX_SESSION_HEADER, {"session-id": "codex-session"}),
    (Rung.CODEX_THREAD_HEADER, {"thread-id": "codex-thread"}),
    (Rung.CODEX_LEGACY_SESSION_HEADER, {"session_id": "codex-old-session"}),
    (Rung.CODEX_LEGACY_CONVERSATION_HEADER, {"conversation_id": "codex-old-conversation"}),
    (Rung.CODEX_TURN_METADATA, {"x-codex-turn-metadata": json.dumps(
        {"session_id": "codex-metadata", "thread_id": "codex-metadata-thread", "request_kind": "turn"})}),
    (Rung.SESSION_AFFINITY_HEADER, {"x-session-affinity": "openclaw"}),
    (Rung.RESPONSES_CHAIN, "chain"),
]
EXPECTED = {
    Rung.SMOLTBOT_HEADER: "ours",
    Rung.CLAUDE_CODE_HEADER: "cc-header",
    Rung.CLAUDE_CODE_METADATA: CC_SESSION,
    Rung.CODEX_SESSION_HEADER: "codex-session",
    Rung.CODEX_THREAD_HEADER: "codex-thread",
    Rung.CODEX_LEGACY_SESSION_HEADER: "codex-old-session",
    Rung.CODEX_LEGACY_CONVERSATION_HEADER: "codex-old-conversation",
    Rung.CODEX_TURN_METADATA: "codex-metadata",
    Rung.SESSION_AFFINITY_HEADER: "openclaw",
    Rung.RESPONSES_CHAIN: "chained-session",
}
#: What the chain rung looks up: the session each earlier response was given.
CHAINED = {"resp_earlier": "chained-session"}


def _chained(response_id: str) -> str:
    return CHAINED.get(response_id, "")


def _request(rungs):
    headers: dict[str, str] = {"content-type": "application/json", "authorization": "Bearer sk-x"}
    body: dict[str, object] = {"model": "m", "messages": []}
    for _, value in rungs:
        if value == "body":
            body.update(CC_BODY)
        elif value == "chain":
            body["previous_response_id"] = "resp_earlier"
        else:
            headers.update(value)
    return headers, body


@pytest.mark.parametrize("index", range(len(LADDER)))
def test_each_rung_alone_names_the_session(index) -> None:
    rung = LADDER[index][0]
    headers, body = _request([LADDER[index]])
    assert name_session(headers, body, chained=_chained) == SessionName(EXPECTED[rung], rung)


@pytest.mark.parametrize("index", range(len(LADDER)))
def test_a_rung_beats_every_rung_below_it(index) -> None:
    headers, body = _request(LADDER[index:])
    rung = LADDER[index][0]
    assert name_session(headers, body, chained=_chained) == SessionName(EXPECTED[rung], rung)


def test_no_hint_names_no_session() -> None:
    assert name_session({"user-agent": "x"}, {"messages": []}) == SessionName("", Rung.NONE)
    assert name_session([], None) == SessionName("", Rung.NONE)


def test_claude_code_legacy_user_id_form() -> None:
    body = {"metadata": {"user_id": LEGACY_USER_ID}}
    assert name_session({}, body) == SessionName(CC_SESSION, Rung.CLAUDE_CODE_METADATA_LEGACY)
    empty_account = {"metadata": {"user_id": f"user_{DEVICE}_account__session_{CC_SESSION}"}}
    assert name_session({}, empty_account) == SessionName(CC_SESSION, Rung.CLAUDE_CODE_METADATA_LEGACY)


@pytest.mark.parametrize(
    "user_id",
    [
        "plain-opaque-id",
        "",
        "{not json",
        json.dumps({"session_id": ""}),
        json.dumps({"session_id": 5}),
        json.dumps(["session_id"]),
        "user_abc_session_x",
        "x" * 10_000,
        7,
        None,
    ],
)
def test_a_user_id_without_a_session_falls_through_to_the_next_rung(user_id) -> None:
    body = {"metadata": {"user_id": user_id}}
    assert name_session({"session-id": "codex"}, body) == SessionName("codex", Rung.CODEX_SESSION_HEADER)


def test_the_body_may_be_raw_bytes_and_is_parsed_only_when_needed() -> None:
    raw = json.dumps(CC_BODY).encode()
    assert name_session({}, raw) == SessionName(CC_SESSION, Rung.CLAUDE_CODE_METADATA)
    # Too large to parse here: the metadata rung is skipped, the next one still works.
    assert name_session({"thread-id": "t"}, raw, max_body_bytes=10) == SessionName(
        "t", Rung.CODEX_THREAD_HEADER
    )
    # A header rung above it: the body is never parsed (not even invalid bytes).
    assert name_session({"x-claude-code-session-id": "h"}, b"\xff{{{") == SessionName(
        "h", Rung.CLAUDE_CODE_HEADER
    )


def test_header_names_are_case_insensitive_in_every_header_container() -> None:
    for headers in (
        {"X-SMOLTBOT-SESSION": "a"},
        [("X-Smoltbot-Session", "a")],
        CIMultiDict([("x-smoltbot-session", "a")]),
    ):
        assert name_session(headers) == SessionName("a", Rung.SMOLTBOT_HEADER)
    # An empty or blank header is no hint.
    assert name_session({"x-smoltbot-session": "  ", "thread-id": "t"}).rung is Rung.CODEX_THREAD_HEADER


def test_unusable_ids_are_named_by_a_digest() -> None:
    for value in ("x" * 257, "tab\there", "nul\x00", "surrogate\udcff", "é" * 300):
        named = name_session({"x-smoltbot-session": value}).session_id
        assert named.startswith("sha256:") and len(named) == 39
        assert named == usable_session_id(value)
    assert usable_session_id("ok-id") == "ok-id"


def test_claude_code_sub_agent_headers() -> None:
    headers = {
        "x-claude-code-session-id": CC_SESSION,
        "x-claude-code-agent-id": "agent-7",
        "x-claude-code-parent-agent-id": "agent-1",
        "x-claude-code-agent-type": "Explore",
    }
    marker = sub_agent(headers)
    assert (marker.source, marker.agent_id, marker.parent_agent_id, marker.agent_type) == (
        "claude_code",
        "agent-7",
        "agent-1",
        "Explore",
    )
    assert marker.is_sub_agent
    # The sub-agent shares its parent's session.
    assert name_session(headers) == SessionName(CC_SESSION, Rung.CLAUDE_CODE_HEADER)
    main = sub_agent({"x-claude-code-session-id": CC_SESSION})
    assert not main.is_sub_agent and main.source == ""


def test_codex_sub_agent_from_turn_metadata() -> None:
    metadata = {
        "session_id": "s-1",
        "thread_id": "child",
        "turn_id": "t-9",
        "parent_thread_id": "parent",
        "parent_turn_id": "t-3",
        "subagent_kind": "thread_spawn",
        "request_kind": "subagent_turn",
        "thread_source": "subagent",
    }
    headers = {
        "session-id": "s-1",
        "thread-id": "child",
        "x-codex-turn-metadata": json.dumps(metadata),
        "x-openai-subagent": "collab_spawn",
    }
    marker = sub_agent(headers)
    assert (
        marker.source,
        marker.agent_id,
        marker.parent_agent_id,
        marker.agent_type,
        marker.request_kind,
    ) == ("codex", "child", "parent", "thread_spawn", "subagent_turn")
    assert marker.is_sub_agent
    main = sub_agent(
        {
            "session-id": "s-1",
            "thread-id": "root",
            "x-codex-turn-metadata": json.dumps({"thread_id": "root", "request_kind": "turn"}),
        }
    )
    assert main.source == "codex" and main.request_kind == "turn" and not main.is_sub_agent
    assert sub_agent({"x-codex-parent-thread-id": "p", "thread-id": "c"}).is_sub_agent
    assert sub_agent({"x-codex-turn-metadata": "not json"}) == sub_agent({})


def test_anthropic_turns_start_with_a_prompt_not_a_tool_result() -> None:
    conversation = [
        {"role": "user", "content": "list the files"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py"},
                {"type": "text", "text": "<system-reminder>...</system-reminder>"},
            ],
        },
    ]
    assert starts_user_turn(API_ANTHROPIC_MESSAGES, {"messages": conversation[:1]}).starts_turn is True
    assert starts_user_turn(API_ANTHROPIC_MESSAGES, {"messages": conversation}).starts_turn is False
    follow_up = [
        *conversation,
        {"role": "assistant", "content": "a.py"},
        {"role": "user", "content": [{"type": "text", "text": "now delete it"}]},
    ]
    turn = starts_user_turn(API_ANTHROPIC_MESSAGES, {"messages": follow_up})
    assert turn.starts_turn is True and turn.position == 4
    # A retry of the same request: the same position, so one turn.
    assert starts_user_turn(API_ANTHROPIC_MESSAGES, {"messages": list(follow_up)}) == turn
    image = {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}
    assert starts_user_turn(API_ANTHROPIC_MESSAGES, {"messages": [image]}).starts_turn is True


def test_openai_chat_turns() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "weather?"}]
    assert starts_user_turn(API_OPENAI_CHAT, {"messages": messages}).starts_turn is True
    messages += [
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert starts_user_turn(API_OPENAI_CHAT, {"messages": messages}).starts_turn is False


def test_responses_turns() -> None:
    assert starts_user_turn(API_OPENAI_RESPONSES, {"input": "hello"}) == starts_user_turn(
        API_OPENAI_RESPONSES, {"input": "hello"}
    )
    assert starts_user_turn(API_OPENAI_RESPONSES, {"input": "hello"}).starts_turn is True
    codex_input = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run the tests"}]},
    ]
    assert starts_user_turn(API_OPENAI_RESPONSES, {"input": codex_input}).starts_turn is True
    codex_input += [
        {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
    ]
    assert starts_user_turn(API_OPENAI_RESPONSES, {"input": codex_input}).starts_turn is False
    easy = [{"role": "user", "content": "hi"}]
    assert starts_user_turn(
        API_OPENAI_RESPONSES, {"input": easy, "previous_response_id": "resp_1"}
    ).starts_turn


def test_gemini_turns() -> None:
    contents = [{"role": "user", "parts": [{"text": "weather in Paris?"}]}]
    assert starts_user_turn(API_GEMINI, {"contents": contents}).starts_turn is True
    contents += [
        {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"t": 20}}}]},
    ]
    assert starts_user_turn(API_GEMINI, {"contents": contents}).starts_turn is False


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        {"messages": "x"},
        {"messages": []},
        {"messages": [5]},
        {"contents": [{"role": "user", "parts": "x"}]},
        {"input": [None]},
    ],
)
def test_unreadable_conversations_are_unknown_not_errors(body) -> None:
    for api in (API_ANTHROPIC_MESSAGES, API_OPENAI_CHAT, API_OPENAI_RESPONSES, API_GEMINI, "other"):
        assert starts_user_turn(api, body).starts_turn in (None, False)


def test_hostile_bodies_are_bounded_and_never_raise() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    huge_number = b'{"metadata": {"user_id": 1' + b"0" * 50_000 + b"}}"
    for raw in (deep, huge_number, b"\xff\xfe\x00garbage", b'{"metadata": {"user_id": "\\ud800"}}', b""):
        assert name_session({}, raw).rung in (Rung.NONE, Rung.CLAUDE_CODE_METADATA)
        parse_json_body(raw)
    started = time.perf_counter()
    giant = "a" * (4 * 1024 * 1024)
    headers = {"x-codex-turn-metadata": "{" + giant, "x-claude-code-agent-type": giant, "session-id": giant}
    assert name_session(headers).session_id.startswith("sha256:")
    sub_agent(headers)
    assert time.perf_counter() - started < 1.0


def test_random_structures_never_raise() -> None:
    rng = random.Random(15)
    atoms = [None, True, 0, -1, 2**70, 1.5, "", "user", "tool_result", "x" * 300, "\udcff", [], {}]
    keys = [
        "role",
        "content",
        "type",
        "parts",
        "messages",
        "input",
        "contents",
        "metadata",
        "user_id",
        "session_id",
        "text",
        "functionResponse",
        "request_kind",
        "parent_thread_id",
    ]

    def build(depth: int):
        if depth == 0 or rng.random() < 0.3:
            return rng.choice(atoms)
        if rng.random() < 0.5:
            return [build(depth - 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(keys): build(depth - 1) for _ in range(rng.randint(0, 4))}

    for _ in range(3000):
        body = build(6)
        for api in (API_ANTHROPIC_MESSAGES, API_OPENAI_CHAT, API_OPENAI_RESPONSES, API_GEMINI):
            starts_user_turn(api, body)
        name_session({"x-codex-turn-metadata": json.dumps(body, default=str)}, body)
        sub_agent({"x-codex-turn-metadata": json.dumps(body, default=str)})


# -- what Codex CLI sends ------------------------------------------------------------------------

#: The session headers of a `codex exec` call, as codex-cli 0.171.0 sent them to the stand-in
#: (tests/integration/agents/test_codex_cli.py runs that binary).
CODEX_0_171 = {
    "x-codex-beta-features": "remote_compaction_v2",
    "x-codex-window-id": "01a2399b-1899-77e3-ae8e-609cc7673b15:0",
    "x-codex-turn-metadata": json.dumps({
        "installation_id": "89d65a8f-e73d-475e-99c3-632676231787",
        "session_id": "01a2399b-1899-77e3-ae8e-609cc7673b15",
        "thread_id": "01a2399b-1899-77e3-ae8e-609cc7673b15", "agent_name": "/root",
        "turn_id": "01a2399b-18cd-71b1-b748-584868ab04b9", "window_number": 0,
        "request_kind": "turn", "history_initialization": "new", "thread_source": "user",
        "turn_trigger": "exec", "sandbox_mode": "danger-full-access", "model": "gpt-5.1-codex",
    }, separators=(",", ":")),
    "x-client-request-id": "01a2399b-1899-77e3-ae8e-609cc7673b15",
    "session-id": "01a2399b-1899-77e3-ae8e-609cc7673b15",
    "thread-id": "01a2399b-1899-77e3-ae8e-609cc7673b15",
    "originator": "codex_exec",
}


def test_codex_0_171_headers_name_its_session_and_its_main_thread() -> None:
    session = "01a2399b-1899-77e3-ae8e-609cc7673b15"
    assert name_session(CODEX_0_171) == SessionName(session, Rung.CODEX_SESSION_HEADER)
    marker = sub_agent(CODEX_0_171)
    assert (marker.source, marker.agent_id, marker.request_kind, marker.is_sub_agent) == (
        "codex", session, "turn", False)
    # Each of Codex's hints names the same session alone (a proxy between may drop some).
    for kept in ("thread-id", "x-codex-turn-metadata"):
        assert name_session({kept: CODEX_0_171[kept]}).session_id == session


def test_codex_turn_metadata_names_the_thread_when_it_has_no_session() -> None:
    only_thread = {"x-codex-turn-metadata": json.dumps({"thread_id": "thr-1", "request_kind": "turn"})}
    assert name_session(only_thread) == SessionName("thr-1", Rung.CODEX_TURN_METADATA)
    for metadata in ("{}", json.dumps({"session_id": 7}), json.dumps({"session_id": " "}), "[1]", "{bad"):
        assert name_session({"x-codex-turn-metadata": metadata}).rung is Rung.NONE


# -- the Responses API's previous_response_id chain ----------------------------------------------


def test_the_chain_rung_joins_the_earlier_responses_session_only_when_looked_up() -> None:
    body = {"model": "gpt-5.1", "input": "and then?", "previous_response_id": "resp_earlier"}
    assert name_session({}, body, chained=_chained) == SessionName("chained-session", Rung.RESPONSES_CHAIN)
    # Raw bytes are parsed for it as for metadata.user_id.
    assert name_session({}, json.dumps(body).encode(), chained=_chained).rung is Rung.RESPONSES_CHAIN
    # No lookup (a caller that keeps no chain), or a response it does not know: no session.
    assert name_session({}, body) == SessionName("", Rung.NONE)
    unknown = {**body, "previous_response_id": "resp_never_seen"}
    assert name_session({}, unknown, chained=_chained) == SessionName("", Rung.NONE)
    # A lookup is never asked without a previous response.
    asked: list[str] = []
    name_session({}, {"input": "hi"}, chained=lambda r: asked.append(r) or "")
    assert asked == []


@pytest.mark.parametrize("value", [None, 5, "", "   ", "resp_" + "x" * 300, "resp_\x00", ["resp_1"]])
def test_an_unusable_previous_response_id_is_none(value) -> None:
    body = {"input": "x", "previous_response_id": value}
    assert previous_response_id(body) == ""
    assert name_session({}, body, chained=lambda _: "s").rung is Rung.NONE
    assert previous_response_id("resp_1") == previous_response_id(None) == ""


def test_response_chains_remember_sessions_per_agent_and_forget_the_oldest() -> None:
    chains = ResponseChains(max_entries=3)
    chains.remember("agent-a", "resp_1", "ses-1")
    assert chains.session_of("agent-a", "resp_1") == "ses-1"
    # Another agent naming agent-a's response joins nothing.
    assert chains.session_of("agent-b", "resp_1") == ""
    assert chains.lookup("agent-a")("resp_1") == "ses-1" and chains.lookup("agent-b")("resp_1") == ""
    for empty in (("", "resp_x", "s"), ("a", "", "s"), ("a", "resp_x", ""), ("a", "r" * 300, "s")):
        chains.remember(*empty)
    assert len(chains) == 1
    chains.remember("agent-a", "resp_2", "ses-1")
    chains.remember("agent-a", "resp_3", "ses-2")
    assert chains.session_of("agent-a", "resp_1") == "ses-1"  # used: now the most recent
    chains.remember("agent-a", "resp_4", "ses-2")
    assert len(chains) == 3
    assert chains.session_of("agent-a", "resp_2") == ""  # the least recently used went
    kept = [chains.session_of("agent-a", r) for r in ("resp_1", "resp_3", "resp_4")]
    assert kept == ["ses-1", "ses-2", "ses-2"]


def _standin_reply(scenario: str, payload: dict[str, object]) -> tuple[bytes, list[bytes]]:
    """The OpenAI stand-in's Responses reply to `payload`: the JSON object and the stream's writes."""
    seed_body = canonical(payload, "stream", "stream_options")
    plan = plan_reply(scenario, Seed(seed_body), payload, {}, len(seed_body))
    return json.dumps(responses_object(plan, payload)).encode(), responses_events(plan, payload)


@pytest.mark.parametrize("scenario", ["text", "tool_calls", "reasoning"])
def test_response_id_in_reads_the_responses_own_id_from_an_object_or_a_stream(scenario) -> None:
    payload: dict[str, object] = {
        "model": "gpt-5.1", "input": "go on", "previous_response_id": "resp_earlier",
        "tools": [{"type": "function", "name": "shell", "parameters": {}}],
    }
    whole, events = _standin_reply(scenario, payload)
    own = json.loads(whole)["id"]
    assert own.startswith("resp_") and own != "resp_earlier"
    assert response_id_in(whole) == own
    # A stream: the first write (response.created) names it.
    assert response_id_in(events[0]) == own == response_id_in(b"".join(events))
    # Whatever the key order: `previous_response_id` is never taken for the id.
    reordered = json.dumps({"previous_response_id": "resp_earlier", "object": "response", "id": own})
    assert response_id_in(reordered.encode()) == own
    for nothing in (b"", b'{"id": "chatcmpl-1"}', b'{"error": {"message": "x"}}', b"\xff" * 100):
        assert response_id_in(nothing) == ""
