"""Gemini `generateContent` and `streamGenerateContent` (`POST /v1beta/models/{model}:...`):
the first candidate's parts. A stream arrives merged by the gateway into the object the same
call answers with unstreamed.

Actions: `functionCall` parts (`args`, an object, sent whole: never cut inside), and
`executableCode` parts (Gemini's own code execution: a server tool named code_execution).
Reasoning: thought parts (`thought: true`), which Google documents as thought *summaries*,
not the thinking itself: the trace says so (`summary_only`). Without
`thinkingConfig.includeThoughts` a thinking model returns none, only `thoughtsTokenCount` (said
in `missing`); a `thoughtSignature` anywhere in the turn (it rides on the first functionCall or
the last text part) is recorded as the signature of its thoughts. The reply text is never read
for reasoning. The model is the response's `modelVersion`, else the one named in the path.
A prompt blocked before any candidate (`promptFeedback.blockReason`) is a failure of the call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from smoltbot.core.usage import API_GEMINI
from smoltbot.observer.extraction import Extraction, ReasoningSegment, ToolCall, finite_input

from ._common import read_error_object

__all__ = ["GENERATE_CONTENT", "GenerateContentFormat"]

_CALL_PATH = re.compile(r"/models/(?P<model>[^/:]+):(?:generateContent|streamGenerateContent)$")
_PASSIVE_PARTS = ("codeExecutionResult", "functionResponse", "inlineData", "fileData", "videoMetadata")


def _tokens(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class GenerateContentFormat:
    provider: str = "gemini"
    api: str = API_GEMINI

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and _CALL_PATH.search(path) is not None

    def read_request(self, request: dict[str, Any], path: str, ex: Extraction) -> str:
        names: list[str] = []
        for tool in request.get("tools") or () if isinstance(request.get("tools"), list) else ():
            if not isinstance(tool, dict):
                continue
            declarations = tool.get("functionDeclarations") or tool.get("function_declarations")
            if isinstance(declarations, list):
                names += [d["name"] for d in declarations
                          if isinstance(d, dict) and isinstance(d.get("name"), str)]
            names += [key for key in tool if key not in ("functionDeclarations", "function_declarations")]
        ex.request_tools = names
        system = request.get("systemInstruction") or request.get("system_instruction")
        parts = system.get("parts") if isinstance(system, dict) else None
        if isinstance(parts, list):
            ex.system_prompt_chars = sum(len(p["text"]) for p in parts
                                         if isinstance(p, dict) and isinstance(p.get("text"), str))
        found = _CALL_PATH.search(path.split("?", 1)[0])
        return found.group("model") if found else ""

    def read_error(self, data: Any, ex: Extraction) -> bool:
        return read_error_object(data, ex, type_keys=("status", "code"))

    def read_response(self, data: dict[str, Any], ex: Extraction) -> None:
        ex.message_id = str(data.get("responseId") or "")
        if isinstance(data.get("modelVersion"), str):
            ex.model = data["modelVersion"]
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            feedback = data.get("promptFeedback")
            blocked = feedback.get("blockReason") if isinstance(feedback, dict) else None
            if isinstance(blocked, str) and blocked:
                ex.failure, ex.error_type = "prompt_blocked", "prompt_blocked"
                ex.error_message = f"the prompt was blocked ({blocked}) before the model answered"
            else:
                ex.missing.append("response has no candidates")
            return
        if len(candidates) > 1:
            ex.missing.append(f"{len(candidates)} candidates: only the first is read as the agent's turn")
        candidate = candidates[0]
        finish = candidate.get("finishReason")
        ex.stop_reason = finish if isinstance(finish, str) else ""
        if not ex.stop_reason:
            ex.missing.append("stream ended without a finishReason (truncated)" if ex.streamed
                              else "response has no finishReason")
        elif ex.stop_reason in ("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"):
            ex.missing.append(f"the model's function call was refused by the API "
                              f"(finishReason {ex.stop_reason})")
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list):
            ex.missing.append("the candidate has no content parts")
            parts = []
        texts: list[str] = []
        unknown: dict[str, int] = {}
        signed_turn = False
        for index, part in enumerate(parts):
            if not isinstance(part, dict):
                unknown["(not an object)"] = unknown.get("(not an object)", 0) + 1
                continue
            signed = bool(part.get("thoughtSignature"))
            signed_turn = signed_turn or signed
            call = part.get("functionCall")
            code = part.get("executableCode")
            if isinstance(call, dict):
                name = call.get("name") if isinstance(call.get("name"), str) and call.get("name") else ""
                if not name:
                    ex.missing.append("a functionCall part had no name")
                    name = "unnamed_tool"
                args = call.get("args")
                tool_input = args if isinstance(args, dict) else ({} if args is None else {"args": args})
                ex.tool_calls.append(ToolCall(id=str(call.get("id") or ""), name=name,
                                              input=finite_input(tool_input, name, ex), block_index=index,
                                              call_type="functionCall"))
            elif isinstance(code, dict):
                code_input = finite_input(code, "code_execution", ex)
                ex.tool_calls.append(ToolCall(id="", name="code_execution", input=code_input,
                                              block_index=index, server=True, call_type="executableCode"))
            elif isinstance(part.get("text"), str):
                if part.get("thought") is True:
                    ex.reasoning.append(ReasoningSegment("thought_summary", part["text"].strip(), index,
                                                         summary=True))
                elif part["text"].strip():
                    texts.append(part["text"].strip())
            elif not any(key in part for key in _PASSIVE_PARTS) and "thoughtSignature" not in part:
                label = next(iter(part), "(empty)")
                unknown[label] = unknown.get(label, 0) + 1
        for label, count in unknown.items():
            ex.missing.append(f"unknown part '{label}' ({count}x) not read")
        if signed_turn:
            # The signature of the turn's thinking rides on a later part (the first functionCall,
            # or the last text), not on the thought parts: it signs the thoughts all the same.
            ex.reasoning = [replace(s, signature_present=True) for s in ex.reasoning]
        ex.final_text = "\n\n".join(texts)
        thoughts = _tokens(data.get("usageMetadata"), "thoughtsTokenCount")
        if thoughts and not any(s.text for s in ex.reasoning):
            ex.missing.append(f"the model thought ({thoughts} thought tokens) but returned no thought "
                              "summaries (thinkingConfig.includeThoughts was not set)")


GENERATE_CONTENT = GenerateContentFormat()
