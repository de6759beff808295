"""History integrity: is the history a client sends back the one the gateway relayed?

Agents on the Messages APIs resend their whole history on every call. The observer keeps, per
session, a `HistoryLedger`: for each assistant turn the gateway relayed, keyed digests (HMAC-SHA256,
see canonical.py) of the turn and of each of its blocks, its tool call ids, and where in its
conversation it stood. Never content: a ledger of 500 turns is a few tens of kilobytes, and a leaked
ledger says nothing without the key.

`HistoryLedger.check(body)` reads the next request's messages and returns findings (something that
did not happen the way the history says) and rewrites (changes a client is allowed to make, recorded
and not flagged):

Findings                                        Rewrites
  unrelayed_turn: an assistant turn the gateway   compaction: Claude Code's summary continuation
    never relayed (forged, or sent around it)     context_edit: a tool result cleared to a placeholder
  edited_turn: a relayed turn, changed            thinking_dropped: thinking left out of an older turn
  unrequested_tool_call: a tool call the model    truncated_front: messages dropped from the front
    never made                                    first_message_changed: the first message differs
  orphan_tool_result: a tool_result answering
    no earlier tool call
  edited_tool_result: a tool result, changed
  out_of_order_turn: a relayed turn repeated or
    moved before one relayed earlier

Indexes are positions in the reader's messages (the request's `messages` or `contents`; a
Responses turn of several `input` items is one message, and `exchange` shows the item's index).
How a turn is recognised: by the digest of its non-thinking blocks (so thinking may be dropped),
then its thinking blocks must be all there, unchanged, all gone, or some gone and the rest as
relayed and in order. A turn that matches nothing is an edit of a relayed turn when it carries one
of that turn's tool call ids, or when that turn is the one expected next (after the last recognised
turn) and is absent, and the message shares a block with it, stands at the index it was relayed at,
or sits right before the turn that followed it; otherwise it was never relayed.

A ledger may lack the session's oldest turns (`cut`): retention deleted their rows, or the ledger
was bounded (`MAX_TURNS`, the rows a check reads). An assistant turn standing before the first turn
the ledger recognises, and no edit of a turn it holds, is then unknown (`HistoryCheck.unknown_turns`):
not a finding, since the ledger cannot tell it from one of the turns it no longer has. A ledger
that was not cut still finds such a turn unrelayed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from smoltbot.core.evidence.canonical import DigestMemo, keyed_digest
from smoltbot.core.evidence.findings import (
    CheckPoint,
    Finding,
    FindingKind,
    HistoryCheck,
    RelayedTurn,
    Rewrite,
    RewriteKind,
    _Fold,
)
from smoltbot.core.evidence.transcript import AnthropicMessagesReader, HistoryReader, Message, Part

__all__ = ["CLEARED_TOOL_RESULT_MARKERS", "COMPACTION_PREFIXES", "RECHECKED", "HistoryLedger"]

#: How Claude Code opens the user message that replaces a compacted history (services/compact/prompt.ts,
#: getCompactUserSummaryMessage), older wording too, and Codex's summary prefix (core/templates/compact).
COMPACTION_PREFIXES: tuple[str, ...] = (
    "This session is being continued from a previous conversation that ran out of context.",
    "This session is being continued from a previous conversation",
    "Another language model started to solve this problem and produced a summary of its thinking process.",
)
#: Placeholders that clients put in place of an old tool result (Claude Code's microcompact, Qwen
#: Code, OpenClaw). Compared after stripping whitespace, as a prefix.
CLEARED_TOOL_RESULT_MARKERS: tuple[str, ...] = ("[Old tool result content cleared",)
#: Oldest turns are forgotten past this many (a bound on state; the ledger is then `cut`).
MAX_TURNS = 20_000
#: A check's point for the next one stands this many messages before the end of its history.
RECHECKED = 4


def _dropped_from(sent: tuple[bytes, ...], relayed: tuple[bytes, ...]) -> bool:
    """Whether `sent` is `relayed` with some of its elements left out (a subsequence)."""
    remaining = iter(relayed)
    return len(sent) < len(relayed) and all(any(d == r for r in remaining) for d in sent)


class HistoryLedger:
    """The digests of one session's relayed assistant turns, and the check of a later history.

    `key` is the deployment's secret; it is never part of `to_state()`.
    """

    def __init__(self, key: bytes, reader: HistoryReader | None = None,
                 digests: DigestMemo | None = None) -> None:
        self._key = key
        self._reader: HistoryReader = reader or AnthropicMessagesReader()
        #: The session's memo of digests by content (same digests, fewer computed); None: none.
        self._digests = digests if digests is not None and digests.key == key else None
        self.turns: list[RelayedTurn] = []
        self._by_key: dict[bytes, int] = {}
        self._by_tool: dict[str, tuple[int, bytes]] = {}
        self._tool_results: dict[str, bytes] = {}
        self._first_seq = 0
        #: True when turns relayed before the oldest one held may be missing (see the module doc).
        self.cut = False
        # Built row by row (`add_row`): each tool id's first turn, and its first digest in the rows.
        self._tool_turn: dict[str, int] = {}
        self._row_calls: dict[str, bytes] = {}
        # The tool results the last check learned before its point (`CheckPoint.learned`).
        self._learned: list[tuple[str, bytes]] = []

    # -- digests -------------------------------------------------------------------------------
    def _digest(self, value: Any, domain: str) -> bytes:
        if self._digests is not None:
            return self._digests.digest(value, domain=domain)
        return keyed_digest(self._key, value, domain=domain)

    def _block(self, part: Part) -> bytes:
        return self._digest(part.body, "block")

    def _blocks(self, message: Message) -> tuple[list[tuple[bool, bytes]], bytes, tuple[bytes, ...]]:
        """A message's (is_thinking, digest) per block, the key of its non-thinking blocks and its
        thinking digests; found by the parts' identity when the session's memo read them before
        (a resent message): one lookup instead of one per block."""
        def read(parts: tuple[Part, ...]) -> tuple[list[tuple[bool, bytes]], bytes, tuple[bytes, ...]]:
            blocks = [(p.is_thinking, self._block(p)) for p in parts]
            return blocks, self._key_of(blocks), tuple(d for t, d in blocks if t)

        if self._digests is not None:
            found: tuple[list[tuple[bool, bytes]], bytes, tuple[bytes, ...]] = self._digests.of_object(
                "blocks", message.parts, read)
            return found
        return read(message.parts)

    def _key_of(self, blocks: Iterable[tuple[bool, bytes]]) -> bytes:
        return hashlib.sha256(b"".join(d for t, d in blocks if not t)).digest()

    def _tool_call(self, part: Part) -> bytes:
        return self._digest([part.tool_name, part.tool_input], "tool_call")

    def _root(self, messages: list[Message]) -> bytes:
        # The normalised parts, not the raw message: clients move `cache_control` markers around.
        first = [messages[0].role, [p.body for p in messages[0].parts]] if messages else None
        return self._digest(first, "root")

    # -- recording -----------------------------------------------------------------------------
    def record(self, request_body: Any, response: Any) -> RelayedTurn | None:
        """Record the assistant turn `response` relayed in answer to `request_body`.

        None when the response holds no content (an error, an empty turn): nothing to check later.
        """
        parts = self._reader.turn_parts(request_body, response)
        if not parts:
            return None
        messages = self._reader.messages(request_body)
        blocks = tuple((p.is_thinking, self._block(p)) for p in parts)
        seq = self._first_seq + len(self.turns)
        turn = RelayedTurn(
            seq=seq,
            digest=keyed_digest(self._key, [p.body for p in parts], domain="turn"),
            blocks=blocks,
            key=self._key_of(blocks),
            tool_ids=tuple(p.tool_id for p in parts if p.is_tool_call and p.tool_id),
            root=self._root(messages),
            position=len(messages),
        )
        self.turns.append(turn)
        self._by_key.setdefault(turn.key, seq)
        for part in parts:
            if part.is_tool_call and part.tool_id:
                self._by_tool.setdefault(part.tool_id, (seq, self._tool_call(part)))
        if len(self.turns) > MAX_TURNS:
            self._forget(self.turns.pop(0))
        return turn

    def _forget(self, turn: RelayedTurn) -> None:
        self.cut = True
        self._first_seq = turn.seq + 1
        if self._by_key.get(turn.key) == turn.seq:
            del self._by_key[turn.key]
        for tool_id in turn.tool_ids:
            self._by_tool.pop(tool_id, None)
            self._tool_results.pop(tool_id, None)

    def _turn(self, seq: int) -> RelayedTurn | None:
        position = seq - self._first_seq
        return self.turns[position] if 0 <= position < len(self.turns) else None

    # -- checking ------------------------------------------------------------------------------
    def check(self, request_body: Any, resume: CheckPoint | None = None) -> HistoryCheck:
        """Check a request's history against the ledger; learns the tool results it sees first.

        `resume`: the point the session's previous check left (`HistoryCheck.point`). When this
        request resends the messages before it as they were (the same objects) and the ledger is
        the one that check ran on, extended (its caller vouches for that: `SessionMemo`), only the
        messages from there on are checked: what the check found before it is carried, not found
        again. Anything else (a point from another history, a cut that changed) checks the whole
        history. The answer is the same either way."""
        messages = self._reader.messages(request_body)
        fold = self._resumed(resume, messages) or _Fold()
        new = messages[fold.at:]
        # The next call resumes a few messages back: a client may change the last ones it resends
        # (Claude Code moves its cache_control markers), and a point past them would never be reused.
        mark = max(fold.at, len(messages) - RECHECKED)
        result = HistoryCheck()
        compactions = self._compaction(new)
        assistants = [m for m in new if m.role == "assistant"]
        result.assistant_turns = fold.assistants + len(assistants)
        read = {m.index: self._blocks(m) for m in assistants}
        digests = {index: blocks for index, (blocks, _, _) in read.items()}
        matched: dict[int, RelayedTurn] = {}
        thinking: list[Rewrite] = []
        for message in assistants:
            _, key, sent = read[message.index]
            seq = self._by_key.get(key)
            turn = self._turn(seq) if seq is not None else None
            if turn is not None and self._thinking_ok(message, sent, turn, result, thinking):
                matched[message.index] = turn
        self._order(matched, result, fold.last.seq if fold.last else -1)
        self._unmatched(assistants, matched, digests, result, fold)
        cleared: list[Rewrite] = []
        at_mark = self._tool_results_check(new, result, cleared, fold, mark)
        first = fold.first or min(matched.items(), default=None)
        front = self._front(messages, first, bool(fold.compactions or compactions))
        result.rewrites = [*fold.compactions, *compactions, *fold.thinking, *thinking, *fold.cleared,
                           *cleared, *front]
        result.verified_turns = fold.matched + len(matched)
        result.findings.sort(key=lambda f: (f.message_index, f.block_index or 0))
        if at_mark is not None and mark > 0 and not any(f.message_index < mark for f in result.findings) \
                and all(m.index in matched for m in assistants if m.index < mark):
            before = sorted(index for index in matched if index < mark)
            result.point = CheckPoint(_Fold(
                at=mark,
                compactions=(*fold.compactions, *(r for r in compactions if r.message_index < mark)),
                thinking=(*fold.thinking, *(r for r in thinking if r.message_index < mark)),
                cleared=(*fold.cleared, *(r for r in cleared if r.message_index < mark)),
                assistants=fold.assistants + sum(1 for m in assistants if m.index < mark),
                matched=fold.matched + len(before),
                first=fold.first or ((before[0], matched[before[0]]) if before else None),
                last=matched[before[-1]] if before else fold.last,
                used=fold.used.union(matched[index].seq for index in before),
                called=at_mark[0], answered=at_mark[1],
            ), messages[mark - 1], self.cut, self._first_seq, self._key, tuple(self._learned))
        return result

    def _resumed(self, point: CheckPoint | None, messages: list[Message]) -> _Fold | None:
        """The point's state, when this history resends the messages before it as they were (the
        reader gives a resent message as the very object it gave the last call) and this ledger
        can be the one it was made with, extended."""
        if point is None or (point.key, point.cut, point.first_seq) != (self._key, self.cut, self._first_seq):
            return None
        at = point.fold.at
        if not 0 < at <= len(messages) or messages[at - 1] is not point.boundary:
            return None
        last = point.fold.last
        if last is not None and self._turn(last.seq) != last:
            return None
        if any(self._tool_results.get(tool_id) != digest for tool_id, digest in point.learned):
            return None
        return point.fold

    def _compaction(self, messages: list[Message]) -> list[Rewrite]:
        found = []
        for message in messages:
            if message.role != "user":
                continue
            text = next((p.text for p in message.parts if p.kind == "text"), "").lstrip()
            if text.startswith(COMPACTION_PREFIXES):
                found.append(Rewrite(RewriteKind.COMPACTION, message.index,
                                     "earlier turns replaced by a summary (compaction)"))
        return found

    def _thinking_ok(self, message: Message, sent: tuple[bytes, ...], turn: RelayedTurn,
                     result: HistoryCheck, rewrites: list[Rewrite]) -> bool:
        if sent == turn.thinking:
            return True
        if not sent:
            rewrites.append(Rewrite(RewriteKind.THINKING_DROPPED, message.index,
                                    f"thinking of relayed turn {turn.seq} left out"))
            return True
        if _dropped_from(sent, turn.thinking):
            # Some of the turn's thinking parts left out, the rest as relayed and in order (a Gemini
            # client keeps a thought signature and drops the thought summaries, or the reverse).
            rewrites.append(Rewrite(RewriteKind.THINKING_DROPPED, message.index,
                                    f"{len(turn.thinking) - len(sent)} of {len(turn.thinking)} thinking "
                                    f"parts of relayed turn {turn.seq} left out"))
            return True
        result.findings.append(Finding(
            FindingKind.EDITED_TURN, message.index,
            f"thinking of relayed turn {turn.seq} changed ({len(sent)} thinking blocks sent, "
            f"{len(turn.thinking)} relayed)", turn_seq=turn.seq))
        return False

    def _order(self, matched: dict[int, RelayedTurn], result: HistoryCheck, last: int) -> None:
        for index in sorted(matched):
            turn = matched[index]
            if turn.seq <= last:
                result.findings.append(Finding(
                    FindingKind.OUT_OF_ORDER_TURN, index,
                    f"relayed turn {turn.seq} stands after relayed turn {last}", turn_seq=turn.seq))
            last = max(last, turn.seq)

    def _unmatched(self, assistants: list[Message], matched: dict[int, RelayedTurn],
                   digests: dict[int, list[tuple[bool, bytes]]], result: HistoryCheck, fold: _Fold) -> None:
        """The assistant turns no relayed turn matches (after `fold`, whose turns all matched)."""
        used = set(fold.used)
        used.update(t.seq for t in matched.values())
        flagged = {f.message_index for f in result.findings if f.kind == FindingKind.EDITED_TURN}
        previous = fold.last
        first = fold.first[0] if fold.first else min(matched, default=None)
        for position, message in enumerate(assistants):
            if message.index in matched:
                previous = matched[message.index]
                continue
            if message.index in flagged:
                continue
            original = self._original(message, digests[message.index], previous, used,
                                      assistants[position + 1:], matched)
            if original is None and self.cut and (first is None or message.index < first):
                result.unknown_turns += 1
                result.unknown_before = first
                continue
            if original is None:
                result.findings.append(Finding(
                    FindingKind.UNRELAYED_TURN, message.index,
                    "assistant turn never relayed by the gateway (forged, or sent around it)"))
            else:
                used.add(original.seq)
                result.findings.append(Finding(
                    FindingKind.EDITED_TURN, message.index,
                    f"relayed turn {original.seq} changed: "
                    f"{self._difference(digests[message.index], original)}",
                    turn_seq=original.seq))
            self._tool_calls(message, result)

    def _original(self, message: Message, blocks: list[tuple[bool, bytes]], previous: RelayedTurn | None,
                  used: set[int], later: list[Message],
                  matched: dict[int, RelayedTurn]) -> RelayedTurn | None:
        for part in message.parts:
            known = self._by_tool.get(part.tool_id) if part.is_tool_call and part.tool_id else None
            if known and known[0] not in used and (turn := self._turn(known[0])):
                return turn
        expected = self._turn(previous.seq + 1 if previous else self._first_seq)
        if expected is None or expected.seq in used:
            return None
        # It shares a block with the turn expected here, or stands where that turn stood when relayed.
        if {d for _, d in blocks} & {d for _, d in expected.blocks} or expected.position == message.index:
            return expected
        following = matched.get(later[0].index) if later else None  # the very next assistant turn
        if following is not None and following.seq == expected.seq + 1:
            return expected
        return None

    def _difference(self, blocks: list[tuple[bool, bytes]], turn: RelayedTurn) -> str:
        sent = [d for _, d in blocks]
        relayed = [d for _, d in turn.blocks]
        changed = [i for i, d in enumerate(sent) if d not in relayed]
        missing = sum(1 for d in relayed if d not in sent)
        parts = []
        if changed:
            plural = "s" if len(changed) > 1 else ""
            parts.append(f"block{plural} {', '.join(map(str, changed))} not as relayed")
        if missing:
            parts.append(f"{missing} relayed block{'s' if missing > 1 else ''} missing")
        return "; ".join(parts) or "blocks reordered"

    def _tool_calls(self, message: Message, result: HistoryCheck) -> None:
        for block_index, part in enumerate(message.parts):
            if not part.is_tool_call:
                continue
            known = self._by_tool.get(part.tool_id) if part.tool_id else None
            if known is None:
                result.findings.append(Finding(
                    FindingKind.UNREQUESTED_TOOL_CALL, message.index,
                    f"tool call {part.tool_name!s} ({part.tool_id!s}) the model never made",
                    block_index=block_index, tool_use_id=part.tool_id))
            elif known[1] != self._tool_call(part):
                result.findings.append(Finding(
                    FindingKind.EDITED_TURN, message.index,
                    f"tool call {part.tool_id} has a name or input the model did not give",
                    block_index=block_index, tool_use_id=part.tool_id, turn_seq=known[0]))

    def _tool_results_check(self, messages: list[Message], result: HistoryCheck, rewrites: list[Rewrite],
                            fold: _Fold, mark: int) -> tuple[frozenset[str], frozenset[str]] | None:
        """The tool results of `messages` (those after `fold`), in order. Returns the tool ids called
        and answered before message `mark`; None when what was found before it hangs on something
        the ledger lacks (a changed result of a call it does not know: a ledger that learns that call
        later would say more), so that no later check may carry it."""
        called = set(fold.called)
        answered = set(fold.answered)
        at_mark: tuple[frozenset[str], frozenset[str]] | None = None
        hanging = False
        self._learned = []
        for message in messages:
            if at_mark is None and message.index >= mark:
                at_mark = (frozenset(called), frozenset(answered))
            for block_index, part in enumerate(message.parts):
                if message.role == "assistant" and part.is_tool_call and part.tool_id:
                    called.add(part.tool_id)
                if part.kind != "tool_result":
                    continue
                tool_id = part.tool_id or ""
                if message.index == 0 and tool_id not in called and (tool_id in self._by_tool or self.cut):
                    continue  # the front was cut between a call the model made and its result
                if tool_id not in called or tool_id in answered:
                    why = ("answers a tool call made again" if tool_id in answered
                           else "answers no earlier tool call")
                    result.findings.append(Finding(
                        FindingKind.ORPHAN_TOOL_RESULT, message.index, f"tool_result {tool_id!r} {why}",
                        block_index=block_index, tool_use_id=part.tool_id))
                    continue
                answered.add(tool_id)
                digest = self._block(part)
                if message.index < mark and tool_id not in self._tool_results:
                    self._learned.append((tool_id, digest))
                first = self._tool_results.setdefault(tool_id, digest)
                if first == digest:
                    continue
                if tool_id not in self._by_tool:
                    hanging = hanging or message.index < mark
                    continue
                if part.text.strip().startswith(CLEARED_TOOL_RESULT_MARKERS):
                    rewrites.append(Rewrite(RewriteKind.CONTEXT_EDIT, message.index,
                                            f"result of {tool_id} cleared to a placeholder"))
                else:
                    result.findings.append(Finding(
                        FindingKind.EDITED_TOOL_RESULT, message.index,
                        f"tool_result {tool_id} differs from the one first sent",
                        block_index=block_index, tool_use_id=tool_id))
        if at_mark is None:
            at_mark = (frozenset(called), frozenset(answered))
        return None if hanging else at_mark

    def _front(self, messages: list[Message], first: tuple[int, RelayedTurn] | None,
               compacted: bool) -> list[Rewrite]:
        if first is None or compacted:
            return []
        first_index, turn = first
        if turn.root == self._root(messages):
            return []
        if first_index < turn.position:
            return [Rewrite(RewriteKind.TRUNCATED_FRONT, 0,
                            f"{turn.position - first_index} messages before relayed turn {turn.seq} "
                            "dropped from the front")]
        return [Rewrite(RewriteKind.FIRST_MESSAGE_CHANGED, 0,
                        "the first message is not the one the session started with")]

    # -- state ---------------------------------------------------------------------------------
    def known_tool_results(self) -> dict[str, bytes]:
        """The digest of each tool result as first seen (what a later history is held to)."""
        return dict(self._tool_results)

    def row_state(self, turn: RelayedTurn | None, known_results: Mapping[str, bytes]) -> dict[str, Any]:
        """What one exchange adds to its session's ledger, JSON-able (digests only): the turn it relayed
        (None: none), its tool calls' digests, and the tool results first seen in its request (those
        not in `known_results`). `merge_rows` puts such rows back together into a ledger state."""
        calls = {tool_id: self._by_tool[tool_id][1].hex() for tool_id in (turn.tool_ids if turn else ())
                 if tool_id in self._by_tool and self._by_tool[tool_id][0] == turn.seq} if turn else {}
        return {
            "turn": None if turn is None else {
                "digest": turn.digest.hex(),
                "blocks": [("t" if th else "") + d.hex() for th, d in turn.blocks],
                "tool_ids": list(turn.tool_ids), "root": turn.root.hex(), "position": turn.position,
            },
            "tool_calls": calls,
            "tool_results": {k: v.hex() for k, v in self._tool_results.items() if k not in known_results},
        }

    @staticmethod
    def merge_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """The ledger state (`from_state`) of a session's rows (`row_state`), in the order relayed.
        A tool call or result id seen twice keeps its first digest, as the live ledger does."""
        turns: list[Any] = []
        calls: dict[str, str] = {}
        results: dict[str, str] = {}
        for row in rows:
            if row.get("turn"):
                turns.append(row["turn"])
            for tool_id, digest in (row.get("tool_calls") or {}).items():
                calls.setdefault(tool_id, digest)
            for tool_id, digest in (row.get("tool_results") or {}).items():
                results.setdefault(tool_id, digest)
        return {"first_seq": 0, "turns": turns[-MAX_TURNS:], "tool_calls": calls, "tool_results": results,
                "cut": len(turns) > MAX_TURNS}

    def to_state(self) -> dict[str, Any]:
        """A JSON-able copy of the ledger (digests only; the key stays out)."""
        return {
            "first_seq": self._first_seq,
            "cut": self.cut,
            "turns": [{
                "digest": t.digest.hex(), "blocks": [("t" if th else "") + d.hex() for th, d in t.blocks],
                "tool_ids": list(t.tool_ids), "root": t.root.hex(), "position": t.position,
            } for t in self.turns],
            "tool_calls": {k: v[1].hex() for k, v in self._by_tool.items()},
            "tool_results": {k: v.hex() for k, v in self._tool_results.items()},
        }

    @classmethod
    def from_rows(cls, key: bytes, rows: Sequence[Mapping[str, Any]], reader: HistoryReader | None = None,
                  digests: DigestMemo | None = None) -> HistoryLedger:
        """The ledger of a session's rows (`row_state`), in the order relayed: `from_state(merge_rows(rows))`,
        built row by row so that a worker can keep it and add the session's next rows (`add_row`)."""
        ledger = cls(key, reader, digests)
        for row in rows:
            ledger.add_row(row)
        if not ledger.row_built:
            return cls.from_state(key, cls.merge_rows(rows), reader, digests)
        return ledger

    @property
    def row_built(self) -> bool:
        """True while `add_row` keeps this ledger equal to `from_state(merge_rows(rows))`: past
        MAX_TURNS turns that keeps the newest, numbered from 0 again, which a fold cannot do."""
        return len(self.turns) <= MAX_TURNS and self._first_seq == 0

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Adds the session's next row, as `merge_rows` then `from_state` would: a turn is numbered in
        the order relayed, a tool call's digest is the first one the rows give and belongs to the
        first turn holding its id (whichever of the two comes first), a tool result's digest is the
        first one seen. For ledgers built by `from_rows` only."""
        raw = row.get("turn")
        if raw:
            blocks = tuple((b.startswith("t"), bytes.fromhex(b.removeprefix("t"))) for b in raw["blocks"])
            seq = self._first_seq + len(self.turns)
            turn = RelayedTurn(seq, bytes.fromhex(raw["digest"]), blocks, self._key_of(blocks),
                               tuple(raw["tool_ids"]), bytes.fromhex(raw["root"]), int(raw["position"]))
            self.turns.append(turn)
            self._by_key.setdefault(turn.key, seq)
            for tool_id in turn.tool_ids:
                first = self._tool_turn.setdefault(tool_id, seq)
                if tool_id in self._row_calls:
                    self._by_tool.setdefault(tool_id, (first, self._row_calls[tool_id]))
        for tool_id, digest in (row.get("tool_calls") or {}).items():
            if tool_id not in self._row_calls:
                self._row_calls[tool_id] = bytes.fromhex(digest)
                if tool_id in self._tool_turn:
                    self._by_tool.setdefault(tool_id, (self._tool_turn[tool_id], self._row_calls[tool_id]))
        for tool_id, digest in (row.get("tool_results") or {}).items():
            if tool_id not in self._tool_results:
                self._tool_results[tool_id] = bytes.fromhex(digest)

    def copy(self, reader: HistoryReader | None = None, digests: DigestMemo | None = None) -> HistoryLedger:
        """An independent copy (checking and recording change a ledger), reading with `reader`."""
        other = HistoryLedger(self._key, reader, digests)
        other.turns = list(self.turns)
        other._by_key = dict(self._by_key)
        other._by_tool = dict(self._by_tool)
        other._tool_results = dict(self._tool_results)
        other._first_seq = self._first_seq
        other.cut = self.cut
        other._tool_turn = dict(self._tool_turn)
        other._row_calls = dict(self._row_calls)
        return other

    @classmethod
    def from_state(cls, key: bytes, state: Mapping[str, Any], reader: HistoryReader | None = None,
                   digests: DigestMemo | None = None) -> HistoryLedger:
        ledger = cls(key, reader, digests)
        ledger._first_seq = int(state.get("first_seq", 0))
        ledger.cut = bool(state.get("cut")) or ledger._first_seq > 0
        calls = state.get("tool_calls", {})
        for offset, raw in enumerate(state.get("turns", [])):
            blocks = tuple((b.startswith("t"), bytes.fromhex(b.removeprefix("t"))) for b in raw["blocks"])
            turn = RelayedTurn(ledger._first_seq + offset, bytes.fromhex(raw["digest"]), blocks,
                               ledger._key_of(blocks), tuple(raw["tool_ids"]), bytes.fromhex(raw["root"]),
                               int(raw["position"]))
            ledger.turns.append(turn)
            ledger._by_key.setdefault(turn.key, turn.seq)
            for tool_id in turn.tool_ids:
                if tool_id in calls:
                    ledger._by_tool.setdefault(tool_id, (turn.seq, bytes.fromhex(calls[tool_id])))
        ledger._tool_results = {k: bytes.fromhex(v) for k, v in state.get("tool_results", {}).items()}
        return ledger
