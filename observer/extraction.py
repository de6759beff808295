"""Reading one model call: the model's reasoning and its actions, whatever the provider.

This module holds what every provider's reading produces (`Extraction`: the reasoning
segments, the tool calls, the reply text, what could not be read) and the rules they share;
each provider's wire format is read by its own module in `observer.providers` (Anthropic
Messages, OpenAI Chat Completions and Responses, Gemini generateContent), picked by
`providers.wire_format(provider, method, path)`. `extract()` is the one entry point.

Only the response, the new assistant turn, is read for reasoning and actions. The
request's conversation (`messages`, `input`, `contents`: earlier turns, including earlier
tool calls and thinking that clients send back) is never read: it was traced already, or
it is text the client made up. From the request we take the model (a fallback when the
response has none), the names of the offered tools and the size of the system prompt.

Bodies may be anything: empty, non-UTF-8, not JSON, an error object, a stream reassembled
only in part. Whatever cannot be read is said in `missing`, never guessed.

A tool call the model did not finish is marked `finished=False` with a note: its input does
not parse as JSON, or the response stopped inside it (out of tokens, or a stream that ended
before the call was done). An agent does not execute such a call, so it is never traced as
an execution.

Numbers keep their JSON type and value (Python's json reads integers exactly). A number JSON
cannot carry (Infinity or NaN, which a lenient producer may emit for 1e400) is kept as its
text, with a note, so a trace never holds a value no JSON reader accepts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from smoltbot.core.outcomes import ExchangeOutcome

__all__ = [
    "MAX_RAW_INPUT",
    "REDACTED_SOURCES",
    "Decision",
    "Extraction",
    "ReasoningSegment",
    "ToolCall",
    "decode_text",
    "extract",
    "finite_input",
    "json_object_input",
    "load_json",
]

MAX_RAW_INPUT = 2000
#: Reasoning the provider returned only in a form nobody can read: Anthropic's
#: redacted_thinking, an OpenAI reasoning item with nothing but encrypted_content or with nothing
#: at all (no summary asked for).
REDACTED_SOURCES = frozenset({"redacted_thinking", "encrypted_reasoning", "withheld_reasoning"})


@dataclass(frozen=True)
class ReasoningSegment:
    #: Anthropic: thinking | redacted_thinking | tags. OpenAI Responses: reasoning_text |
    #: reasoning_summary | encrypted_reasoning | withheld_reasoning. Chat Completions:
    #: reasoning_content.
    #: Gemini: thought_summary.
    source: str
    text: str  # "" for redacted and encrypted reasoning (content unknown) and omitted thinking
    block_index: int
    signature_present: bool = False
    unclosed: bool = False  # a <thinking> tag the text ended inside (truncated)
    #: The text is the provider's summary of the reasoning, not the reasoning itself (OpenAI
    #: reasoning summaries, Gemini thought summaries).
    summary: bool = False

    @property
    def redacted(self) -> bool:
        return self.source in REDACTED_SOURCES


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]
    block_index: int
    #: Run by the provider, not by the agent (Anthropic server tools, OpenAI's hosted
    #: web_search / file_search / code_interpreter / MCP calls).
    server: bool = False
    input_valid: bool = True
    raw_input: str = ""  # the unparseable input text, clipped, when input_valid is False
    #: False when the model did not finish the call (see the module docstring); an agent does
    #: not execute it.
    finished: bool = True
    unfinished_reason: str = ""
    #: The wire form of the call: tool_use, server_tool_use, function, custom, functionCall,
    #: or a built-in tool's item type (web_search_call, local_shell_call, shell_call, ...).
    call_type: str = ""


@dataclass(frozen=True)
class Decision:
    """One decision of an exchange; it becomes one trace."""

    kind: str  # tool | reply | failure | unreadable
    index: int
    tool_call: ToolCall | None = None
    # The reasoning that preceded this decision in the response.
    reasoning: tuple[ReasoningSegment, ...] = ()


@dataclass
class Extraction:
    model: str = ""
    stop_reason: str = ""
    reasoning: list[ReasoningSegment] = field(default_factory=list)
    final_text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    http_status: int = 0
    streamed: bool = False
    outcome: str = ExchangeOutcome.COMPLETE
    parsed: bool = False  # whether the response body was a readable reply
    message_id: str = ""
    error_type: str = ""
    error_message: str = ""
    request_tools: list[str] = field(default_factory=list)
    system_prompt_chars: int = 0
    #: `Exchange.provider` (anthropic | openai | gemini) and the API read (`core.usage` ids).
    provider: str = "anthropic"
    api: str = "anthropic.messages"
    #: Set when a reply that arrived whole says the call failed (an OpenAI Responses
    #: `response.failed`): the call is then one failure decision, like an upstream error.
    failure: str = ""

    @property
    def redacted_blocks(self) -> int:
        return sum(1 for s in self.reasoning if s.redacted)

    @property
    def signature_present(self) -> bool:
        return any(s.signature_present for s in self.reasoning)

    @property
    def summary_only(self) -> bool:
        """The reasoning read is only the provider's summary of it (no segment holds the reasoning
        itself)."""
        return any(s.summary and s.text for s in self.reasoning) and not any(
            s.text and not s.summary for s in self.reasoning)

    @property
    def reasoning_text(self) -> str:
        return "\n\n".join(s.text for s in self.reasoning if s.text)

    def decisions(self, outcome: str | None = None) -> list[Decision]:
        """The exchange's decisions, in order: one per tool call, else one reply.

        A failed exchange (any outcome but "complete", or a reply that reports a failure) is
        exactly one "failure" decision; a complete exchange whose body could not be read is one
        "unreadable" decision.
        """
        outcome = outcome or self.outcome
        everything = tuple(self.reasoning)
        if outcome != ExchangeOutcome.COMPLETE or self.failure:
            return [Decision("failure", 0, reasoning=everything)]
        if not self.parsed:
            return [Decision("unreadable", 0, reasoning=everything)]
        if not self.tool_calls:
            return [Decision("reply", 0, reasoning=everything)]
        out: list[Decision] = []
        previous_block = -1
        shared: tuple[ReasoningSegment, ...] = ()
        for i, call in enumerate(self.tool_calls):
            own = tuple(s for s in self.reasoning if previous_block < s.block_index < call.block_index)
            # Parallel tool calls after one reasoning block share that reasoning;
            # interleaved reasoning gives each call its own.
            if own:
                shared = own
            out.append(Decision("tool", i, tool_call=call, reasoning=own or shared))
            previous_block = call.block_index
        return out


def decode_text(body: bytes, what: str, missing: list[str]) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        missing.append(f"{what} body is not valid UTF-8 (decoded with replacement characters)")
        return body.decode("utf-8", errors="replace")


def load_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def finite_input(value: Any, name: str, ex: Extraction) -> Any:
    """`value` with every non-finite float replaced by its text ("Infinity", "NaN")."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except ValueError:
        pass
    except RecursionError:
        return value
    ex.missing.append(f"tool input of '{name}' held a number JSON cannot carry (Infinity or NaN); "
                      "kept as text")

    def fix(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
        if isinstance(item, dict):
            return {key: fix(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [fix(inner) for inner in item]
        return item

    return fix(value)


def json_object_input(text: str, name: str, ex: Extraction) -> tuple[dict[str, Any], bool, str]:
    """A tool call's input sent as JSON text (Anthropic's partial_json, OpenAI's `arguments`):
    (input, valid, raw text kept when it does not parse as an object). Empty text is {}."""
    parsed = load_json(text) if text.strip() else {}
    if isinstance(parsed, dict):
        return finite_input(parsed, name, ex), True, ""
    ex.missing.append(f"tool input of '{name}' was not valid JSON: the call was not finished and is "
                      "traced as not executed")
    return {}, False, text[:MAX_RAW_INPUT]


def extract(
    request_body: bytes,
    response_body: bytes,
    *,
    http_status: int,
    streamed: bool,
    outcome: str,
    stream_error: bytes = b"",
    provider: str = "",
    path: str = "",
) -> Extraction:
    """Read an exchange's response (and the request's model/tools/system size) with the wire
    format of `provider` and `path` (Anthropic Messages when both are empty)."""
    # Imported here: the provider modules build on this module's types.
    from smoltbot.observer.providers import read_exchange

    return read_exchange(request_body, response_body, http_status=http_status, streamed=streamed,
                         outcome=outcome, stream_error=stream_error, provider=provider, path=path)
