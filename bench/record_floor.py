"""The record's cost per call, this tree against a baseline, on the relay floor: CPU per call of
`bench/protocol_relay.py --record` (a bare Protocol relay that also makes each call's record with
the gateway's own capture, spool and shipper) from this tree and from a baseline revision, beside
the bare relay, all in one run.

    python bench/record_floor.py --baseline REV [--rounds 7] [--seconds 3]

The gateway's own figures (`bench/gateway_latency.py`) carry its server, relay glue, identity and
upstream client too, which move run to run by more than the record's share; here only the record
differs between the two recording relays, so the difference between them is the change to the
record (capture, spool, shipping) alone. Layout as gateway_latency's: the relays on core 0, wrk,
the upstream (a static nginx reply) and an ack-only Ingest sink on core 1; the three relays
interleaved round by round at c=16 and c=1, median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway_latency import (
    BODY,
    CREDENTIAL,
    GATEWAY_CORE,
    LOAD_CORE,
    SINK_CHILD,
    STATIC_REPLY,
    UPSTREAM_SERVER,
    WRK_SCRIPT,
    cpu_seconds,
    free_port,
    pinned,
    run_wrk,
    start_nginx,
    wait_port,
)
from observer_throughput import baseline_tree

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision, source checkout or link tree")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smoltbot-record-floor-"))
    children: list[subprocess.Popen[str]] = []
    try:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        upstream_port = free_port()
        children.append(start_nginx(work, "upstream", LOAD_CORE, UPSTREAM_SERVER.format(
            port=upstream_port, standin_port=free_port(), reply=STATIC_REPLY)))
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        sink_port = free_port()
        children.append(pinned(LOAD_CORE, [sys.executable, "-c", SINK_CHILD, f"127.0.0.1:{sink_port}"],
                               env=env))
        wait_port(sink_port)
        tree = baseline_tree(args.baseline, work / "baseline")
        relays = {"bare relay": (env, []), "relay + record": (env, ["--record", f"127.0.0.1:{sink_port}"]),
                  "relay + record, before": ({**env, "PYTHONPATH": f"{tree}{os.pathsep}{env['PYTHONPATH']}"},
                                             ["--record", f"127.0.0.1:{sink_port}"])}
        ports: dict[str, int] = {}
        pids: dict[str, int] = {}
        for name, (relay_env, extra) in relays.items():
            ports[name] = free_port()
            child = pinned(GATEWAY_CORE, [sys.executable, str(ROOT / "bench" / "protocol_relay.py"),
                                          str(ports[name]), upstream_url, *extra], env=relay_env)
            children.append(child)
            pids[name] = child.pid
        for port in (upstream_port, *ports.values()):
            wait_port(port)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(BODY), credential=CREDENTIAL))
        for port in ports.values():
            run_wrk(f"http://127.0.0.1:{port}/anthropic/v1/messages", 4, 1, script)
        cpu: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for connections in (16, 1):
                for name, port in ports.items():
                    before = cpu_seconds(pids[name])
                    load = run_wrk(f"http://127.0.0.1:{port}/anthropic/v1/messages", connections,
                                   args.seconds, script)
                    calls = load["rps"] * max(int(args.seconds), 1)
                    cpu.setdefault((name, connections), []).append(
                        (cpu_seconds(pids[name]) - before) * 1e6 / max(calls, 1))
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(work, ignore_errors=True)
    med = {key: statistics.median(values) for key, values in cpu.items()}
    print(f"`python bench/record_floor.py --baseline {args.baseline} --rounds {args.rounds} --seconds "
          f"{args.seconds:g}` ({time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} "
          "at the end); "
          "CPU per call (µs), median of the rounds:\n")
    print("| relay | c=16 | c=1 | record's share at c=16 | record's share at c=1 |")
    print("|---|---:|---:|---:|---:|")
    for name in relays:
        shares = [med[(name, c)] - med[("bare relay", c)] for c in (16, 1)]
        print(f"| {name} | {med[(name, 16)]:.0f} | {med[(name, 1)]:.0f} | "
              + " | ".join("-" if name == "bare relay" else f"{share:.0f}" for share in shares) + " |")
    ratios = []
    for c in (16, 1):
        now = med[("relay + record", c)] - med[("bare relay", c)]
        then = med[("relay + record, before", c)] - med[("bare relay", c)]
        ratios.append(f"c={c} x{now / then:.2f}" if then > 0 else f"c={c} -")
    print(f"\nThe record's share of CPU per call against the baseline's: {', '.join(ratios)}.")


if __name__ == "__main__":
    main()
