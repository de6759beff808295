"""What the observer's worker process spends per exchange, and the local analyzer's part of it.

    python bench/observer_worker_cost.py [--exchanges 200] [--repeat 5] [--baseline DIR] [--rounds 3]

Runs `pipeline.compute_many` (decode, extraction, usage facts, the local analyzer, building and
serialising the traces; evidence off: see bench/evidence_cost.py for its checks) over the
exchanges of `bench/observer_throughput.py` (thinking + text + one tool call, a request with
history, ~6 KB) against a card that declares every standard value, and `local_analyzer.analyze`
alone on one of them. Prints microseconds per exchange (the best of `--repeat` passes).

`--baseline DIR` (a directory holding a `smoltbot` package tree, as bench/observer_throughput.py
takes) measures that code too, in child processes, rounds interleaved, and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def measure(exchanges: int, repeat: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    import observer_throughput as bench

    from smoltbot.core.storage import utcnow
    from smoltbot.observer import local_analyzer, pipeline
    from smoltbot.observer.pipeline import Job
    from smoltbot.v1 import observer_service_pb2

    card = {"card_id": "ac-bench", "values": {"declared": list(local_analyzer.VALUE_KEYWORDS)}}
    payloads = [observer_service_pb2.IngestRequest.FromString(
        bench.exchange_bytes(("a" * 64, "smolt-bench", "session-bench"), i)[1]).exchange.SerializeToString()
        for i in range(exchanges)]
    jobs = [Job(exchange_id=f"{i:032x}", agent_id="smolt-bench", session_id="session-bench", card=card,
                payload=payload, store_reasoning="redacted", observed_at=utcnow(), missing=())
            for i, payload in enumerate(payloads)]
    extraction = pipeline.extraction_of(pipeline.decode(payloads[0]))

    def best(run: object, count: int, per: int) -> float:
        run()  # type: ignore[operator]
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(count):
                run()  # type: ignore[operator]
            times.append((time.perf_counter() - start) / (count * per))
        return min(times) * 1e6

    return {"compute_us": best(lambda: pipeline.compute_many(jobs), 1, len(jobs)),
            "analyze_us": best(lambda: local_analyzer.analyze(extraction, card), 200, 1)}


def child(tree: str | None, args: argparse.Namespace) -> dict[str, float]:
    environment = dict(os.environ)
    if tree:
        environment["PYTHONPATH"] = os.pathsep.join(
            [tree, *filter(None, [environment.get("PYTHONPATH", "")])])
    output = subprocess.run([sys.executable, __file__, "--child", "--exchanges", str(args.exchanges),
                             "--repeat", str(args.repeat)], env=environment, check=True,
                            capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exchanges", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.exchanges, args.repeat)))
        return
    if not args.baseline:
        result = measure(args.exchanges, args.repeat)
        print(f"worker compute per exchange: {result['compute_us']:.0f} us; local analyzer alone: "
              f"{result['analyze_us']:.0f} us (load average {os.getloadavg()[0]:.1f})")
        return
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "this": []}
    for round_ in range(args.rounds):
        for name in ("baseline", "this") if round_ % 2 == 0 else ("this", "baseline"):
            runs[name].append(child(args.baseline if name == "baseline" else None, args))
            print(f"round {round_ + 1} {name:8}: {runs[name][-1]}", flush=True)
    for key, label in (("compute_us", "worker compute per exchange"), ("analyze_us", "local analyzer alone")):
        this, base = (statistics.median(run[key] for run in runs[name]) for name in ("this", "baseline"))
        print(f"{label:28} {this:8.0f} / {base:8.0f} us = x{this / base:.2f}")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
