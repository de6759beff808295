"""What the OpenAI and Gemini modules share: their error object and the note on unfinished calls."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from smoltbot.observer.extraction import Extraction

__all__ = ["mark_unfinished", "read_error_object", "tool_names"]


def read_error_object(data: Any, ex: Extraction, *, type_keys: tuple[str, ...]) -> bool:
    """`{"error": {...}}` (OpenAI: type/code/message; Google: status/code/message), also as the
    one element of a list (a Gemini stream's JSON array that failed)."""
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return False
    error = data["error"]
    for key in type_keys:
        value = error.get(key)
        if value not in (None, ""):
            ex.error_type = str(value)
            break
    ex.error_message = str(error.get("message") or "")
    return True


def tool_names(tools: Any, nested: bool) -> list[str]:
    """The names of the offered tools; `nested`: Chat's `{"type": "function", "function": {...}}`."""
    names = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        spec = tool.get(kind) if nested and isinstance(tool.get(kind), dict) else tool
        name = spec.get("name") if isinstance(spec, dict) else None
        if isinstance(name, str):
            names.append(name)
        elif isinstance(kind, str):
            names.append(kind)  # a built-in tool (web_search, file_search, local_shell, ...)
    return names


def mark_unfinished(ex: Extraction, position: int, reason: str, *, note: bool = True) -> None:
    """The call at `position` was not finished: traced as not executed, with a note unless one
    was made already (an input that does not parse says so where it is read)."""
    call = ex.tool_calls[position]
    if not call.finished:
        return
    if note:
        ex.missing.append(f"tool call '{call.name}' was not finished ({reason}): traced as not executed")
    ex.tool_calls[position] = replace(call, finished=False, unfinished_reason=reason)
