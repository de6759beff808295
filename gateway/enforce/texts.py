"""What the client sees in place of a tool call the card stopped, and the nudge note.

One home for the wording: the docs (docs/enforce.md) quote it, and tests read it from here.
"""

from __future__ import annotations

import json
from typing import Any

from smoltbot.core.aap.enforcement import Verdict

__all__ = ["NUDGE_PREFIX", "nudge_note", "replacement_text"]

#: Starts every note the gateway adds to a request in nudge mode.
NUDGE_PREFIX = "[smoltbot nudge]"
_INPUT_CHARS = 300


def _summary(tool_input: Any) -> str:
    text = json.dumps(tool_input, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= _INPUT_CHARS else text[:_INPUT_CHARS] + "…"


def replacement_text(name: str, tool_input: Any, verdict: Verdict) -> str:
    """The text block that replaces a tool call: blocked (deny), or held for approval (escalate)."""
    if verdict.decision == "escalate":
        return (f"[smoltbot] This action needs your explicit approval before it runs: the agent wanted "
                f"to call the tool '{name}' with {_summary(tool_input)}, and {verdict.reason}. The call "
                "was held by smoltbot and has not run. Approve it explicitly if you want it done.")
    return (f"[smoltbot] Blocked a tool call: the agent wanted to call the tool '{name}' with "
            f"{_summary(tool_input)}, but {verdict.reason}. The call was stopped by smoltbot and has "
            "not run.")


def nudge_note(calls: list[tuple[str, Verdict]]) -> str:
    """The note added to the session's next request after calls the card would have stopped."""
    said = "; ".join(f"'{name}': {verdict.reason}" for name, verdict in calls)
    return (f"{NUDGE_PREFIX} Your previous answer made tool calls that your alignment card does not "
            f"allow ({said}). They went through this time; do not repeat them, and ask the user "
            "before actions the card requires approval for.")
