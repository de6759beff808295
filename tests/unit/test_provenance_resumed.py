"""The provenance search resumed from the session's last call (`SourcesPoint.segments`): a warm
session's later calls join only the sources that are new, not the whole history, and search a few
segments; the answers are the cold ones (tests/unit/test_evidence_carry.py holds warm = cold =
shuffled over random sessions, whose Bash commands are searched in the earlier results)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from smoltbot.core.evidence import provenance
from smoltbot.core.evidence.provenance import Source, _Haystack, _Segment
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

