"""Peak memory of reading one big exchange in the Observer.

    python bench/observer_memory.py [--mib 32] [--message-bytes 1500] [--shape chat|tiny]

Builds one captured exchange whose request is `--mib` MiB of conversation history (many
messages of about `--message-bytes` bytes: text, tool calls and tool results, the shape a long
agent session sends; or, `--shape tiny`, tool inputs made of many empty objects, the worst case
for a parser) and a small tool-call response, then runs the Observer's CPU step on it
(`pipeline.compute`: decode, extract, analyse, build and verify the traces), as a worker process
does. Reported: the peak of memory allocated during that step (tracemalloc: Python objects,
bytes and strings; the job's payload, held before the step, is not counted), in MiB and as a
multiple of the request body's size; and the growth of the process's peak RSS (ru_maxrss; 0
when building the test body already reached a higher peak).

Figures (2 cores, shared): 32 MiB chat history 112 MiB (3.5x) before the request was scanned
instead of parsed, 32 MiB (1.0x: the body's one copy out of the message) after; tiny objects,
45 MiB body: 880 MiB (19.5x) and ~2 GiB peak RSS growth before, 1.0x after.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def history(total: int, message_bytes: int, shape: str) -> list[dict[str, object]]:
    if shape == "tiny":
        # The worst case for a JSON parser: tiny objects (4 bytes of JSON, ~70 bytes as Python).
        per = max(1, message_bytes // 4)  # "{}, "
        count = total // (per * 4) + 1
        return [{"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{i}", "name": "x",
                                                   "input": {"items": [{}] * per}}]} for i in range(count)]
    messages: list[dict[str, object]] = []
    size = 0
    i = 0
    filler = "lorem ipsum dolor sit amet " * (message_bytes // 27 + 1)
    while size < total:
        if i % 3 == 0:
            message: dict[str, object] = {"role": "user", "content": filler[:message_bytes]}
        elif i % 3 == 1:
            message = {"role": "assistant", "content": [
                {"type": "text", "text": filler[: message_bytes // 2]},
                {"type": "tool_use", "id": f"toolu_{i}", "name": "read_file",
                 "input": {"path": f"/srv/{i}", "lines": list(range(20))}}]}
        else:
            message = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i - 1}",
                                                    "content": filler[:message_bytes]}]}
        size += len(json.dumps(message))
        messages.append(message)
        i += 1
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=32)
    parser.add_argument("--message-bytes", type=int, default=1500)
    parser.add_argument("--shape", choices=("chat", "tiny"), default="chat",
                        help="chat: text, tool calls and results; tiny: tool inputs of many empty objects")
    args = parser.parse_args()

    from google.protobuf import timestamp_pb2

    from smoltbot.observer import pipeline
    from smoltbot.v1 import exchange_pb2

    body = json.dumps({
        "model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are a careful assistant.",
        "tools": [{"name": "read_file", "input_schema": {"type": "object"}}],
        "messages": history(int(args.mib * 1024 * 1024), args.message_bytes, args.shape),
    }).encode()
    response = json.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "thinking", "thinking": "Read it.", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_x", "name": "read_file",
                     "input": {"path": "/srv/readme.md"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}).encode()
    ended = datetime.now(UTC)
    started, finished = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    started.FromDatetime(ended - timedelta(seconds=1))
    finished.FromDatetime(ended)
    exchange = exchange_pb2.Exchange(
        exchange_id=secrets.token_hex(16), agent_hash=secrets.token_hex(32),
        request=exchange_pb2.CapturedRequest(method="POST", path="/v1/messages", body=body),
        response=exchange_pb2.CapturedResponse(status=200, body=response),
        timings=exchange_pb2.ExchangeTimings(started_at=started, ended_at=finished),
        outcome=exchange_pb2.EXCHANGE_OUTCOME_COMPLETE)
    payload = exchange.SerializeToString()
    del exchange
    card = {"card_id": "ac-bench", "autonomy": {"bounded_actions": [], "escalation_triggers": []},
            "values": {"declared": ["transparency"]}}
    job = pipeline.Job(exchange_id=secrets.token_hex(16), agent_id="smolt-bench", session_id=None, card=card,
                      payload=payload, store_reasoning="full", observed_at=datetime.now(UTC))

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    result = pipeline.compute(job)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert not result.step, result.error
    mib = len(body) / 1024 / 1024
    print(f"request body {mib:.1f} MiB ({len(json.loads(body)['messages'])} messages); "
          f"payload {len(payload) / 1024 / 1024:.1f} MiB")
    print(
        f"pipeline.compute: peak allocated {peak / 1024 / 1024:.1f} MiB = {peak / len(body):.1f}x the body; "
        f"peak RSS growth {rss_growth:.0f} MiB; {seconds * 1000:.0f} ms (under tracemalloc); "
        f"{len(result.traces)} trace(s)"
    )


if __name__ == "__main__":
    main()
