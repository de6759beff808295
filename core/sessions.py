"""Which session a model call belongs to, which sub-agent made it, and whether it starts a user turn.

Pure functions of a request's headers and body, shared by the gateway (which names the session
before relaying) and the observer (which reads the same request again): one ladder, one place.
The one piece of memory, `ResponseChains`, is what the `previous_response_id` rung looks up.

The ladder names the session from the most specific hint to the least, and says which rung did:

 1. `x-smoltbot-session`           the operator's own name for it
 2. `x-claude-code-session-id`     Claude Code (gateway protocol docs; every request)
 3. `metadata.user_id` in the body Claude Code: a JSON string `{"device_id", "account_uuid",
                                   "session_id"}` since v2.1.78, before that
                                   `user_<hash>_account_<uuid>_session_<uuid>`
 4. `session-id`, `thread-id`      Codex CLI; older builds sent `session_id` / `conversation_id`
 5. `x-codex-turn-metadata`        Codex CLI: the `session_id` (else `thread_id`) in its JSON
 6. `x-session-affinity`           OpenClaw's Anthropic transport
 7. `previous_response_id`         Responses API: a call continuing an earlier response joins that
                                   response's session, when the caller can look it up (`chained`):
                                   the gateway from `ResponseChains`, its memory of the session each
                                   recent response of the agent was given; the observer from the
                                   session the gateway named (the exchange's session hint)
 then "none": the plugin's reports and the idle-gap rule are applied elsewhere.

Sub-agents: Claude Code marks a sub-agent's requests with `x-claude-code-agent-id`,
`x-claude-code-parent-agent-id` (and, with hint headers on, `x-claude-code-agent-type`); the
session id stays the parent's. Codex marks them in the JSON of `x-codex-turn-metadata`
(`request_kind: "subagent_turn"`, `thread_source: "subagent"`, `parent_thread_id`,
`subagent_kind`) and in `x-openai-subagent` / `x-codex-parent-thread-id`.

All of it is bounded and never raises: header values are cut to a few KB before they are looked
at, the body is only parsed when no header named the session and only up to a size limit, and
only the last message of a conversation is ever examined.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from smoltbot.core.ids import MAX_SESSION_ID_LENGTH
from smoltbot.core.usage import API_ANTHROPIC_MESSAGES, API_GEMINI, API_OPENAI_CHAT, API_OPENAI_RESPONSES

__all__ = [
    "RESPONSE_ID_SCAN_BYTES",
    "ResponseChains",
    "Rung",
    "SessionName",
    "SubAgent",
    "TurnStart",
    "name_session",
    "parse_json_body",
    "previous_response_id",
    "response_id_in",
    "starts_user_turn",
    "sub_agent",
    "usable_session_id",
]

#: Header values longer than this are not read (a session id or a small JSON object fits easily).
_MAX_HEADER = 8 * 1024
#: Bodies larger than this are not parsed for `metadata.user_id` (the gateway's own request limit
#: is larger; the observer parses bodies anyway and can pass the parsed object in).
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


class Rung(StrEnum):
    """Which hint named the session."""

    SMOLTBOT_HEADER = "x-smoltbot-session"
    CLAUDE_CODE_HEADER = "x-claude-code-session-id"
    CLAUDE_CODE_METADATA = "metadata.user_id"
    CLAUDE_CODE_METADATA_LEGACY = "metadata.user_id:legacy"
    CODEX_SESSION_HEADER = "session-id"
    CODEX_THREAD_HEADER = "thread-id"
    CODEX_LEGACY_SESSION_HEADER = "session_id"
    CODEX_LEGACY_CONVERSATION_HEADER = "conversation_id"
    CODEX_TURN_METADATA = "x-codex-turn-metadata"
    SESSION_AFFINITY_HEADER = "x-session-affinity"
    RESPONSES_CHAIN = "previous_response_id"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class SessionName:
    """The session a request names ("" with rung NONE when it names none)."""

    session_id: str
    rung: Rung


@dataclass(frozen=True, slots=True)
class SubAgent:
    """Who inside the session made a call: the main agent, or a sub-agent and its parent."""

    #: "claude_code", "codex" or "" (no sub-agent markers).
    source: str = ""
    agent_id: str = ""
    parent_agent_id: str = ""
    #: Claude Code's agent type ("Explore", ...), or Codex's subagent_kind / x-openai-subagent.
    agent_type: str = ""
    #: Codex's request_kind, as sent ("subagent_turn", "compaction", ...).
    request_kind: str = ""
    is_sub_agent: bool = False


@dataclass(frozen=True, slots=True)
class TurnStart:
    """Whether a request starts a new user turn.

    `starts_turn` is None when the body is not a conversation this module can read. `position` is
    the index of the new prompt in the conversation (messages / contents / input items): a retry
    of the same request has the same position, so a turn is counted once."""

    starts_turn: bool | None
    position: int | None = None


_HeaderSource = Mapping[str, str] | Iterable[tuple[str, str]]

_HEADER_RUNGS: tuple[tuple[str, Rung], ...] = (
    ("x-smoltbot-session", Rung.SMOLTBOT_HEADER),
    ("x-claude-code-session-id", Rung.CLAUDE_CODE_HEADER),
)
_CODEX_HEADER_RUNGS: tuple[tuple[str, Rung], ...] = (
    ("session-id", Rung.CODEX_SESSION_HEADER),
    ("thread-id", Rung.CODEX_THREAD_HEADER),
    ("session_id", Rung.CODEX_LEGACY_SESSION_HEADER),
    ("conversation_id", Rung.CODEX_LEGACY_CONVERSATION_HEADER),
)
#: Claude Code before v2.1.78: user_<64 hex>_account_<uuid or empty>_session_<uuid>.
_LEGACY_USER_ID = re.compile(r"user_([0-9A-Za-z]*)_account_([0-9A-Za-z-]*)_session_([0-9A-Za-z-]+)")
_MAX_USER_ID = 4 * 1024


def name_session(headers: _HeaderSource, body: Any = None, *,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 chained: Callable[[str], str] | None = None) -> SessionName:
    """The session named by a request, from the ladder above.

    `body` is the parsed JSON body, or its raw bytes (parsed only if no earlier rung matched, and
    only up to `max_body_bytes`), or None. `chained` maps a `previous_response_id` to the session
    of that response ("" when unknown); without it the chain rung is skipped."""
    lowered = _lower(headers)
    for name, rung in _HEADER_RUNGS:
        value = _header(lowered, name)
        if value:
            return SessionName(usable_session_id(value), rung)
    if isinstance(body, bytes | bytearray | memoryview):
        body = parse_json_body(bytes(body), max_bytes=max_body_bytes)
    from_metadata = _claude_code_metadata_session(body)
    if from_metadata is not None:
        return from_metadata
    for name, rung in _CODEX_HEADER_RUNGS:
        value = _header(lowered, name)
        if value:
            return SessionName(usable_session_id(value), rung)
    metadata = _json_object(_header(lowered, "x-codex-turn-metadata"))
    codex_session = _string(metadata.get("session_id")) or _string(metadata.get("thread_id"))
    if codex_session:
        return SessionName(usable_session_id(codex_session), Rung.CODEX_TURN_METADATA)
    value = _header(lowered, "x-session-affinity")
    if value:
        return SessionName(usable_session_id(value), Rung.SESSION_AFFINITY_HEADER)
    if chained is not None:
        previous = previous_response_id(body)
        session = chained(previous) if previous else ""
        if session:
            return SessionName(usable_session_id(session), Rung.RESPONSES_CHAIN)
    return SessionName("", Rung.NONE)


def previous_response_id(body: Any) -> str:
    """The Responses API request's `previous_response_id` ("" when it has none usable). `body` is
    the parsed JSON body."""
    if not isinstance(body, Mapping):
        return ""
    value = _string(body.get("previous_response_id"))
    return value if len(value) <= _MAX_RESPONSE_ID and value.isprintable() else ""


#: A Responses API response id as OpenAI mints them, as the first `"id"` of a response object
#: (output items' ids are `msg_`, `fc_`, `rs_`, ...) or of a stream's `response.created` event.
_RESPONSE_ID = re.compile(rb'"id"\s*:\s*"(resp_[0-9A-Za-z_-]{1,250})"')
_MAX_RESPONSE_ID = 256
#: How much of a response's first bytes `response_id_in` reads.
RESPONSE_ID_SCAN_BYTES = 64 * 1024


def response_id_in(head: bytes) -> str:
    """The id of a Responses API response, from its first bytes: a JSON response object, or an
    event stream (its `response.created` event names it). "" when none is found."""
    found = _RESPONSE_ID.search(head, 0, RESPONSE_ID_SCAN_BYTES)
    return found.group(1).decode() if found else ""


class ResponseChains:
    """The session each recent Responses API response was given, per agent: what the
    `previous_response_id` rung looks up (`chained=chains.lookup(agent)`).

    Keyed by agent, so a call only ever joins a session of its own agent. Bounded: past
    `max_entries` the least recently used are forgotten (a call continuing one of those falls to
    the idle-gap rule). Safe to share between threads."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max(1, max_entries)
        self._sessions: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def remember(self, agent: str, response_id: str, session_id: str) -> None:
        """Records that `response_id` (of `agent`) was given `session_id`; empty ids are ignored."""
        if not (agent and response_id and session_id) or len(response_id) > _MAX_RESPONSE_ID:
            return
        with self._lock:
            self._sessions[(agent, response_id)] = session_id
            self._sessions.move_to_end((agent, response_id))
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)

    def session_of(self, agent: str, response_id: str) -> str:
        """The session `agent`'s response `response_id` was given, "" when not remembered."""
        with self._lock:
            session = self._sessions.get((agent, response_id), "")
            if session:
                self._sessions.move_to_end((agent, response_id))
            return session

    def lookup(self, agent: str) -> Callable[[str], str]:
        """`session_of` for one agent, in the form `name_session(chained=...)` takes."""
        return lambda response_id: self.session_of(agent, response_id)


def sub_agent(headers: _HeaderSource) -> SubAgent:
    """The sub-agent markers of a request (Claude Code's headers, then Codex's)."""
    lowered = _lower(headers)
    agent_id = _header(lowered, "x-claude-code-agent-id")
    parent = _header(lowered, "x-claude-code-parent-agent-id")
    agent_type = _header(lowered, "x-claude-code-agent-type")
    if agent_id or parent or agent_type:
        return SubAgent(
            source="claude_code",
            agent_id=usable_session_id(agent_id) if agent_id else "",
            parent_agent_id=usable_session_id(parent) if parent else "",
            agent_type=_bounded(agent_type),
            # The docs: these headers are sent "for subagents"; the main agent sends none.
            is_sub_agent=bool(agent_id or parent),
        )
    metadata = _json_object(_header(lowered, "x-codex-turn-metadata"))
    openai_subagent = _header(lowered, "x-openai-subagent")
    parent_thread = _header(lowered, "x-codex-parent-thread-id") or _string(metadata.get("parent_thread_id"))
    request_kind = _string(metadata.get("request_kind"))
    thread_source = _string(metadata.get("thread_source"))
    kind = _string(metadata.get("subagent_kind")) or openai_subagent
    thread = _header(lowered, "thread-id") or _string(metadata.get("thread_id"))
    if not (metadata or openai_subagent or parent_thread):
        return SubAgent()
    return SubAgent(
        source="codex",
        agent_id=usable_session_id(thread) if thread else "",
        parent_agent_id=usable_session_id(parent_thread) if parent_thread else "",
        agent_type=_bounded(kind),
        request_kind=_bounded(request_kind),
        is_sub_agent=bool(parent_thread) or request_kind == "subagent_turn" or thread_source == "subagent",
    )


def starts_user_turn(api: str, body: Any) -> TurnStart:
    """Whether the request body's conversation ends in a new user prompt (not a tool result).

    Only the last message is examined. Anthropic: a user message with text, image or document
    content and no `tool_result` block. OpenAI Chat: a `user` message (not `tool`/`function`).
    Responses: a string `input`, or a last input item that is a user message (not a
    `*_call_output`). Gemini: a `user` content with no `functionResponse` part."""
    if not isinstance(body, Mapping):
        return TurnStart(None)
    if api == API_ANTHROPIC_MESSAGES:
        return _last_of(body.get("messages"), _anthropic_prompt)
    if api == API_OPENAI_CHAT:
        return _last_of(body.get("messages"), _chat_prompt)
    if api == API_OPENAI_RESPONSES:
        items = body.get("input")
        if isinstance(items, str):
            return TurnStart(bool(items.strip()), 0)
        return _last_of(items, _responses_prompt)
    if api == API_GEMINI:
        return _last_of(body.get("contents"), _gemini_prompt)
    return TurnStart(None)


def parse_json_body(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Any:
    """The parsed JSON of a request body, or None when it is too large or not JSON. Never raises
    (deep nesting, odd bytes and 10,000-digit numbers included)."""
    if len(raw) > max_bytes:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def usable_session_id(value: str) -> str:
    """The id as the Registry (and protobuf) can take it: printable text of at most 256 characters
    as sent; anything else (non-UTF-8 bytes arrive as surrogates, control characters, a longer
    name) by a digest of its bytes, so its calls still share one session.

    Same rule as the gateway's session hint, so both name a session the same way."""
    if len(value) <= MAX_SESSION_ID_LENGTH and value.isprintable():
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


# -- helpers -------------------------------------------------------------------------------------


def _lower(headers: _HeaderSource) -> dict[str, str]:
    """Header names lowered, the first value of each kept (a repeated header does not override)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lowered: dict[str, str] = {}
    for name, value in pairs:
        if isinstance(name, str) and isinstance(value, str):
            lowered.setdefault(name.lower(), value)
    return lowered


def _header(lowered: Mapping[str, str], name: str) -> str:
    value = lowered.get(name, "")
    if len(value) > _MAX_HEADER:
        # Still a usable name (by digest), but never scanned further.
        return value[:_MAX_HEADER] + "\x00truncated"
    return value.strip()


def _claude_code_metadata_session(body: Any) -> SessionName | None:
    if not isinstance(body, Mapping):
        return None
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str) or not user_id or len(user_id) > _MAX_USER_ID:
        return None
    user_id = user_id.strip()
    if user_id.startswith("{"):
        parsed = _json_object(user_id)
        session = parsed.get("session_id")
        if isinstance(session, str) and session.strip():
            return SessionName(usable_session_id(session.strip()), Rung.CLAUDE_CODE_METADATA)
        return None
    legacy = _LEGACY_USER_ID.fullmatch(user_id)
    if legacy:
        return SessionName(usable_session_id(legacy.group(3)), Rung.CLAUDE_CODE_METADATA_LEGACY)
    return None


def _json_object(text: str) -> dict[str, Any]:
    if not text or len(text) > _MAX_HEADER or not text.lstrip().startswith("{"):
        return {}
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _string(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _bounded(value: str) -> str:
    return value if len(value) <= 128 and value.isprintable() else usable_session_id(value)


def _last_of(items: Any, judge: Any) -> TurnStart:
    if not isinstance(items, list) or not items:
        return TurnStart(None)
    position = len(items) - 1
    verdict = judge(items[position])
    return TurnStart(verdict, position if verdict is not None else None)


def _anthropic_prompt(message: Any) -> bool | None:
    if not isinstance(message, Mapping):
        return None
    if message.get("role") != "user":
        return False
    content = message.get("content")
    if isinstance(content, str):
        return bool(content.strip())
    if not isinstance(content, list):
        return None
    has_prompt = False
    for block in content[:256]:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "tool_result":
            # Claude Code appends reminders next to tool results; the turn goes on.
            return False
        if kind in ("text", "image", "document", "search_result"):
            has_prompt = has_prompt or kind != "text" or bool(_string(block.get("text")))
    return has_prompt


def _chat_prompt(message: Any) -> bool | None:
    if not isinstance(message, Mapping):
        return None
    role = message.get("role")
    if role == "user":
        return True
    if role in ("tool", "function", "assistant", "system", "developer"):
        return False
    return None


_RESPONSES_OUTPUT_ITEMS = frozenset({
    "function_call_output", "custom_tool_call_output", "computer_call_output", "local_shell_call_output",
    "shell_call_output", "apply_patch_call_output", "mcp_approval_response", "mcp_call",
})


def _responses_prompt(item: Any) -> bool | None:
    if not isinstance(item, Mapping):
        return None
    kind = item.get("type")
    if kind is not None and kind != "message":
        # function_call_output and its siblings (see _RESPONSES_OUTPUT_ITEMS), reasoning, or an
        # item this module does not know: none of them is a new prompt.
        return False
    return item.get("role") == "user"


def _gemini_prompt(content: Any) -> bool | None:
    if not isinstance(content, Mapping):
        return None
    if content.get("role", "user") != "user":
        return False
    parts = content.get("parts")
    if not isinstance(parts, list):
        return None
    has_prompt = False
    for part in parts[:256]:
        if not isinstance(part, Mapping):
            continue
        if "functionResponse" in part or "function_response" in part:
            return False
        if _string(part.get("text")) or "inlineData" in part or "fileData" in part \
                or "inline_data" in part or "file_data" in part:
            has_prompt = True
    return has_prompt
