"""The full soak: thousands of calls through the gateway of a real stack, with figures.

    python bench/soak.py                       # 2,000 calls at concurrency 32, SQLite
    python bench/soak.py --calls 5000 --postgres   # on a throwaway PostgreSQL cluster

It starts registry, observer, API and gateway as `smoltbot serve` subprocesses (the harness
of tests/reliability) in a temp data dir, with the Anthropic stand-in as the upstream (a
subprocess of its own), and drives the official `anthropic` SDK: half the calls streamed,
thinking and tool_use in most, spread over several agents (x-api-key and Bearer).

Checked, and printed as figures: zero failed calls; exactly one traced exchange per call
(matched by tool_use id where the call made a tool call); the spool empty at the end; the
gateway's RSS at start (after a warm-up) and end, and its peak; the spool depth peak; and no
credential anywhere in the data dir (database, WAL, spool, captured service logs).
Exit code 1 when a check fails. docs/reliability.md quotes these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.reliability.harness import (  # noqa: E402 - after the sys.path line that makes it importable
    PgCluster,
    Stack,
    StandinProcess,
    check_exchanges_whole,
    load_mix,
    new_credential,
    run_calls,
    wait_until,
)


class Sampler:
    """Samples the gateway's RSS and spool depth every `interval` seconds in a thread."""

    def __init__(self, stack: Stack, interval: float = 1.0) -> None:
        self.stack = stack
        self.interval = interval
        self.rss_kb: list[int] = []
        self.spool: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a missed sample is not a failure
                self.rss_kb.append(self.stack.rss_kb("gateway"))
                self.spool.append(self.stack.spool_depth())
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def soak(calls: int, concurrency: int, agents: int, database_url: str, keep: bool,
         cluster: PgCluster | None = None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="smoltbot-soak-"))
    standin = StandinProcess(root / "standin.log")
    stack = Stack(root, standin.base_url, database_url=database_url)
    figures: dict[str, Any] = {"calls": calls, "concurrency": concurrency, "agents": agents,
                               "database": "postgresql" if database_url else "sqlite", "data_dir": str(root)}
    checks: dict[str, bool] = {}
    try:
        started = time.monotonic()
        stack.start()
        figures["stack_start_s"] = round(time.monotonic() - started, 1)
        warm = new_credential("soakwarm")
        warmup = asyncio.run(run_calls(stack.anthropic_base_url, warm, load_mix(2 * concurrency),
                                       concurrency=concurrency, run="warm"))
        checks["warm-up calls succeeded"] = all(r.ok for r in warmup)
        figures["gateway_rss_start_kb"] = stack.rss_kb("gateway")
        figures["observer_rss_start_kb"] = stack.rss_kb("observer")

        credentials = [new_credential(f"soak{n}") for n in range(agents)]
        shares = [calls // agents + (1 if n < calls % agents else 0) for n in range(agents)]

        async def drive() -> list[list[Any]]:
            return await asyncio.gather(*(
                run_calls(stack.anthropic_base_url, credential, load_mix(share),
                          concurrency=max(1, concurrency // agents), run=f"soak{n}", bearer=n % 2 == 1)
                for n, (credential, share) in enumerate(zip(credentials, shares, strict=True))))

        with Sampler(stack) as sampler:
            started = time.monotonic()
            batches = asyncio.run(drive())
            elapsed = time.monotonic() - started
            figures["gateway_rss_end_kb"] = stack.rss_kb("gateway")
            figures["observer_rss_end_kb"] = stack.rss_kb("observer")
            results = [r for batch in batches for r in batch]
            failed = [r for r in results if not r.ok]
            latencies = sorted(r.seconds for r in results if r.ok)
            figures.update(
                {
                    "seconds": round(elapsed, 1),
                    "calls_per_s": round(len(results) / elapsed, 1),
                    "failed_calls": len(failed),
                    "streamed_calls": sum(1 for r in results if r.spec.stream),
                    "latency_p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
                    "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1)
                    if latencies
                    else None,
                }
            )
            checks["zero failed calls"] = not failed
            if failed:
                figures["first_failures"] = [r.error for r in failed[:5]]

            traced_started = time.monotonic()
            exchanges = traces_total = 0
            matched = True
            for credential, batch, share in zip(credentials, batches, shares, strict=True):
                agent_id = stack.resolve_agent(credential)
                traces = stack.wait_for_exchanges(agent_id, share, timeout=300)
                by_exchange = check_exchanges_whole(traces)
                exchanges += len(by_exchange)
                traces_total += len(traces)
                tool_ids = {t for r in batch for t in r.tool_use_ids}
                traced_ids = {
                    t["observation"]["tool_use_id"] for t in traces if t["observation"].get("tool_use_id")
                }
                matched = matched and tool_ids == traced_ids and len(by_exchange) == share
            wait_until(lambda: stack.spool_depth() == 0, 120, "an empty spool")
            figures.update({
                "traced_exchanges": exchanges, "traces": traces_total,
                "traced_within_s_after_last_call": round(time.monotonic() - traced_started, 1),
                "spool_depth_end": stack.spool_depth(),
            })
        figures["gateway_rss_peak_kb"] = max(sampler.rss_kb, default=0)
        figures["spool_depth_peak"] = max(sampler.spool, default=0)
        figures["gateway_rss_growth_kb"] = figures["gateway_rss_end_kb"] - figures["gateway_rss_start_kb"]
        checks["exactly one traced exchange per call"] = exchanges == calls and matched
        checks["spool empty at the end"] = figures["spool_depth_end"] == 0
        checks["gateway RSS growth < 50 MB"] = figures["gateway_rss_growth_kb"] < 50 * 1024

        stack.close()
        secrets = [c.encode() for c in [warm, *credentials]]
        also = []
        if cluster is not None:  # stopped first, so everything it holds is on disk
            cluster.stop("fast")
            also.append(cluster.base)
        leaks = stack.find(secrets, *also)
        figures["files_grepped"] = sum(1 for _ in stack.files()) + sum(
            1 for d in also for p in d.rglob("*") if p.is_file())
        figures["data_dir_bytes"] = sum(p.stat().st_size for p in stack.files())
        figures["credential_hits"] = len(leaks)
        checks["no credential in the data dir or logs"] = not leaks
    finally:
        stack.close()
        standin.stop()
        if not keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    figures["checks"] = checks
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument(
        "--database-url", default="", help="PostgreSQL URL (default: SQLite in the temp data dir)"
    )
    parser.add_argument(
        "--postgres", action="store_true", help="run on a throwaway PostgreSQL cluster (initdb)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp data dir (logs, database)")
    args = parser.parse_args(argv)
    cluster = None
    if args.postgres:
        cluster = PgCluster()
        cluster.start()
        args.database_url = cluster.url
    try:
        figures = soak(args.calls, args.concurrency, args.agents, args.database_url, args.keep,
                       cluster)
    finally:
        if cluster is not None:
            cluster.remove()
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        if key != "checks":
            print(f"{key:<{width}}  {value}")
    print()
    for check, ok in figures["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if all(figures["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
