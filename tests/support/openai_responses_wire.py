"""The Responses API's reply of the OpenAI stand-in: the response object and its event stream.

Events follow the order api.openai.com sends them: ``response.created``, ``response.in_progress``,
then per output item ``response.output_item.added``, its parts and deltas (``content_part``,
``output_text``, ``reasoning_summary_part`` / ``reasoning_summary_text``,
``function_call_arguments``, ``custom_tool_call_input``, ``web_search_call.*``) and
``response.output_item.done``; last ``response.completed`` (or ``response.incomplete``,
``response.failed``), or an ``error`` event mid-stream. Each is ``event: <type>`` plus one
``data:`` line, numbered by ``sequence_number``.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .openai_standin import Plan

__all__ = ["response_items", "responses_events", "responses_object"]

_CREATED = 1_767_225_600
_SEARCH_URL = "https://example.com/openai-standin"


def _text_part(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "annotations": annotations or [], "logprobs": [], "text": text}


def response_items(plan: Plan, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The output items, completed, in order."""
    seed, items = plan.seed, []
    if plan.summary:
        item: dict[str, Any] = {
            "id": "rs_" + seed.hex("reasoning", 48),
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "".join(part)} for part in plan.summary],
        }
        if "reasoning.encrypted_content" in (payload.get("include") or []):
            item["encrypted_content"] = "gAAAAA" + seed.blob("encrypted", 4)
        items.append(item)
    if plan.scenario == "web_search":
        items.append(
            {
                "id": "ws_" + seed.hex("search", 48),
                "type": "web_search_call",
                "status": "completed",
                "action": {"type": "search", "query": f"stand-in {seed.fingerprint}"},
            }
        )
    for n, call in enumerate(plan.calls):
        call_id = "call_" + seed.token(f"call{n}")
        if call.kind == "custom":
            items.append(
                {
                    "id": "ctc_" + seed.hex(f"ctc{n}", 48),
                    "type": "custom_tool_call",
                    "status": "completed",
                    "call_id": call_id,
                    "input": call.arguments,
                    "name": call.name,
                }
            )
        else:
            items.append(
                {
                    "id": "fc_" + seed.hex(f"fc{n}", 48),
                    "type": "function_call",
                    "status": "completed",
                    "arguments": call.arguments,
                    "call_id": call_id,
                    "name": call.name,
                }
            )
    status = "incomplete" if plan.scenario == "length" else "completed"
    if plan.refusal:
        items.append(
            {
                "id": "msg_" + seed.hex("message", 48),
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": "".join(plan.refusal)}],
            }
        )
    elif plan.text:
        text = "".join(plan.text)
        annotations = []
        if plan.scenario == "web_search":
            annotations = [
                {
                    "type": "url_citation",
                    "start_index": 0,
                    "end_index": len(text),
                    "url": _SEARCH_URL,
                    "title": "OpenAI stand-in search result",
                }
            ]
        items.append(
            {
                "id": "msg_" + seed.hex("message", 48),
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [_text_part(text, annotations)],
            }
        )
    return items


def responses_object(
    plan: Plan,
    payload: dict[str, Any],
    *,
    status: str | None = None,
    output: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The response as a plain call returns it (and as response.completed carries it)."""
    if status is None:
        status = {"length": "incomplete", "failed": "failed"}.get(plan.scenario, "completed")
    final = status in ("completed", "incomplete", "failed")
    usage = {
        "input_tokens": plan.input_tokens,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens},
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": plan.input_tokens + plan.output_tokens,
    }
    reasoning = payload.get("reasoning") or {}
    return {
        "id": "resp_" + plan.seed.hex("response", 48),
        "object": "response",
        "created_at": _CREATED + plan.seed.number("created", 0, 10_000_000),
        "status": status,
        "background": False,
        "error": {"code": "server_error", "message": "The model failed to generate a response."}
        if status == "failed"
        else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": plan.model,
        "output": (response_items(plan, payload) if status != "failed" else []) if output is None else output,
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": payload.get("previous_response_id"),
        "prompt_cache_key": payload.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": None,
        "service_tier": "default",
        "store": payload.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools") or [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage if final else None,
        "user": None,
        "metadata": payload.get("metadata") or {},
    }


def responses_events(plan: Plan, payload: dict[str, Any]) -> list[bytes]:
    """The SSE writes of a streamed response, one event per write."""
    seq = itertools.count()
    out: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": next(seq), **fields}
        out.append(
            f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()
        )

    def obfuscation() -> str:
        return plan.seed.token(f"obf{len(out)}", 10)

    start = responses_object(plan, payload, status="in_progress", output=[])
    emit("response.created", response=start)
    emit("response.in_progress", response=start)
    chunks = _item_chunks(plan)
    for index, item in enumerate(response_items(plan, payload)):
        kind, item_id = item["type"], item["id"]
        common = {"item_id": item_id, "output_index": index}
        if kind == "reasoning":
            emit(
                "response.output_item.added",
                output_index=index,
                item={"id": item_id, "type": "reasoning", "summary": []},
            )
            for s, pieces in enumerate(plan.summary):
                emit(
                    "response.reasoning_summary_part.added",
                    **common,
                    summary_index=s,
                    part={"type": "summary_text", "text": ""},
                )
                for piece in pieces:
                    emit(
                        "response.reasoning_summary_text.delta",
                        **common,
                        summary_index=s,
                        delta=piece,
                        obfuscation=obfuscation(),
                    )
                emit("response.reasoning_summary_text.done", **common, summary_index=s, text="".join(pieces))
                emit(
                    "response.reasoning_summary_part.done",
                    **common,
                    summary_index=s,
                    part={"type": "summary_text", "text": "".join(pieces)},
                )
        elif kind == "web_search_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item={
                    "id": item_id,
                    "type": "web_search_call",
                    "status": "in_progress",
                    "action": {"type": "search"},
                },
            )
            for stage in ("in_progress", "searching", "completed"):
                emit(f"response.web_search_call.{stage}", **common)
        elif kind in ("function_call", "custom_tool_call"):
            field_name = "arguments" if kind == "function_call" else "input"
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", field_name: ""},
            )
            delta_kind = (
                "response.function_call_arguments"
                if kind == "function_call"
                else "response.custom_tool_call_input"
            )
            for piece in chunks[item_id]:
                emit(f"{delta_kind}.delta", **common, delta=piece, obfuscation=obfuscation())
            emit(f"{delta_kind}.done", **common, **{field_name: item[field_name]})
        elif kind == "message":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            part = item["content"][0]
            if part["type"] == "refusal":
                emit(
                    "response.content_part.added",
                    **common,
                    content_index=0,
                    part={"type": "refusal", "refusal": ""},
                )
                for piece in plan.refusal:
                    emit("response.refusal.delta", **common, content_index=0, delta=piece)
                emit("response.refusal.done", **common, content_index=0, refusal=part["refusal"])
            else:
                emit("response.content_part.added", **common, content_index=0, part=_text_part(""))
                for n, piece in enumerate(plan.text):
                    if plan.scenario in ("mid_stream_error", "failed") and n == 2:
                        return _cut(plan, payload, out, emit)
                    emit(
                        "response.output_text.delta",
                        **common,
                        content_index=0,
                        delta=piece,
                        logprobs=[],
                        obfuscation=obfuscation(),
                    )
                emit("response.output_text.done", **common, content_index=0, text=part["text"], logprobs=[])
                for a, annotation in enumerate(part["annotations"]):
                    emit(
                        "response.output_text.annotation.added",
                        **common,
                        content_index=0,
                        annotation_index=a,
                        annotation=annotation,
                    )
            emit("response.content_part.done", **common, content_index=0, part=part)
        emit("response.output_item.done", output_index=index, item=item)
    final = responses_object(plan, payload)
    kind = {"completed": "response.completed", "incomplete": "response.incomplete"}[final["status"]]
    emit(kind, response=final)
    return out


def _cut(plan: Plan, payload: dict[str, Any], out: list[bytes], emit: Any) -> list[bytes]:
    if plan.scenario == "failed":
        emit("response.failed", response=responses_object(plan, payload, status="failed"))
    else:
        emit(
            "error",
            code="server_error",
            param=None,
            message="The server had an error processing your request. Sorry about that! You can retry your "
            "request, or contact us through our help center at help.openai.com if you keep seeing "
            "this error.",
        )
    return out


def _item_chunks(plan: Plan) -> dict[str, list[str]]:
    from .openai_standin import fragments

    chunks = {}
    for n, call in enumerate(plan.calls):
        prefix = "ctc_" if call.kind == "custom" else "fc_"
        chunks[prefix + plan.seed.hex(f"{prefix[:-1]}{n}", 48)] = fragments(call.arguments)
    return chunks
