"""Cost of the evidence checks per exchange on a long Claude Code-shaped session.

    .venv/bin/python bench/evidence_cost.py [--exchanges 200] [--result-kb 4]

Each exchange resends the whole history (as agents do): a thinking + text + Bash/Read/WebFetch turn
and a tool result of `--result-kb` KiB. For the last exchanges of sessions of N and 4*N exchanges it
prints the time of the history check (`HistoryLedger.check` + `record`), of provenance
(`collect_sources` + `trace_tool_calls` + `say_do_findings`), and, as the same-run baseline, of
`json.loads` of the request body, which the observer pays anyway. Linear work shows as a flat ratio
to that baseline from N to 4*N. Also the ledger's state size per relayed turn.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smoltbot.core.evidence.history import HistoryLedger
from smoltbot.core.evidence.provenance import collect_sources, trace_tool_calls
from smoltbot.core.evidence.saydo import say_do_findings

WORDS = ["checkout", "discount", "cart", "total", "price", "module", "fixture", "assert", "refactor",
         "cache", "webhook", "handler", "key", "rotation", "payment", "provider", "test", "flaky", "retry",
         "timeout", "config"]
TOOLS = ("Bash", "Read", "WebFetch", "Grep")


def prose(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS) + rng.choice((" ", " ", " ", ".\n", ", "))
        out.append(word)
        size += len(word)
    return "".join(out)[:chars]


def response(rng: random.Random, n: int) -> dict[str, Any]:
    tool = TOOLS[n % len(TOOLS)]
    tool_input: dict[str, Any] = {
        "Bash": {"command": f"pytest -q tests/test_{n}.py -k {rng.choice(WORDS)}", "description": "run"},
        "Read": {"file_path": f"/home/dev/shop/src/module_{n}.py"},
        "WebFetch": {"url": f"https://docs.example/{n}", "prompt": prose(rng, 60)},
        "Grep": {"pattern": rng.choice(WORDS), "path": "src"},
    }[tool]
    return {"content": [
        {"type": "thinking", "thinking": prose(rng, 600), "signature": "Eq" + "A" * 200},
        {"type": "text", "text": "I'll only read for now. " + prose(rng, 120)},
        {"type": "tool_use", "id": f"toolu_{n:06d}", "name": tool, "input": tool_input},
    ]}


def session(exchanges: int, result_kb: int, timed_last: int) -> dict[str, float]:
    rng = random.Random(7)
    ledger = HistoryLedger(b"bench-key")
    first = {"role": "user", "content": [{"type": "text", "text": prose(rng, 400)}]}
    messages: list[dict[str, Any]] = [first]
    system = [{"type": "text", "text": prose(rng, 12_000) + "\nWorking directory: /home/dev/shop\n"}]
    times: dict[str, list[float]] = {"parse": [], "history": [], "provenance": []}
    for n in range(exchanges):
        raw = json.dumps({"model": "m", "system": system, "messages": messages}).encode()
        reply = response(rng, n)
        timed = n >= exchanges - timed_last
        started = time.perf_counter()
        body = json.loads(raw)
        parsed = time.perf_counter()
        ledger.check(body)
        ledger.record(body, reply)
        checked = time.perf_counter()
        sources, _ = collect_sources(body)
        trace_tool_calls(reply, sources)
        say_do_findings(reply)
        traced = time.perf_counter()
        if timed:
            times["parse"].append(parsed - started)
            times["history"].append(checked - parsed)
            times["provenance"].append(traced - checked)
        messages.append({"role": "assistant", "content": reply["content"]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{n:06d}",
             "content": prose(rng, result_kb * 1024)}]})
    figures = {k: statistics.median(v) for k, v in times.items()}
    figures["history_mb"] = len(raw) / 1e6
    figures["state_bytes_per_turn"] = len(json.dumps(ledger.to_state())) / exchanges
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=200)
    parser.add_argument("--result-kb", type=int, default=4)
    parser.add_argument("--timed", type=int, default=10, help="exchanges timed at the end of each session")
    args = parser.parse_args()
    print(f"{'exchanges':>9} {'history MB':>10} {'json.loads ms':>13} {'history ms':>10} {'(x parse)':>9} "
          f"{'provenance ms':>13} {'(x parse)':>9} {'ledger B/turn':>13}")
    for exchanges in (args.exchanges, 4 * args.exchanges):
        f = session(exchanges, args.result_kb, args.timed)
        print(f"{exchanges:>9} {f['history_mb']:>10.2f} {f['parse'] * 1e3:>13.2f} "
              f"{f['history'] * 1e3:>10.2f} "
              f"{f['history'] / f['parse']:>9.2f} {f['provenance'] * 1e3:>13.2f} "
              f"{f['provenance'] / f['parse']:>9.2f} {f['state_bytes_per_turn']:>13.0f}")


if __name__ == "__main__":
    main()
