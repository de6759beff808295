"""What a history check finds (findings, rewrites) and what it keeps: the relayed turns it is held
to, and the point the session's next check resumes from. The check itself: `history.HistoryLedger`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from smoltbot.core.evidence.transcript import Message

__all__ = ["CheckPoint", "Finding", "FindingKind", "HistoryCheck", "RelayedTurn", "Rewrite", "RewriteKind"]


class FindingKind(StrEnum):
    UNRELAYED_TURN = "unrelayed_turn"
    EDITED_TURN = "edited_turn"
    UNREQUESTED_TOOL_CALL = "unrequested_tool_call"
    ORPHAN_TOOL_RESULT = "orphan_tool_result"
    EDITED_TOOL_RESULT = "edited_tool_result"
    OUT_OF_ORDER_TURN = "out_of_order_turn"


class RewriteKind(StrEnum):
    COMPACTION = "compaction"
    CONTEXT_EDIT = "context_edit"
    THINKING_DROPPED = "thinking_dropped"
    TRUNCATED_FRONT = "truncated_front"
    FIRST_MESSAGE_CHANGED = "first_message_changed"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    message_index: int
    description: str
    block_index: int | None = None
    tool_use_id: str | None = None
    #: The ledger's sequence number of the relayed turn this concerns, where there is one.
    turn_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Rewrite:
    kind: RewriteKind
    message_index: int
    description: str


@dataclass(slots=True)
class HistoryCheck:
    findings: list[Finding] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    assistant_turns: int = 0
    verified_turns: int = 0
    #: Turns before the first recognised one that a `cut` ledger can neither vouch for nor refute.
    unknown_turns: int = 0
    #: The message index of the first recognised turn they stand before (None: none recognised).
    unknown_before: int | None = None
    #: Where the session's next check may resume (`HistoryLedger.check`); None: nowhere.
    point: CheckPoint | None = field(default=None, repr=False, compare=False)

    @property
    def intact(self) -> bool:
        """True when nothing was found: every rewrite seen is one a client may make."""
        return not self.findings

    @property
    def diverged_at(self) -> int | None:
        """The first message index where the history stops being the one that happened."""
        return min((f.message_index for f in self.findings), default=None)


@dataclass(frozen=True, slots=True)
class RelayedTurn:
    seq: int
    digest: bytes
    #: (is_thinking, digest) per block, in order.
    blocks: tuple[tuple[bool, bytes], ...]
    key: bytes
    tool_ids: tuple[str, ...]
    root: bytes
    position: int
    #: The digests of its thinking blocks, in order (read at every check: computed once).
    thinking: tuple[bytes, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thinking", tuple(d for t, d in self.blocks if t))


@dataclass(frozen=True, slots=True)
class _Fold:
    """What a check found in the messages before `at`, where every assistant turn matched a relayed
    turn and nothing was found (so nothing there depends on the messages after it): the rewrites
    of each kind, in order, the counts, the first and the last turn matched, the relayed turns
    used, and the tool ids called and answered."""

    at: int = 0
    compactions: tuple[Rewrite, ...] = ()
    thinking: tuple[Rewrite, ...] = ()
    cleared: tuple[Rewrite, ...] = ()
    assistants: int = 0
    matched: int = 0
    first: tuple[int, RelayedTurn] | None = None
    last: RelayedTurn | None = None
    used: frozenset[int] = frozenset()
    called: frozenset[str] = frozenset()
    answered: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CheckPoint:
    """A check's state a few messages before the end of the history it checked, for the session's
    next check to resume from (`HistoryLedger.check`): valid for a history that resends the
    messages before it as the very objects (`boundary`: the last of them), checked against the
    same ledger extended by rows, never changed."""

    fold: _Fold
    boundary: Message
    cut: bool
    first_seq: int
    key: bytes
    #: The tool results the check learned before `fold.at` (the first digest of each): the ledger
    #: it resumes with must hold them (the last call's row did), or it would learn them again.
    learned: tuple[tuple[str, bytes], ...] = ()
