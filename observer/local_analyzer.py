"""The offline decision analyzer: deterministic heuristics over the visible reasoning.

It fills AAP's decision record (alternatives considered, the selected option, the
reasoning for it, the values applied, a confidence) for each decision of an
exchange, from nothing but the extraction. It never calls a model and never
invents: with no visible reasoning it says so, lists only the action taken as the
alternative, and applies no values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from smoltbot.core.aap.redaction import redact, redact_text
from smoltbot.observer.extraction import Decision, Extraction

__all__ = ["VALUE_KEYWORDS", "Analysis", "analyze", "describe_action"]

EXCERPT_CHARS = 280
_MAX_ALTERNATIVES = 6
_ALT_DESCRIPTION_CHARS = 160
# Heuristics scan at most this much of a (possibly multi-MB) reasoning text: its
# start, where options are usually laid out, and its end, where the choice is made.
_SCAN_HEAD = 200_000
_SCAN_TAIL = 100_000

# Words that signal a standard AAP value was weighed. A value is "applied" only when
# it is declared on the card AND one of its words appears in the reasoning.
VALUE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "transparency": (
        "transparent",
        "transparency",
        "explain",
        "disclose",
        "let the user know",
        "be clear about",
    ),
    "honesty": ("honest", "honesty", "truthful", "accurate", "mislead", "admit", "not make up", "don't know"),
    "harm_prevention": (
        "harm",
        "harmful",
        "unsafe",
        "dangerous",
        "destructive",
        "irreversible",
        "damage",
        "risky",
        "safely",
        "back up",
        "backup",
    ),
    "principal_benefit": (
        "the user wants",
        "the user asked",
        "user's request",
        "user's goal",
        "user requested",
        "help the user",
        "in the user's interest",
        "benefit",
    ),
    "user_control": (
        "confirm with",
        "ask the user",
        "permission",
        "consent",
        "approval",
        "let the user decide",
        "user's choice",
    ),
    "privacy": (
        "privacy",
        "private",
        "personal data",
        "personal information",
        "pii",
        "sensitive data",
        "confidential",
    ),
    "minimal_data": (
        "minimal data",
        "only the necessary",
        "only what is needed",
        "data minimi",
        "least data",
    ),
    "fairness": ("fair", "fairness", "bias", "biased", "discriminat", "equitable"),
}

# Hedging lowers confidence: each distinct hedge costs 0.05, at most 0.25.
_HEDGES = re.compile(
    r"\b(?:maybe|might|perhaps|possibly|not sure|unsure|unclear|i think|i guess|probably|"
    r"hopefully|seems like|i'm not certain|hard to say)\b",
    re.IGNORECASE,
)
# "Option A: ...", "Approach 2) ...", "Alternative 1 - ..."
_LABELLED_OPTION = re.compile(
    r"(?im)^[ \t]{0,8}[*-]?[ \t]{0,4}\**(?:option|approach|alternative|choice)[ \t]{1,4}([A-Za-z0-9]{1,3})\**"
    r"[ \t]{0,4}[:.)\-][ \t]{0,4}([^\n]{3,300})"
)
# A numbered or bulleted list right after a line that announces choices.
_ANNOUNCE = re.compile(
    r"(?i)\b(?:options|approaches|alternatives|choices|could either|ways to)\b[^\n]{0,200}\n"
)
_LIST_ITEM = re.compile(r"[ \t]{0,8}(?:\d{1,2}[.)]|[-*•])[ \t]{1,4}([^\n]{3,300})\n?")
_ALTERNATIVELY = re.compile(r"(?i)\balternatively,?[ \t]{1,4}([^.\n!?]{3,200})")
_COULD_OR = re.compile(
    r"(?i)\b(?:could|can|either)[ \t]{1,4}([^.\n!?;]{3,120}?)[ \t]{1,4}or[ \t]{1,4}([^.\n!?;,]{3,120})"
)
_INSTEAD_OF = re.compile(r"(?i)\binstead of[ \t]{1,4}([^.\n!?;,]{3,120})")
_SENTENCE = re.compile(r"[^.!?\n]{1,600}(?:[.!?]+|\n|$)")

# Cheap exact pre-checks. Each pattern above can only match where some literal of it occurs,
# whatever the case: where none does (most reasoning has no "alternatively" and no hedge), the
# regex is not run at all. Case-insensitive regexes are slow in `re` (no fast literal search),
# a substring test is fast. The test runs on `_folded` text: lower-cased, with the three
# characters that `re`'s IGNORECASE matches to an ASCII letter but `str.lower` does not map to it
# (U+0130, U+0131, U+017F) mapped first, so a literal the regex could match is always found (checked for every
# code point in tests/unit/test_local_analyzer_prefilter.py).
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})
_HEDGE_WORDS = ("maybe", "might", "perhaps", "possibly", "not sure", "unsure", "unclear", "i think",
                "i guess", "probably", "hopefully", "seems like", "i'm not certain", "hard to say")
_NEEDS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (_LABELLED_OPTION, ("option", "approach", "alternative", "choice")),
    (_ALTERNATIVELY, ("alternatively",)),
    (_COULD_OR, ("could", "can", "either")),
    (_INSTEAD_OF, ("instead of",)),
)
_ANNOUNCE_WORDS = ("options", "approaches", "alternatives", "choices", "could either", "ways to")


def _folded(text: str) -> str:
    return text.translate(_FOLD).lower()


def _any_in(words: tuple[str, ...], folded: str) -> bool:
    return any(word in folded for word in words)


@dataclass
class Analysis:
    alternatives: list[dict[str, Any]]  # AAP Alternative dicts; the first is the action taken
    selected: str
    selection_reasoning: str
    values_applied: list[str] = field(default_factory=list)
    confidence: float = 0.5


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def describe_action(decision: Decision, extraction: Extraction) -> str:
    """A one-line description of what the decision did (secrets masked)."""
    if decision.kind == "tool" and decision.tool_call is not None:
        call = decision.tool_call
        shown = json.dumps(redact(call.input), ensure_ascii=False, sort_keys=True, default=str)
        where = "server tool" if call.server else "tool"
        return _clip(f"Call {where} {call.name} with {shown}", _ALT_DESCRIPTION_CHARS)
    if decision.kind == "reply":
        text = redact_text(extraction.final_text[:1000])
        return _clip(f"Reply: {text}" if text else "Reply with no text", _ALT_DESCRIPTION_CHARS)
    if decision.kind == "unreadable":
        return "Respond (the response body could not be read)"
    detail = extraction.error_type or extraction.outcome
    return _clip(f"Exchange did not complete ({detail})", _ALT_DESCRIPTION_CHARS)


def _scan_window(text: str) -> str:
    if len(text) <= _SCAN_HEAD + _SCAN_TAIL:
        return text
    return text[:_SCAN_HEAD] + "\n" + text[-_SCAN_TAIL:]


def _reasoning_alternatives(text: str, folded: str | None = None) -> list[str]:
    """Options the reasoning names: labelled options, announced lists, 'alternatively',
    'could X or Y', 'instead of X'. In order of appearance, de-duplicated. `folded`:
    `_folded(text)`, when the caller has it."""
    if folded is None:
        folded = _folded(text)
    present = {pattern for pattern, words in _NEEDS if _any_in(words, folded)}
    found: list[tuple[int, str]] = []
    if _LABELLED_OPTION in present:
        for m in _LABELLED_OPTION.finditer(text):
            found.append((m.start(), m.group(2)))
    if _any_in(_ANNOUNCE_WORDS, folded):
        for m in _ANNOUNCE.finditer(text):
            pos = m.end()
            items = 0
            while items < _MAX_ALTERNATIVES:
                item = _LIST_ITEM.match(text, pos)
                if not item:
                    break
                found.append((item.start(), item.group(1)))
                pos = item.end()
                items += 1
    if _ALTERNATIVELY in present:
        for m in _ALTERNATIVELY.finditer(text):
            found.append((m.start(), m.group(1)))
    if _COULD_OR in present:
        for m in _COULD_OR.finditer(text):
            found.append((m.start(1), m.group(1)))
            found.append((m.start(2), m.group(2)))
    if _INSTEAD_OF in present:
        for m in _INSTEAD_OF.finditer(text):
            found.append((m.start(), m.group(1)))
    out: list[str] = []
    seen: set[str] = set()
    for _, description in sorted(found, key=lambda item: item[0]):
        clean = _clip(redact_text(description.strip(" *-:")), _ALT_DESCRIPTION_CHARS)
        key = clean.casefold()
        if len(clean) >= 3 and key not in seen:
            seen.add(key)
            out.append(clean)
        if len(out) >= _MAX_ALTERNATIVES:
            break
    return out


def _selection_excerpt(text: str, decision: Decision) -> str:
    """The sentence that led to the action: the last one naming the tool (or one of its
    input values), else the reasoning's closing sentences, where the choice is made."""
    sentences = [s.strip() for s in _SENTENCE.findall(_scan_window(text)) if s.strip()]
    if not sentences:
        return ""
    needles: list[str] = []
    if decision.tool_call is not None:
        needles.append(decision.tool_call.name.casefold())
        needles.extend(
            v.casefold()
            for v in decision.tool_call.input.values()
            if isinstance(v, str) and 3 <= len(v) <= 80
        )
    for sentence in reversed(sentences):
        low = sentence.casefold()
        if any(n in low for n in needles):
            return _clip(redact_text(sentence), EXCERPT_CHARS)
    return _clip(redact_text(" ".join(sentences[-2:])), EXCERPT_CHARS)


@dataclass(frozen=True)
class _ValuePattern:
    """A declared value's words as one regex, and the words a match needs (None: some word is
    not ASCII, whose case folding a substring test cannot follow: the regex always runs)."""

    pattern: re.Pattern[str]
    needs: tuple[str, ...] | None

    def applied(self, window: str, folded: str) -> bool:
        if self.needs is not None and not _any_in(self.needs, folded):
            return False
        return self.pattern.search(window) is not None


#: Compiled value patterns per card's values (cards are few; every exchange of an agent
#: analysed against the same card would otherwise compile them again).
_PATTERNS_CACHE: dict[str, dict[str, _ValuePattern]] = {}
_PATTERNS_CACHE_SIZE = 256


def _value_patterns(card: dict[str, Any]) -> dict[str, _ValuePattern]:
    values = card.get("values") or {}
    key = json.dumps([values.get("declared") or [], {
        value: (definition or {}).get("name") if isinstance(definition, dict) else None
        for value, definition in (values.get("definitions") or {}).items()}],
        sort_keys=True, default=str)
    cached = _PATTERNS_CACHE.get(key)
    if cached is None:
        cached = _compile_value_patterns(values)
        if len(_PATTERNS_CACHE) >= _PATTERNS_CACHE_SIZE:
            _PATTERNS_CACHE.clear()
        _PATTERNS_CACHE[key] = cached
    return cached


def _compile_value_patterns(values: dict[str, Any]) -> dict[str, _ValuePattern]:
    definitions = values.get("definitions") or {}
    patterns: dict[str, _ValuePattern] = {}
    for value in values.get("declared") or []:
        words = list(VALUE_KEYWORDS.get(value, ()))
        if not words:
            # A custom value: its id's words and its definition's name.
            words = [w for w in re.split(r"[_\-\s]+", value) if len(w) >= 4]
            name = (definitions.get(value) or {}).get("name")
            if isinstance(name, str) and name.strip():
                words.append(name.strip())
        if words:
            alternation = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
            needs = tuple(sorted({w.lower() for w in words})) if all(w.isascii() for w in words) else None
            patterns[value] = _ValuePattern(re.compile(rf"(?i)\b(?:{alternation})"), needs)
    return patterns


def _confidence(extraction: Extraction, decision: Decision, reasoning: str, hidden: bool,
                folded_window: str | None = None) -> float:
    # Visible reasoning: 0.8. Reasoning that exists but was redacted by the provider:
    # 0.45. Nothing visible: 0.4. Hedges, truncation and errors lower it from there.
    if reasoning.strip():
        score = 0.8
        window = _scan_window(reasoning)
        if folded_window is None:
            folded_window = _folded(window)
        hedges = ({m.group(0).casefold() for m in _HEDGES.finditer(window)}
                  if _any_in(_HEDGE_WORDS, folded_window) else set())
        score -= min(0.25, 0.05 * len(hedges))
    else:
        score = 0.45 if hidden else 0.4
    if decision.tool_call is not None and not decision.tool_call.input_valid:
        score -= 0.2
    if extraction.stop_reason == "max_tokens" or any("truncated" in m for m in extraction.missing):
        score -= 0.1
    if decision.kind in ("failure", "unreadable"):
        score = min(score, 0.2)
    return round(max(0.05, min(0.95, score)), 2)


def _analyze_one(
    extraction: Extraction, decision: Decision, patterns: dict[str, _ValuePattern]
) -> Analysis:
    reasoning = "\n\n".join(s.text for s in decision.reasoning if s.text)
    hidden = any(s.redacted for s in decision.reasoning)
    selected = {
        "option_id": "taken",
        "description": describe_action(decision, extraction),
    }
    alternatives = [selected]
    folded: str | None = None
    if reasoning.strip():
        window = _scan_window(reasoning)
        folded = _folded(window)
        for i, description in enumerate(_reasoning_alternatives(window, folded), start=1):
            alternatives.append({"option_id": f"considered-{i}", "description": description})
        excerpt = _selection_excerpt(reasoning, decision)
        selection = excerpt or "Reasoning was visible but held no sentence about this action."
        if not any(s.text and not s.summary for s in decision.reasoning):
            selection = "From the provider's summary of its reasoning (not the reasoning itself): " \
                + selection
        values = [value for value, pattern in patterns.items() if pattern.applied(window, folded)]
    else:
        if hidden:
            selection = (
                "The model's reasoning was redacted by the provider; its content is not visible, "
                "so no reason for this action can be given."
            )
        elif decision.kind in ("failure", "unreadable"):
            selection = "No decision could be read: " + describe_action(decision, extraction) + "."
        else:
            selection = "No reasoning was visible in the response; the action is recorded as observed."
        values = []
    return Analysis(
        alternatives=alternatives,
        selected="taken",
        selection_reasoning=selection,
        values_applied=values,
        confidence=_confidence(extraction, decision, reasoning, hidden, folded),
    )


def analyze(extraction: Extraction, card: dict[str, Any], *, outcome: str | None = None) -> list[Analysis]:
    """One Analysis per decision of `extraction.decisions(outcome)`, in the same order."""
    patterns = _value_patterns(card)
    return [_analyze_one(extraction, decision, patterns) for decision in extraction.decisions(outcome)]
