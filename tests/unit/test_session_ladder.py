"""The session ladder (rungs and their order), sub-agent markers and user turns, against the request
shapes Claude Code, Codex and the SDKs send; hostile input is bounded and never raises."""

from __future__ import annotations

import json
import random
import time

import pytest
from multidict import CIMultiDict

from smoltbot.core.sessions import (
    Rung,
    SessionName,
    name_session,
    parse_json_body,
    starts_user_turn,
    sub_agent,
    usable_session_id,
)
from smoltbot.core.usage import API_ANTHROPIC_MESSAGES, API_GEMINI, API_OPENAI_CHAT, API_OPENAI_RESPONSES

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
    (Rung.SESSION_AFFINITY_HEADER, {"x-session-affinity": "openclaw"}),
]
EXPECTED = {
    Rung.SMOLTBOT_HEADER: "ours",
    Rung.CLAUDE_CODE_HEADER: "cc-header",
    Rung.CLAUDE_CODE_METADATA: CC_SESSION,
    Rung.CODEX_SESSION_HEADER: "codex-session",
    Rung.CODEX_THREAD_HEADER: "codex-thread",
    Rung.CODEX_LEGACY_SESSION_HEADER: "codex-old-session",
    Rung.CODEX_LEGACY_CONVERSATION_HEADER: "codex-old-conversation",
    Rung.SESSION_AFFINITY_HEADER: "openclaw",
}


def _request(rungs):
    headers: dict[str, str] = {"content-type": "application/json", "authorization": "Bearer sk-x"}
    body = {"model": "m", "messages": []}
    for _, value in rungs:
        if value == "body":
            body = CC_BODY
        else:
            headers.update(value)
    return headers, body


@pytest.mark.parametrize("index", range(len(LADDER)))
def test_each_rung_alone_names_the_session(index) -> None:
    rung = LADDER[index][0]
    headers, body = _request([LADDER[index]])
    assert name_session(headers, body) == SessionName(EXPECTED[rung], rung)


@pytest.mark.parametrize("index", range(len(LADDER)))
def test_a_rung_beats_every_rung_below_it(index) -> None:
    headers, body = _request(LADDER[index:])
    rung = LADDER[index][0]
    assert name_session(headers, body) == SessionName(EXPECTED[rung], rung)


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
