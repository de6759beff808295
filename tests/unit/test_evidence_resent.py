"""What a worker keeps of a session's last request only saves time: a request read with the last
one (`RequestMemo`) is the request `json.loads` gives, the messages it resends unchanged are the
last call's objects, the provenance search over the joined sources finds what a search of each
source finds, and a session's checks come out the same with the memos warm as cold, whatever
the client changes between its calls (markers moved, a result cleared, a turn edited, another
layout, a body that is not JSON)."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from smoltbot.core.evidence.provenance import OriginKind, Source, _Haystack
from smoltbot.core.evidence.request_memo import RequestMemo
from smoltbot.core.usage import API_ANTHROPIC_MESSAGES
from smoltbot.observer.evidence_store import EvidenceRow, SessionMemos
from tests.unit.test_evidence_memo import _check, _evidence
from tests.unit.test_history_cut import KEY, reply

START = datetime(2026, 12, 1, tzinfo=UTC)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None


def _same(found: Any, body: bytes) -> None:
    # repr tells 1 from 1.0 from True, and keeps the keys' order: `==` does neither.
    assert repr(found) == repr(_loads(body)), body[:200]


def _history(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Fix the tests."}]
    for n in range(turns):
        messages += [{"role": "assistant", "content": reply(n)["content"]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{n:04d}",
                                                   "content": f"contents of m{n}\n" * 20, "n": 1.0}]}]
    return messages


def _marked(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claude Code's way: a `cache_control` marker on the last message's last block."""
    marked = copy.deepcopy(messages)
    last = marked[-1]["content"]
    if isinstance(last, list):
        last[-1]["cache_control"] = {"type": "ephemeral"}
    return marked


def test_a_request_read_with_the_last_one_is_the_request_and_reuses_what_it_resends() -> None:
    memo = RequestMemo()
    history = _history(6)
    first = json.dumps({"model": "m", "messages": _marked(history[:5]), "max_tokens": 10}).encode()
    _same(memo.load(first), first)
    assert memo.reused == 0
    kept = memo.body["messages"]
    # The next call: the marker moved from message 4 to the new last one; 0 to 3 come back as they were.
    second = json.dumps({"model": "m", "messages": _marked(history[:7]), "max_tokens": 10}).encode()
    found = memo.load(second)
    _same(found, second)
    assert memo.reused == 4
    assert all(found["messages"][i] is kept[i] for i in range(4))
    assert found["messages"][4] is not kept[4]
    # An edit in the middle: only what stands before it is reused.
    edited = _marked(history[:9])
    edited[3]["content"][0]["content"] = "[Old tool result content cleared]"
    third = json.dumps({"model": "m", "messages": edited, "max_tokens": 10}).encode()
    _same(memo.load(third), third)
    assert memo.reused == 3


def test_any_body_reads_as_json_loads_reads_it() -> None:
    memo = RequestMemo()
    history = _history(3)
    plain = json.dumps({"model": "m", "messages": history})
    bodies = [
        plain.encode(),
        json.dumps({"messages": history, "model": "m"}, indent=2).encode(),  # another layout, messages first
        plain.encode(),
        (plain[:-1] + ', "messages": []}').encode(),  # messages twice: the last wins
        (plain[:-1] + ', "model": "other"}').encode(),  # another key twice
        plain.encode() + b"  \n",
        plain.encode() + b" x",  # extra data: not JSON
        plain.encode()[:-40],  # cut short
        b"\xef\xbb\xbf" + plain.encode(),  # UTF-8 with a BOM
        plain.encode("utf-16"),
        json.dumps({"model": "m", "messages": "not a list"}).encode(),
        json.dumps({"model": "m", "messages": []}).encode(),
        json.dumps({"model": "m", "messages": [1, 1.0, True, None, float("nan")]}).encode(),
        json.dumps({"model": "m"}).encode(), b"{}", b"[]", b'"s"', b"", b"nul", b"\xff\xfe\x00",
        b"[" * 100_000, b'{"messages": [' + b"[" * 100_000 + b"]}",
        json.dumps({"model": "m", "messages": history[:2]}, separators=(",", ":")).encode(),
        plain.encode(),
    ]
    for body in bodies:
        _same(memo.load(body), body)


def test_random_edits_read_as_json_loads_reads_them() -> None:
    rng = random.Random(7)
    for seed in range(30):
        memo = RequestMemo()
        messages = _history(4)
        for _ in range(12):
            action = rng.randrange(5)
            if action == 0:  # a new turn
                messages += _history(1)[1:]
            elif action == 1 and len(messages) > 1:  # one message changed anywhere
                at = rng.randrange(len(messages))
                messages[at] = {"role": messages[at]["role"], "content": f"changed {rng.random()}"}
            elif action == 2 and len(messages) > 2:  # dropped from the front
                messages = messages[rng.randrange(1, 3):]
            elif action == 3:  # the same request again
                pass
            else:
                messages = messages[:rng.randrange(len(messages) + 1)]
            layout = rng.choice([{}, {"indent": 1}, {"separators": (",", ":")}])
            request = {"model": "m", "system": "s", "messages": messages} if rng.random() < 0.5 else {
                "messages": messages, "model": "m"}
            body = json.dumps(request, **layout).encode()  # type: ignore[arg-type]
            before = memo.body["messages"] if isinstance(memo.body, dict) else []
            found = memo.load(body)
            _same(found, body)
            for i in range(memo.reused):
                assert found["messages"][i] is before[i], seed


def test_the_joined_search_finds_what_each_source_finds() -> None:
    rng = random.Random(3)
    alphabet = "ab\x00 c"
    for _ in range(300):
        texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12)))
                 for _ in range(rng.randrange(1, 6))]
        sources = [Source(OriginKind.TOOL_RESULT, text) for text in texts]
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 4)))
        expected = [(source, source.text.find(piece)) for source in sources if piece in source.text]
        found = [(match.source, match.start) for match in _Haystack(sources).find(piece)]
        assert found == expected, (sources, piece)
        assert all(match.length == len(piece) for match in _Haystack(sources).find(piece))


def _client_session(broken: bool = False) -> list[tuple[bytes, bytes, datetime]]:
    """A session as Claude Code sends it (markers moved each call), with another layout at call 3, a
    result cleared from call 5 on, and an edited turn at call 9; `broken`: call 6 is not JSON."""
    history = _history(10)
    calls = []
    for n in range(10):
        messages = _marked(history[:2 * n + 1])
        if n >= 5:
            messages[2]["content"][0]["content"] = "[Old tool result content cleared to save context]"
        if n == 9:
            messages[3]["content"][1]["text"] = "I'll push to production."
        request = {"model": "claude-opus-4-7", "max_tokens": 1024, "system": "You are Claude Code.",
                   "messages": messages}
        text = json.dumps(request, indent=2 if n == 3 else None).encode()
        if n == 6 and broken:
            text = text[:-1]
        calls.append((text, json.dumps(reply(n)).encode(), START + timedelta(seconds=10 * n)))
    return calls


def test_checks_come_out_the_same_with_the_last_request_kept_or_not() -> None:
    calls = _client_session()
    order = list(range(len(calls)))
    cold = {n: _check(SessionMemos(max_sessions=0), calls, [n], f"cold{n}")[n] for n in order}
    assert [cold[n].status for n in order] == ["intact"] * 9 + ["diverged"]
    assert _check(SessionMemos(), calls, order, "warm") == cold
    warm_memos = SessionMemos()
    _check(warm_memos, calls, order[:9], "warm")
    memo = warm_memos._memos[(KEY, "warm")]
    assert memo.requests.reused == 14  # call 8 resent call 7's 15 messages, the last one's marker moved
    for seed in range(2):
        shuffled = random.Random(seed).sample(order, len(order))
        assert _check(SessionMemos(), calls, shuffled, f"shuffled{seed}") == cold


def test_a_body_that_is_not_json_between_two_calls_changes_nothing() -> None:
    import smoltbot.observer.evidence_store as store

    calls = _client_session(broken=True)[4:8]
    found: dict[int, EvidenceRow] = {}
    saved, store.SESSION_MEMOS = store.SESSION_MEMOS, SessionMemos()
    try:
        for n, (request, response, started) in enumerate(calls):
            job = store.EvidenceJob(KEY, "s", started)
            if n == 2:  # call 6: the body is cut short, and gets no row
                assert store.evidence_for(
                    job, exchange_id="x", agent_id="a", api=API_ANTHROPIC_MESSAGES, request_body=request,
                    response_body=response, relayed_at=started, card={}, traces=[], now=START) is None
                continue
            found[n] = _evidence(job, n, request, response)
    finally:
        store.SESSION_MEMOS = saved
    cold = _check(SessionMemos(max_sessions=0), [calls[3]], [0], "cold")[0]
    assert replace(found[3], session_id=None, exchange_id=cold.exchange_id) == cold


def test_a_call_whose_session_memo_is_in_use_is_checked_without_it() -> None:
    """Two calls of one session checked at once on two threads (inline processing): the second
    leaves the first's memo alone and comes out the same."""
    import smoltbot.observer.evidence_store as store

    calls = _client_session()
    memos = SessionMemos()
    _check(memos, calls, [0, 1, 2, 3], "s")
    memo = memos._memos[(KEY, "s")]
    kept_body = memo.requests.body
    assert memo.in_use.acquire(blocking=False)  # another thread is checking a call of the session
    try:
        saved, store.SESSION_MEMOS = store.SESSION_MEMOS, memos
        try:
            assert store.SESSION_MEMOS.for_call(KEY, "s") is None
        finally:
            store.SESSION_MEMOS = saved
        busy = _check(memos, calls, [4], "s")[4]
    finally:
        memo.in_use.release()
    assert memo.requests.body is kept_body  # untouched
    assert busy == _check(SessionMemos(max_sessions=0), calls, [4], "cold")[4]
    assert _check(memos, calls, [5], "s")[5] == _check(SessionMemos(max_sessions=0), calls, [5], "cold")[5]
    assert memo.requests.body is not kept_body  # free again: used
