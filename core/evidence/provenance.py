"""Argument provenance: on whose words did the agent act?

For each tool call of a response, every argument value (each string leaf of its input) is matched
against the content the model had in front of it: the user's own words, the system prompt or the
card, and each earlier tool result. Matching is deterministic string matching, in three steps that
stop at the first that finds something:

1. the whole value appears in a source (`str.find`, linear and in C);
2. its pieces do: the value split on lines and shell separators (`;`, `&&`, `||`, `|`, `&`), each
   piece of at least `min_match` characters looked up as in 1;
3. long values only (`index_min_chars`): a sampled k-gram index of the sources (every `step`-th
   k-gram kept) finds every common run of at least `kgram + step - 1` characters, verified and
   extended by comparison.

The cost per exchange is linear in the size of the history and of the arguments, with caps on both
(`ProvenanceLimits`); bench/evidence_cost.py measures it.

A value found in the user's words, the system prompt or the card is theirs, even if a web page says
it too. A value (or piece) found only in the result of a tool that reads untrusted content
(`ToolPolicy`: web fetch and search, third-party MCP tools, file reads outside the workspace) is
flagged as possible indirect prompt injection, with the source excerpt. Values shorter than
`min_match` are the model's own by default: too short to tell.

Claude Code puts `<system-reminder>` blocks into user messages; they are the harness speaking, so
they count as system content, not as the user's words.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from smoltbot.core.evidence.tools import ToolPolicy, shell_segments
from smoltbot.core.evidence.transcript import AnthropicMessagesReader, HistoryReader, Part

__all__ = [
    "ArgumentOrigin",
    "InjectionFlag",
    "OriginKind",
    "ProvenanceLimits",
    "Source",
    "SourcesPoint",
    "ToolCallProvenance",
    "collect_sources",
    "gather_sources",
    "trace_tool_calls",
]

_WORKING_DIRECTORY = re.compile(r"^\s*Working directory:\s*(/\S*)\s*$", re.MULTILINE)


class OriginKind(StrEnum):
    USER = "user"
    SYSTEM = "system"
    CARD = "card"
    TOOL_RESULT = "tool_result"
    MODEL = "model"


_RANK = {OriginKind.USER: 0, OriginKind.CARD: 1, OriginKind.SYSTEM: 2, OriginKind.TOOL_RESULT: 3}


@dataclass(frozen=True, slots=True)
class ProvenanceLimits:
    min_match: int = 8
    #: An untrusted match shorter than this is not flagged (common words and commands are everywhere).
    flag_min_chars: int = 12
    kgram: int = 16
    #: Only values this long go to the k-gram index (file contents, long text): building it costs a
    #: pass over the history, and shorter values are covered by steps 1 and 2.
    index_min_chars: int = 256
    step: int = 16
    max_leaves: int = 64
    max_value_chars: int = 64 * 1024
    max_source_chars: int = 1024 * 1024
    max_total_chars: int = 16 * 1024 * 1024
    max_matches: int = 8
    excerpt_chars: int = 200


@dataclass(frozen=True, slots=True)
class Source:
    kind: OriginKind
    text: str
    message_index: int | None = None
    tool_use_id: str | None = None
    tool_name: str | None = None
    untrusted: bool = False


@dataclass(frozen=True, slots=True)
class ArgumentOrigin:
    """Where one argument value came from. `kind` MODEL with `matched_chars` 0: from nowhere seen."""

    path: str
    kind: OriginKind
    value_chars: int
    matched_chars: int = 0
    message_index: int | None = None
    tool_use_id: str | None = None
    tool_name: str | None = None
    excerpt: str = ""
    untrusted: bool = False
    #: Other kinds of source that hold it too.
    also: tuple[OriginKind, ...] = ()


@dataclass(frozen=True, slots=True)
class InjectionFlag:
    """An argument built from untrusted content that no user, system or card text holds."""

    path: str
    matched: str
    source_tool_use_id: str | None
    source_tool_name: str | None
    source_message_index: int | None
    excerpt: str


@dataclass(slots=True)
class ToolCallProvenance:
    tool_use_id: str | None
    tool_name: str | None
    arguments: list[ArgumentOrigin] = field(default_factory=list)
    flags: list[InjectionFlag] = field(default_factory=list)
    #: Leaves beyond `max_leaves`, or values cut at `max_value_chars`: said, never silently dropped.
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Match:
    source: Source
    start: int
    length: int


@dataclass(frozen=True, slots=True)
class SourcesPoint:
    """The sources of a history's messages before `at`, for the session's next call to resume from
    (`gather_sources`): valid for a request that resends those messages as the very objects
    (`boundary`: the last of them), with the same card, system texts, policy and limits (`given`)."""

    at: int
    boundary: Any
    given: tuple[Any, ...]
    sources: tuple[Source, ...]
    calls: Mapping[str, Part]
    budget: int
    #: The searched text of `sources` (`_Haystack`), when this call searched any: the next call
    #: searches it as it is and joins only the sources after it. Filled by `trace_tool_calls`.
    segments: list[_Segment] = field(default_factory=list, compare=False, repr=False)


#: A point for the next call stands this many messages before the end of the history.
RESENT_AGAIN = 4


def collect_sources(body: Any, *, card_texts: Iterable[str] = (), policy: ToolPolicy | None = None,
                    reader: HistoryReader | None = None,
                    limits: ProvenanceLimits = ProvenanceLimits()) -> tuple[list[Source], ToolPolicy]:
    """The content of a request the model saw, as sources; and the policy with the workspace filled in
    from Claude Code's `Working directory:` line when the policy names none."""
    sources, policy, _ = gather_sources(body, card_texts=card_texts, policy=policy, reader=reader,
                                        limits=limits)
    return sources, policy


def gather_sources(body: Any, *, card_texts: Iterable[str] = (), policy: ToolPolicy | None = None,
                   reader: HistoryReader | None = None, limits: ProvenanceLimits = ProvenanceLimits(),
                   resume: SourcesPoint | None = None
                   ) -> tuple[list[Source], ToolPolicy, SourcesPoint | None]:
    """`collect_sources`, and a point for the session's next call. From `resume` (the last call's
    point), when it holds for this request, only the messages after it are read: the sources
    before it are the last call's (a source depends on its message, the calls before it, the
    budget left and the inputs in `given` alone)."""
    reader = reader or AnthropicMessagesReader()
    given_policy = policy or ToolPolicy()
    texts = tuple(t for t in card_texts if isinstance(t, str) and t)
    system = tuple(reader.system_texts(body))
    given = (texts, system, given_policy, limits)
    policy = given_policy
    if policy.workspace is None:
        found = next((m.group(1) for t in system for m in [_WORKING_DIRECTORY.search(t)] if m), None)
        policy = replace(policy, workspace=found)
    messages = reader.messages(body)
    if resume is not None and resume.given == given and 0 < resume.at <= len(messages) \
            and messages[resume.at - 1] is resume.boundary:
        sources, calls, budget, at = list(resume.sources), dict(resume.calls), [resume.budget], resume.at
    else:
        sources, calls, budget, at = [], {}, [limits.max_total_chars], 0

    def add(kind: OriginKind, text: str, *where: Any) -> None:
        text = text[:min(limits.max_source_chars, max(budget[0], 0))]
        budget[0] -= len(text)
        if text:
            sources.append(Source(kind, text, *where))

    if not at:
        for text in texts:
            add(OriginKind.CARD, text)
        for text in system:
            add(OriginKind.SYSTEM, text)
    mark = max(at, len(messages) - RESENT_AGAIN)
    point = None
    for message in messages[at:]:
        if message.index == mark and mark > 0:
            point = SourcesPoint(mark, messages[mark - 1], given, tuple(sources), dict(calls), budget[0])
        for part in message.parts:
            if message.role == "assistant" and part.is_tool_call and part.tool_id:
                calls[part.tool_id] = part
            elif message.role == "user" and part.kind == "text":
                reminder = part.text.lstrip().startswith("<system-reminder>")
                add(OriginKind.SYSTEM if reminder else OriginKind.USER, part.text, message.index)
            elif message.role != "assistant" and part.kind == "tool_result" and part.text:
                call = calls.get(part.tool_id or "")
                name = call.tool_name if call else None
                untrusted = policy.is_untrusted(name, call.tool_input) if name and call else False
                add(OriginKind.TOOL_RESULT, part.text, message.index, part.tool_id, name, untrusted)
    if point is None and mark > 0 and mark == len(messages):  # nothing after the mark: it is the end
        point = SourcesPoint(mark, messages[mark - 1], given, tuple(sources), dict(calls), budget[0])
    return sources, policy, point


def _leaves(value: Any, limits: ProvenanceLimits, notes: list[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if len(found) >= limits.max_leaves:
                notes.append(f"more than {limits.max_leaves} string arguments: the rest not traced")
                break
            found.append((path or "$", item))
        elif isinstance(item, Mapping):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    return found


class _Index:
    """Sampled k-grams of the sources, built on first use (only long values need it)."""

    def __init__(self, sources: list[Source], limits: ProvenanceLimits) -> None:
        self.limits = limits
        self.grams: dict[str, list[tuple[int, int]]] = {}
        k, step = limits.kgram, limits.step
        for number, source in enumerate(sources):
            text = source.text
            for position in range(0, len(text) - k + 1, step):
                slot = self.grams.setdefault(text[position:position + k], [])
                if len(slot) < 4:
                    slot.append((number, position))

    def runs(self, value: str, sources: list[Source]) -> list[_Match]:
        k = self.limits.kgram
        found: list[_Match] = []
        i = 0
        while i <= len(value) - k and len(found) < self.limits.max_matches:
            best: _Match | None = None
            best_end = i + 1
            for number, position in self.grams.get(value[i:i + k], ()):
                text = sources[number].text
                back = 0
                while back < min(i, position) and value[i - back - 1] == text[position - back - 1]:
                    back += 1
                end = k
                limit = min(len(value) - i, len(text) - position)
                while end < limit and value[i + end] == text[position + end]:
                    end += 1
                if best is None or back + end > best.length:
                    best, best_end = _Match(sources[number], position - back, back + end), i + end
            if best is not None and best.length >= k + self.limits.step - 1:
                found.append(best)
                i = best_end
            else:
                i += 1
        return found


def _excerpt(match: _Match, limits: ProvenanceLimits) -> str:
    room = max((limits.excerpt_chars - match.length) // 2, 20)
    start, end = max(match.start - room, 0), min(match.start + match.length + room, len(match.source.text))
    text = match.source.text[start:end]
    if len(text) > limits.excerpt_chars:
        text = text[:limits.excerpt_chars]
    return ("…" if start else "") + text + ("…" if end < len(match.source.text) else "")


_SEPARATOR = "\x00"


class _Segment:
    """Consecutive sources' texts joined by a separator, and where each starts: a part of the
    searched text. Never changed once made: a session's next call searches it as it is."""

    __slots__ = ("last", "sources", "starts", "text")

    def __init__(self, sources: Sequence[Source], text: str | None = None,
                 starts: list[int] | None = None) -> None:
        self.sources = tuple(sources)
        self.last = self.sources[-1]
        if text is None or starts is None:
            text, starts, at = _SEPARATOR.join(source.text for source in self.sources), [], 0
            for source in self.sources:
                starts.append(at)
                at += len(source.text) + 1
        self.text, self.starts = text, starts

    def joined(self, other: _Segment) -> _Segment:
        offset = len(self.text) + 1
        return _Segment(self.sources + other.sources, self.text + _SEPARATOR + other.text,
                        self.starts + [start + offset for start in other.starts])

    def find(self, piece: str, found: list[_Match]) -> None:
        at = 0
        while (position := self.text.find(piece, at)) >= 0:
            number = bisect_right(self.starts, position) - 1
            found.append(_Match(self.sources[number], position - self.starts[number], len(piece)))
            if number + 1 == len(self.starts):
                break
            at = self.starts[number + 1]


class _Haystack:
    """The sources' texts joined by a separator, so that finding a piece in every source is one
    scan in C that jumps from a match to the next source, instead of a call per source (a history
    has a source per message). A piece without the separator can only match inside one source.

    The text is in segments (`_Segment`): those of the session's last call that this call's
    sources begin with (`reuse`; the same `Source` objects, which only a resumed `gather_sources`
    gives: a source is made once and handed on only with every source before it), then the
    sources after them, cut at `split` (where the next call's point stands) so that the next call
    reuses what stands before it. Segments are joined while the newer is at least half the size of
    the older one before it: a few segments, each source's text copied a few times in all."""

    def __init__(self, sources: list[Source], reuse: Sequence[_Segment] = (),
                 split: int | None = None) -> None:
        self.sources = sources
        segments = self.reusable(sources, reuse)
        covered = sum(len(segment.sources) for segment in segments)
        if split is not None and covered < split <= len(sources):
            segments.append(_Segment(sources[covered:split]))
            covered = split
            while len(segments) > 1 and 2 * len(segments[-1].text) >= len(segments[-2].text):
                segments[-2:] = [segments[-2].joined(segments[-1])]
        #: The segments of the sources before `split`, for the next call.
        self.kept = list(segments) if split is not None and covered == split else []
        if covered < len(sources):
            segments.append(_Segment(sources[covered:]))
        self.segments = segments

    @staticmethod
    def reusable(sources: Sequence[Source], reuse: Sequence[_Segment]) -> list[_Segment]:
        """The first segments of `reuse` that `sources` begin with."""
        segments: list[_Segment] = []
        covered = 0
        for segment in reuse:
            end = covered + len(segment.sources)
            if end > len(sources) or sources[end - 1] is not segment.last:
                break
            segments.append(segment)
            covered = end
        return segments

    def find(self, piece: str) -> list[_Match]:
        """The first occurrence of `piece` in each source holding it, in source order."""
        if not piece or _SEPARATOR in piece:
            return [_Match(source, position, len(piece)) for source in self.sources
                    if (position := source.text.find(piece)) >= 0]
        found: list[_Match] = []
        for segment in self.segments:
            segment.find(piece, found)
        return found


def _matches(value: str, sources: list[Source], limits: ProvenanceLimits,
             index: list[_Index], haystack: _Haystack) -> list[_Match]:
    found = haystack.find(value)
    if found:
        return found
    pieces = {p for line in value.splitlines() for p in [line.strip(), *shell_segments(line)]
              if len(p) >= limits.min_match}
    pieces.discard(value)  # a one-line value is its own line: just searched, not found
    for piece in sorted(pieces, key=lambda p: (-len(p), p)):
        found += haystack.find(piece)
    if found or len(value) < limits.index_min_chars:
        return found
    if not index:
        index.append(_Index(sources, limits))
    return index[0].runs(value, sources)


def _origin(path: str, value: str, matches: list[_Match], limits: ProvenanceLimits) -> ArgumentOrigin:
    if not matches:
        return ArgumentOrigin(path, OriginKind.MODEL, len(value))

    def rank(m: _Match) -> tuple[int, int, int, int]:
        return (_RANK[m.source.kind], int(m.source.untrusted), -m.length, -(m.source.message_index or 0))

    best = min(matches, key=rank)
    kinds = sorted({m.source.kind for m in matches} - {best.source.kind}, key=lambda k: _RANK[k])
    return ArgumentOrigin(path, best.source.kind, len(value), best.length, best.source.message_index,
                          best.source.tool_use_id, best.source.tool_name, _excerpt(best, limits),
                          best.source.untrusted, tuple(kinds))


def _flags(path: str, value: str, matches: list[_Match], sources: list[Source],
           limits: ProvenanceLimits) -> list[InjectionFlag]:
    own = [s for s in sources if s.kind is not OriginKind.TOOL_RESULT]
    flags: list[InjectionFlag] = []
    seen: set[str] = set()
    for match in matches:
        if not match.source.untrusted or match.length < limits.flag_min_chars:
            continue
        text = match.source.text[match.start:match.start + match.length]
        if text in seen or any(text in s.text for s in own):
            continue
        seen.add(text)
        flags.append(InjectionFlag(path, text, match.source.tool_use_id, match.source.tool_name,
                                   match.source.message_index, _excerpt(match, limits)))
    return flags


def trace_tool_calls(response: Any, sources: list[Source], *, reader: HistoryReader | None = None,
                     limits: ProvenanceLimits = ProvenanceLimits(), resumed: SourcesPoint | None = None,
                     point: SourcesPoint | None = None) -> list[ToolCallProvenance]:
    """Provenance of every tool call in `response` (the assistant turn), against `sources`.
    `resumed`: the point `gather_sources` resumed from (its searched text is reused where these
    sources begin with its own); `point`: the point it made for the next call (given this call's
    searched text of its sources). Either changes the time, never the answer."""
    reader = reader or AnthropicMessagesReader()
    traced = []
    index: list[_Index] = []
    haystack: _Haystack | None = None
    for part in reader.response_parts(response):
        if not part.is_tool_call:
            continue
        call = ToolCallProvenance(part.tool_id, part.tool_name)
        for path, raw in _leaves(part.tool_input, limits, call.notes):
            value = raw[:limits.max_value_chars]
            if len(raw) > len(value):
                call.notes.append(f"{path}: only the first {limits.max_value_chars} characters traced")
            if len(value.strip()) < limits.min_match:
                call.arguments.append(ArgumentOrigin(path, OriginKind.MODEL, len(raw)))
                continue
            if haystack is None:
                haystack = _Haystack(sources, resumed.segments if resumed is not None else (),
                                     len(point.sources) if point is not None else None)
                if point is not None:
                    point.segments[:] = haystack.kept
            matches = _matches(value.strip(), sources, limits, index, haystack)
            call.arguments.append(_origin(path, value, matches, limits))
            call.flags += _flags(path, value, matches, sources, limits)
        traced.append(call)
    if haystack is None and point is not None and resumed is not None:
        # Nothing searched at this call: the next one still reuses what the last one joined.
        point.segments[:] = _Haystack.reusable(point.sources, resumed.segments)
    return traced
