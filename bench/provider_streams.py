"""Stream reassembly cost per provider: time per delta at N and 10*N one-letter deltas (linear work
gives the same figure), whole-stream and in small chunks, and with a byte limit.

    .venv/bin/python bench/provider_streams.py [--deltas 100000] [--chunk 7]

The streams are the stand-ins' own bytes (tests/support/openai_standin.py, gemini_standin.py),
built in memory: no server, no network.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smoltbot.gateway.providers import ChatCompletionReassembler, GeminiReassembler, ResponsesReassembler
from tests.support.gemini_standin import gemini_chunks
from tests.support.openai_responses_wire import responses_events
from tests.support.openai_standin import chat_chunks, plan_reply
from tests.support.standin_server import Seed


def stream(provider: str, deltas: int) -> bytes:
    payload: dict[str, Any] = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hi"}],
        "input": "hi",
    }
    headers = {"x-standin-deltas": str(deltas)}
    if provider == "gemini":
        chunks = gemini_chunks("tiny_deltas", Seed(b"bench"), {"contents": []}, "gemini-2.5-flash", deltas)
        import json

        return b"".join(
            b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\r\n\r\n" for c in chunks
        )
    plan = plan_reply("tiny_deltas", Seed(b"bench"), payload, headers, 100)
    if provider == "chat":
        return b"".join(chat_chunks(plan, include_usage=True))
    return b"".join(responses_events(plan, payload))


def run(make: Any, raw: bytes, chunk: int | None, limit: int | None) -> float:
    reassembler = make(limit=limit)
    started = time.perf_counter()
    if chunk is None:
        reassembler.feed(raw)
    else:
        for start in range(0, len(raw), chunk):
            reassembler.feed(raw[start : start + chunk])
    reassembler.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deltas", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=7, help="bytes per feed() in the chunked run")
    args = parser.parse_args()
    makers = {
        "chat": ChatCompletionReassembler,
        "responses": ResponsesReassembler,
        "gemini": GeminiReassembler,
    }
    print(
        f"{'provider':10} {'deltas':>9} {'MB':>7} {'whole us/delta':>15} {'chunked us/delta':>17} "
        f"{'limit 64KiB us/delta':>21}"
    )
    for provider, make in makers.items():
        for deltas in (args.deltas, args.deltas * 10):
            raw = stream(provider, deltas)
            whole = run(make, raw, None, None)
            chunked = run(make, raw, args.chunk, None) if deltas == args.deltas else float("nan")
            limited = run(make, raw, 65536, 65536)
            print(
                f"{provider:10} {deltas:>9} {len(raw) / 1e6:>7.1f} {whole / deltas * 1e6:>15.2f} "
                f"{chunked / deltas * 1e6:>17.2f} {limited / deltas * 1e6:>21.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
