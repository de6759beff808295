"""The Observer reads a request's model, tools and system prompt without building its history."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from smoltbot.observer.extraction import extract
from smoltbot.observer.pipeline import request_fields

RESPONSE = json.dumps({"type": "message", "role": "assistant", "content": [{"type": "text", "text": "ok"}],
                       "stop_reason": "end_turn"}).encode()
TRICKY_HISTORY = [
    {"role": "user", "content": 'braces in strings: "}]{[" and \\" escapes \\\\'},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x",
                                       "input": {"model": "not-this", "tools": [{"name": "nor-this"}]}}]},
    {"role": "user", "content": "ünïcödé ✓ \U0001f600"},
]


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"model": "m1", "max_tokens": 5, "messages": TRICKY_HISTORY, "tools": [{"name": "read"}],
                    "system": "be careful"}).encode(),
        # keys after the history, duplicates (the last wins), blocks as the system prompt, odd spacing
        b'{ "messages" : [ {"role":"user","content":"}"} ] ,\n\t"model":"a", "model" : "b",'
        b' "system": [{"type": "text", "text": "abc"}, {"type": "text", "text": "de"}],'
        b' "tools": [{"name": "t1"}, {"name": "t2"}, 5], "stream": true, "temperature": 0.5e-1 }',
        json.dumps({"messages": [], "model": None, "tools": "not-a-list"}).encode(),
        b'{"messages": [], "mod\\u0065l": "escaped-key", "model": 5, "mod\\u0065l": "last"}',
        b"{}",
        b"[1, 2]",
        b'{"model": "cut off',
        b"not json at all",
        "{\"model\": \"caf\u00e9\"}".encode() + b"\xff",
        b"",
    ],
)
def test_the_fields_read_from_a_request_are_those_of_the_whole_request(body):
    whole = extract(body, RESPONSE, http_status=200, streamed=False, outcome="complete", stream_error=b"")
    scanned = extract(request_fields(body), RESPONSE, http_status=200, streamed=False, outcome="complete",
                      stream_error=b"")
    assert (scanned.model, scanned.request_tools, scanned.system_prompt_chars) == (
        whole.model, whole.request_tools, whole.system_prompt_chars)


def test_the_history_is_skipped_without_being_built():
    # 2 MiB of empty objects: ~70 bytes each as Python objects, 4 bytes each as JSON.
    body = json.dumps({"messages": [{"role": "user", "content": [{"type": "tool_use", "input": {
        "items": [{}] * 1000}}]}] * 500, "model": "m", "tools": [{"name": "t"}]}).encode()
    tracemalloc.start()
    try:
        fields = request_fields(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert json.loads(fields) == {"model": "m", "tools": [{"name": "t"}]}
    assert peak < len(body) // 10, f"{peak} bytes allocated to read a {len(body)}-byte request"
