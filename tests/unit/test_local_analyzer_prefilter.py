"""The local analyzer's cheap pre-checks (observer/local_analyzer.py) skip a regex only where it
cannot match, so they change no analysis; value patterns are compiled once per card's values."""

from __future__ import annotations

import copy
import random
import re
import string
import sys

from smoltbot.observer import local_analyzer as la
from smoltbot.observer.extraction import Decision, Extraction, ReasoningSegment

#: A folded text holding every literal the pre-checks look for: with it every regex runs.
_EVERY_LITERAL = " ".join([*la._HEDGE_WORDS, *la._ANNOUNCE_WORDS, *(w for _, ws in la._NEEDS for w in ws)])

_FRAGMENTS = [
    "Option A: read the log first.", "APPROACH 2) restart it", "Alternatively, ask the user.",
    "ALTERNAT\u0130VELY, wait", "alternat\u0131vely do nothing", "In\u017ftead of restarting",
    "instead of guessing",
    "We could read the file or skip it.", "I CAN retry or give up", "either way", "cannot",
    "The options are:\n1. read it\n2. delete it\n", "Ways to do it:\n- one\n- two\n",
    "maybe", "MIGHT", "poss\u0131bly", "I'm not certain", "hard to say", "PERHAPS", "unsure",
    "be transparent", "HARMFUL", "ri\u017fky", "privacy", "the user wants", "fair", "Σίσυφος",
    "Straße", "naïve", "\u0130stanbul", "K\u212aelvin", " ", "\n", ".", ",",
]


def _texts(count: int) -> list[str]:
    chooser = random.Random(16)
    return [" ".join(chooser.choice(_FRAGMENTS) for _ in range(chooser.randint(1, 12))) for _ in range(count)]


def test_the_fold_maps_every_character_that_ignorecase_matches_to_an_ascii_literal() -> None:
    # A pre-check is exact only if every character `re` (IGNORECASE) matches to a literal's
    # character becomes that character in `_folded` text.
    candidates = re.compile(r"(?i)[a-z' \-]")
    singles = {a: re.compile("(?i)" + re.escape(a)) for a in string.ascii_lowercase + "' -"}
    for point in range(sys.maxunicode + 1):
        if 0xD800 <= point <= 0xDFFF:
            continue
        char = chr(point)
        if candidates.fullmatch(char):
            for literal, pattern in singles.items():
                if pattern.fullmatch(char):
                    assert la._folded(char) == literal, (hex(point), literal)


def test_the_pre_checks_change_no_finding() -> None:
    card = {"values": {"declared": [*la.VALUE_KEYWORDS, "risk_awareness"],
                       "definitions": {"risk_awareness": {"name": "Rißkontrolle"}}}}
    patterns = la._value_patterns(card)
    for text in _texts(400):
        folded = la._folded(text)
        assert la._reasoning_alternatives(text) == la._reasoning_alternatives(text, _EVERY_LITERAL)
        assert ([value for value, p in patterns.items() if p.applied(text, folded)]
                == [value for value, p in patterns.items() if p.pattern.search(text)])
        decision = Decision(kind="reply", index=0, reasoning=(ReasoningSegment("thinking", text, 0),))
        extraction = Extraction()
        assert (la._confidence(extraction, decision, text, False)
                == la._confidence(extraction, decision, text, False, _EVERY_LITERAL))


def test_value_patterns_are_compiled_once_per_cards_values() -> None:
    card = {"card_id": "ac-1", "values": {"declared": ["transparency", "safe_ops"],
                                          "definitions": {"safe_ops": {"name": "Safe operations"}}}}
    again = copy.deepcopy(card)
    again["card_id"] = "ac-2"  # another card, the same values
    assert la._value_patterns(again) is la._value_patterns(card)
    other = copy.deepcopy(card)
    other["values"]["definitions"]["safe_ops"]["name"] = "Careful operations"
    assert la._value_patterns(other) is not la._value_patterns(card)
    assert set(la._value_patterns(other)) == {"transparency", "safe_ops"}
