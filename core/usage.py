"""Tokens of one model call, from the provider's own usage object, in one shape for every provider.

Each provider counts differently, and observability tools get it wrong in public by adding a part
twice or dropping one. A `TokenUsage` keeps the parts that are billed at different rates apart, so
that every token appears in exactly one of them:

    input             uncached prompt tokens (billed at the base input rate)
    cache_read        prompt tokens served from the provider's prompt cache
    cache_write_5m    prompt tokens written to the cache with a 5-minute TTL (Anthropic)
    cache_write_1h    prompt tokens written to the cache with a 1-hour TTL (Anthropic)
    cache_write_unknown_ttl  cache writes the provider reported without saying their TTL
    output            every generated token billed at the output rate, reasoning included

`reasoning` is the share of `output` the provider reports as thinking: informational, never added
to anything again. A part the provider did not report is None, which is not 0: "no cache reads"
and "we were not told" are different facts, and a total over calls says how many calls were silent.

What each provider sends, and where it is documented:

- Anthropic Messages (`usage`): "Total input tokens in a request is the summation of
  `input_tokens`, `cache_creation_input_tokens`, and `cache_read_input_tokens`" (Messages API
  reference, and /work/shared/reference/anthropic-wire.md §2), so `input_tokens` already excludes
  both cache parts. `cache_creation` splits the writes into `ephemeral_5m_input_tokens` and
  `ephemeral_1h_input_tokens` (prompt-caching guide, "1-hour cache duration"). Thinking is billed
  as output; `output_tokens_details.thinking_tokens` is its share where sent. `service_tier`
  (standard|priority|batch), `speed` ("fast") and `inference_geo` change the price.
- OpenAI Chat Completions (`usage`): `prompt_tokens` INCLUDES `prompt_tokens_details.cached_tokens`
  (prompt-caching guide: `"prompt_tokens": 2006 ... "cached_tokens": 1920`, and the identical
  shape at docs.x.ai/developers/advanced-api-usage/prompt-caching/usage-and-pricing: 125 prompt
  tokens of which 98 cached, total 173 = 125 + 48), so uncached input = prompt - cached.
  `completion_tokens` includes `completion_tokens_details.reasoning_tokens`. There is no cache
  write charge, and no write count. `service_tier` sits on the response, not in `usage`.
- OpenAI Responses (`usage`): `input_tokens` includes `input_tokens_details.cached_tokens` and
  `output_tokens` includes `output_tokens_details.reasoning_tokens` (the same docs page shows
  input 125 / cached 98 / output 48 / total 173).
- Gemini (`usageMetadata`): "promptTokenCount: Number of tokens in the prompt. When cached_content
  is set, this is still the total effective prompt size meaning this includes the number of tokens
  in the cached content" (GenerateContentResponse.UsageMetadata reference), so uncached input =
  prompt - cachedContentTokenCount. `candidatesTokenCount` excludes `thoughtsTokenCount` (both are
  listed apart and `totalTokenCount` adds them), and the pricing page bills output "including
  thinking tokens", so output = candidates + thoughts. `toolUsePromptTokenCount` ("tokens present
  in tool-use prompt(s)") is not part of promptTokenCount and is billed as input: it is added to
  `input`. Token counts per modality (`promptTokensDetails`) flag audio, which is priced apart.

Parsing is bounded and never raises: counts that are not plain non-negative integers below 2**53
are treated as not reported, and every such oddity is kept in `notes` (a record that fails
silently is a bug), so a hostile or broken reply cannot make a cost up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

__all__ = [
    "API_ANTHROPIC_MESSAGES",
    "API_GEMINI",
    "API_OPENAI_CHAT",
    "API_OPENAI_RESPONSES",
    "TokenUsage",
    "UsageTotals",
    "anthropic_usage",
    "gemini_usage",
    "openai_chat_usage",
    "openai_responses_usage",
    "usage_from_response",
    "with_conditions",
]

Api = Literal["anthropic.messages", "openai.chat", "openai.responses", "gemini.generate"]
API_ANTHROPIC_MESSAGES: Api = "anthropic.messages"
API_OPENAI_CHAT: Api = "openai.chat"
API_OPENAI_RESPONSES: Api = "openai.responses"
API_GEMINI: Api = "gemini.generate"

_PROVIDER_OF: dict[str, str] = {
    API_ANTHROPIC_MESSAGES: "anthropic",
    API_OPENAI_CHAT: "openai",
    API_OPENAI_RESPONSES: "openai",
    API_GEMINI: "gemini",
}

#: Larger counts are not believable (and would overflow a float or a BIGINT-backed JS client).
_MAX_COUNT = 2**53
#: Bounds on what is read from a reply: the note texts and the odd-value previews.
_MAX_NOTE = 160

#: The token parts, in the order they are shown; `reasoning` is informational (part of output).
TOKEN_PARTS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "cache_write_unknown_ttl", "output")


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """The tokens of one call, each billed part once. None: the provider did not report it."""

    provider: str
    input: int | None = None
    cache_read: int | None = None
    cache_write_5m: int | None = None
    cache_write_1h: int | None = None
    cache_write_unknown_ttl: int | None = None
    output: int | None = None
    reasoning: int | None = None
    #: What changes the price beyond the token counts, as the reply stated it: "batch",
    #: "service_tier:priority", "speed:fast", "inference_geo:us", "audio_input",
    #: "web_search_requests:3", ... A price entry that does not price one of these gives an
    #: unknown cost rather than a wrong one.
    conditions: frozenset[str] = frozenset()
    #: Oddities met while reading the provider's object (bad types, inconsistent counts).
    notes: tuple[str, ...] = ()

    @property
    def reported(self) -> bool:
        """Whether the provider reported any token count at all."""
        return any(getattr(self, name) is not None for name in (*TOKEN_PARTS, "reasoning"))

    @property
    def cache_write(self) -> int | None:
        """All cache writes, whatever their TTL; None when no part was reported."""
        return _sum_known(self.cache_write_5m, self.cache_write_1h, self.cache_write_unknown_ttl)

    @property
    def prompt_tokens(self) -> int | None:
        """The whole prompt (uncached + cache reads + cache writes): what long-context price tiers
        are decided on. None when the uncached input is not known."""
        if self.input is None:
            return None
        return self.input + (self.cache_read or 0) + (self.cache_write or 0)

    @property
    def total(self) -> int | None:
        """Prompt and output together, each token once; None when either is unknown."""
        prompt = self.prompt_tokens
        if prompt is None or self.output is None:
            return None
        return prompt + self.output

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, None kept as null (not reported), conditions sorted."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["conditions"] = sorted(self.conditions)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenUsage:
        """The inverse of `as_dict`, as forgiving as the provider parsers (never raises)."""
        notes: list[str] = []
        counts = {name: _count(data, name, notes) for name in (*TOKEN_PARTS, "reasoning")}
        provider = data.get("provider")
        conditions = data.get("conditions")
        stored_notes = data.get("notes")
        return cls(
            provider=provider if isinstance(provider, str) else "",
            conditions=frozenset(_strings(conditions)),
            notes=tuple(_strings(stored_notes)) + tuple(notes),
            **counts,
        )


def anthropic_usage(usage: Any) -> TokenUsage:
    """From a Messages API `usage` object (final message, or the merged stream usage)."""
    notes: list[str] = []
    if not isinstance(usage, Mapping):
        return TokenUsage(provider="anthropic", notes=_not_an_object("usage", usage))
    read = _count(usage, "cache_read_input_tokens", notes)
    created = _count(usage, "cache_creation_input_tokens", notes)
    split = usage.get("cache_creation")
    write_5m = write_1h = unknown_ttl = None
    if isinstance(split, Mapping):
        write_5m = _count(split, "ephemeral_5m_input_tokens", notes, where="cache_creation.")
        write_1h = _count(split, "ephemeral_1h_input_tokens", notes, where="cache_creation.")
        split_sum = _sum_known(write_5m, write_1h)
        if created is not None and split_sum is not None and created != split_sum:
            if created > split_sum:
                # More written than the TTL split accounts for: the rest has no stated TTL.
                unknown_ttl = created - split_sum
            notes.append(f"cache_creation_input_tokens {created} != cache_creation split {split_sum}")
        elif created is not None and split_sum is None:
            unknown_ttl = created
    elif created is not None:
        unknown_ttl = created
        if split is not None:
            notes.append("cache_creation is not an object")
    output = _count(usage, "output_tokens", notes)
    details = usage.get("output_tokens_details")
    reasoning = _count(details, "thinking_tokens", notes, where="output_tokens_details.") \
        if isinstance(details, Mapping) else None
    conditions: set[str] = set()
    tier = usage.get("service_tier")
    if tier == "batch":
        conditions.add("batch")
    elif isinstance(tier, str) and tier not in ("", "standard"):
        conditions.add(f"service_tier:{_short(tier)}")
    speed = usage.get("speed")
    if isinstance(speed, str) and speed not in ("", "standard"):
        conditions.add(f"speed:{_short(speed)}")
    geo = usage.get("inference_geo")
    if isinstance(geo, str) and geo not in ("", "global", "not_available"):
        conditions.add(f"inference_geo:{_short(geo)}")
    server_tools = usage.get("server_tool_use")
    if isinstance(server_tools, Mapping):
        for name in list(server_tools)[:16]:
            if not isinstance(name, str):
                continue
            count = _count(server_tools, name, notes, where="server_tool_use.")
            if count:
                conditions.add(f"{_short(name)}:{count}")
    return TokenUsage(
        provider="anthropic",
        input=_count(usage, "input_tokens", notes),
        cache_read=read,
        cache_write_5m=write_5m,
        cache_write_1h=write_1h,
        cache_write_unknown_ttl=unknown_ttl,
        output=output,
        reasoning=reasoning,
        conditions=frozenset(conditions),
        notes=tuple(notes),
    )


def openai_chat_usage(usage: Any, *, service_tier: Any = None) -> TokenUsage:
    """From a Chat Completions `usage` (the final chunk's when streamed with include_usage).
    `service_tier` is the response's top-level field."""
    if not isinstance(usage, Mapping):
        return TokenUsage(provider="openai", notes=_not_an_object("usage", usage))
    return _openai(usage, "prompt_tokens", "prompt_tokens_details", "completion_tokens",
                   "completion_tokens_details", service_tier)


def openai_responses_usage(usage: Any, *, service_tier: Any = None) -> TokenUsage:
    """From a Responses API `usage` (the `response.completed` event's response, when streamed)."""
    if not isinstance(usage, Mapping):
        return TokenUsage(provider="openai", notes=_not_an_object("usage", usage))
    return _openai(usage, "input_tokens", "input_tokens_details", "output_tokens",
                   "output_tokens_details", service_tier)


def _openai(usage: Mapping[str, Any], prompt_key: str, prompt_details_key: str, output_key: str,
            output_details_key: str, service_tier: Any) -> TokenUsage:
    notes: list[str] = []
    prompt = _count(usage, prompt_key, notes)
    prompt_details = usage.get(prompt_details_key)
    output_details = usage.get(output_details_key)
    cached = audio_in = audio_out = reasoning = None
    if isinstance(prompt_details, Mapping):
        cached = _count(prompt_details, "cached_tokens", notes, where=f"{prompt_details_key}.")
        audio_in = _count(prompt_details, "audio_tokens", notes, where=f"{prompt_details_key}.")
    if isinstance(output_details, Mapping):
        reasoning = _count(output_details, "reasoning_tokens", notes, where=f"{output_details_key}.")
        audio_out = _count(output_details, "audio_tokens", notes, where=f"{output_details_key}.")
    uncached = prompt
    if prompt is not None and cached is not None:
        if cached > prompt:
            notes.append(f"cached_tokens {cached} > {prompt_key} {prompt}")
            uncached = None
        else:
            uncached = prompt - cached
    output = _count(usage, output_key, notes)
    if output is not None and reasoning is not None and reasoning > output:
        notes.append(f"reasoning_tokens {reasoning} > {output_key} {output}")
    conditions: set[str] = set()
    if audio_in:
        conditions.add("audio_input")
    if audio_out:
        conditions.add("audio_output")
    if isinstance(service_tier, str) and service_tier not in ("", "default", "auto"):
        conditions.add("batch" if service_tier == "batch" else f"service_tier:{_short(service_tier)}")
    return TokenUsage(
        provider="openai",
        input=uncached,
        cache_read=cached,
        output=output,
        reasoning=reasoning,
        conditions=frozenset(conditions),
        notes=tuple(notes),
    )


def gemini_usage(usage: Any) -> TokenUsage:
    """From a generateContent `usageMetadata` (the last chunk's, when streamed)."""
    notes: list[str] = []
    if not isinstance(usage, Mapping):
        return TokenUsage(provider="gemini", notes=_not_an_object("usageMetadata", usage))
    prompt = _count(usage, "promptTokenCount", notes)
    cached = _count(usage, "cachedContentTokenCount", notes)
    tool_prompt = _count(usage, "toolUsePromptTokenCount", notes)
    candidates = _count(usage, "candidatesTokenCount", notes)
    thoughts = _count(usage, "thoughtsTokenCount", notes)
    uncached = prompt
    if prompt is not None and cached is not None:
        if cached > prompt:
            notes.append(f"cachedContentTokenCount {cached} > promptTokenCount {prompt}")
            uncached = None
        else:
            uncached = prompt - cached
    if uncached is not None and tool_prompt is not None:
        uncached += tool_prompt
    # A reply that reports thoughts but no candidates (a thinking-only stop) has output = thoughts.
    output = _sum_known(candidates, thoughts)
    conditions: set[str] = set()
    for key in ("promptTokensDetails", "toolUsePromptTokensDetails", "cacheTokensDetails"):
        if _has_modality(usage.get(key), "AUDIO"):
            conditions.add("audio_input")
    if _has_modality(usage.get("candidatesTokensDetails"), "AUDIO"):
        conditions.add("audio_output")
    return TokenUsage(
        provider="gemini",
        input=uncached,
        cache_read=cached,
        output=output,
        reasoning=thoughts,
        conditions=frozenset(conditions),
        notes=tuple(notes),
    )


def usage_from_response(api: str, response: Any) -> TokenUsage:
    """The usage of a final (or reassembled) response object of `api`; `provider` set even when the
    response carries none, so that a missing usage is visible as such."""
    provider = _PROVIDER_OF.get(api, "") if isinstance(api, str) else ""
    if not isinstance(response, Mapping):
        return TokenUsage(provider=provider, notes=_not_an_object("response", response))
    if api == API_ANTHROPIC_MESSAGES:
        usage = anthropic_usage(response.get("usage"))
    elif api == API_OPENAI_CHAT:
        usage = openai_chat_usage(response.get("usage"), service_tier=response.get("service_tier"))
    elif api == API_OPENAI_RESPONSES:
        usage = openai_responses_usage(response.get("usage"), service_tier=response.get("service_tier"))
    elif api == API_GEMINI:
        usage = gemini_usage(response.get("usageMetadata"))
    else:
        return TokenUsage(provider=provider, notes=(f"unknown api {_short(str(api))!r}",))
    return usage


@dataclass(slots=True)
class UsageTotals:
    """A roll-up of many calls' usage (per session, agent, model or day).

    Each part sums what was reported; `calls_without[part]` counts the calls that did not report
    it, so a total never passes a partial sum off as the whole."""

    calls: int = 0
    input: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_write_unknown_ttl: int = 0
    output: int = 0
    reasoning: int = 0
    calls_without: dict[str, int] = field(default_factory=dict)

    def add(self, usage: TokenUsage) -> None:
        self.calls += 1
        for name in (*TOKEN_PARTS, "reasoning"):
            value = getattr(usage, name)
            if value is None:
                self.calls_without[name] = self.calls_without.get(name, 0) + 1
            else:
                setattr(self, name, getattr(self, name) + value)

    def merge(self, other: UsageTotals) -> None:
        self.calls += other.calls
        for name in (*TOKEN_PARTS, "reasoning"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, count in other.calls_without.items():
            self.calls_without[name] = self.calls_without.get(name, 0) + count

    @classmethod
    def of(cls, usages: Iterable[TokenUsage]) -> UsageTotals:
        totals = cls()
        for usage in usages:
            totals.add(usage)
        return totals

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h + self.cache_write_unknown_ttl

    @property
    def complete(self) -> bool:
        """Whether every call reported its uncached input and its output."""
        return not self.calls_without.get("input") and not self.calls_without.get("output")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in ("calls", *TOKEN_PARTS, "reasoning")}
        out["calls_without"] = dict(sorted(self.calls_without.items()))
        return out


def with_conditions(usage: TokenUsage, *extra: str) -> TokenUsage:
    """The same usage with more price conditions (e.g. "batch" for a call known to be batched)."""
    return replace(usage, conditions=usage.conditions | frozenset(extra))


# -- helpers -------------------------------------------------------------------------------------


def _count(obj: Any, key: str, notes: list[str], *, where: str = "") -> int | None:
    """A token count, or None when absent, null or not a believable integer (noted)."""
    if not isinstance(obj, Mapping):
        return None
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int to Python, and 12.0 is a float: neither is a count a provider sends.
    if type(value) is not int:
        notes.append(f"{where}{key} is not an integer: {_preview(value)}")
        return None
    if value < 0 or value >= _MAX_COUNT:
        notes.append(f"{where}{key} out of range: {_preview(value)}")
        return None
    return value


def _sum_known(*values: int | None) -> int | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _has_modality(details: Any, modality: str) -> bool:
    if not isinstance(details, list):
        return False
    for entry in details[:16]:
        if isinstance(entry, Mapping) and entry.get("modality") == modality:
            count = entry.get("tokenCount")
            if type(count) is int and count > 0:
                return True
    return False


def _not_an_object(name: str, value: Any) -> tuple[str, ...]:
    return () if value is None else (f"{name} is not an object: {_preview(value)}",)


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list | tuple | frozenset | set):
        return []
    return [_short(item) for item in list(value)[:64] if isinstance(item, str)]


def _short(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."


def _preview(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # repr() of a 5000-digit int raises ValueError (int max str digits), and is useless anyway.
        return f"<int of {value.bit_length()} bits>" if value.bit_length() > 64 else str(value)
    if isinstance(value, str):
        return repr(value[:40])
    return type(value).__name__
