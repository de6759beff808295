"""One gateway process against two on one port (SMOLTBOT_GATEWAY_PROCESSES=2, SO_REUSEPORT), with
asyncio's event loop and with uvloop, in one run: c=16 throughput, c=1 p50 added over direct,
CPU per call.

    python bench/gateway_processes.py [--rounds 3] [--seconds 4] [--no-uvloop] [--no-docs]

Targets, interleaved round by round (median of the rounds reported):

* direct: the upstream itself (a static nginx reply, an Anthropic-shaped message);
* smoltbot x1: `smoltbot serve gateway`, one process pinned to core 0;
* smoltbot x2: `smoltbot serve gateway` with gateway_processes=2, each process pinned to a core
  of its own (0 and 1, `taskset -p` once they are up);
* the same two with SMOLTBOT_GATEWAY_EVENT_LOOP=uvloop (unless --no-uvloop or uvloop is missing).

Every gateway ships every exchange (spooled and acked by a minimal ack-only Ingest sink, as in
bench/gateway_latency.py) and resolves identity from a real Registry. The load generator (wrk,
one thread), the upstream, the sink and the Registry are pinned to core 1. On a 2-core machine
the second gateway process therefore shares its core with all of them: the 2-vs-1 ratio is what
a second process gains *here*, not on a machine with a spare core; CPU per call says whether
the processes themselves cost more. Needs nginx and wrk (apt-get install nginx-light wrk).

Prints the table and rewrites the "Gateway processes" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_latency import (  # bench/ is no package: its sibling is imported by path
    BODY,
    CREDENTIAL,
    LOAD_CORE,
    SERVICE_CHILD,
    SINK_CHILD,
    STATIC_REPLY,
    UPSTREAM_SERVER,
    WRK_SCRIPT,
    _parse_wrk,
    cpu_seconds,
    free_port,
    pinned,
    run_wrk,
    start_nginx,
    wait_port,
)

ROOT = Path(__file__).resolve().parent.parent


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def start_gateway(name: str, processes: int, loop: str, env: dict[str, str],
                  work: Path) -> subprocess.Popen[str]:
    port = free_port()
    cores = "0" if processes == 1 else "0,1"
    gateway = pinned(cores, [sys.executable, "-m", "smoltbot.cli.main", "serve", "gateway",
                             "--host", "127.0.0.1", "--port", str(port)],
                     env={**env, "SMOLTBOT_HOME": str(work / f"home-{name.replace(' ', '-')}"),
                          "SMOLTBOT_GATEWAY_PROCESSES": str(processes), "SMOLTBOT_GATEWAY_EVENT_LOOP": loop})
    gateway.port = port  # type: ignore[attr-defined]
    return gateway


def pin_pool(gateway: subprocess.Popen[str], processes: int) -> list[int]:
    """Waits for the pool's processes and pins the i-th to core i."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = children_of(gateway.pid)
        if len(pids) >= processes:
            break
        time.sleep(0.1)
    else:
        raise SystemExit(f"the gateway pool did not start {processes} processes")
    for core, pid in enumerate(sorted(pids)):
        subprocess.run(["taskset", "-pc", str(core), str(pid)], check=True, capture_output=True)
    return pids


def health_by_pid(url: str, tries: int = 40) -> dict[int, dict[str, object]]:
    import httpx

    seen: dict[int, dict[str, object]] = {}
    for _ in range(tries):
        health = httpx.get(url + "/health", headers={"connection": "close"}, timeout=5).json()
        seen[health["process"]["pid"]] = health
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--no-uvloop", action="store_true", help="leave the uvloop targets out")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    missing = [tool for tool in ("wrk", "nginx", "taskset")
               if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        raise SystemExit(f"needs {' and '.join(missing)}: apt-get install -y "
                         + " ".join("nginx-light" if tool == "nginx" else tool for tool in missing))
    if (os.cpu_count() or 1) < 2 or sys.platform != "linux":
        raise SystemExit("needs Linux (SO_REUSEPORT) and two cores")
    with_uvloop = not args.no_uvloop and importlib.util.find_spec("uvloop") is not None
    if not args.no_uvloop and not with_uvloop:
        print("uvloop is not installed: its targets are left out (pip install uvloop)", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="smoltbot-bench-processes-"))
    children: list[subprocess.Popen[str]] = []
    try:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        upstream_port = free_port()
        children.append(start_nginx(work, "upstream", LOAD_CORE, UPSTREAM_SERVER.format(
            port=upstream_port, standin_port=free_port(), reply=STATIC_REPLY)))
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        service_env = {**env, "SMOLTBOT_HOME": str(work / "home"), "SMOLTBOT_HASH_SECRET": "bench",
                       "SMOLTBOT_SERVICE_TOKEN": "bench-service-credential-" + "0" * 40,
                       "SMOLTBOT_LOG_LEVEL": "WARNING"}
        sink_port, registry_port = free_port(), free_port()
        children.append(pinned(LOAD_CORE, [sys.executable, "-c", SINK_CHILD, f"127.0.0.1:{sink_port}"],
                               env=env))
        children.append(pinned(LOAD_CORE, [sys.executable, "-c", SERVICE_CHILD, "registry",
                                           f"127.0.0.1:{registry_port}"], env=service_env))
        wait_port(sink_port)
        wait_port(registry_port)
        gateway_env = {**service_env, "SMOLTBOT_UPSTREAM_URL": upstream_url,
                       "SMOLTBOT_REGISTRY_ADDRESS": f"127.0.0.1:{registry_port}",
                       "SMOLTBOT_OBSERVER_ADDRESS": f"127.0.0.1:{sink_port}"}
        variants = [("smoltbot x1", 1, "asyncio"), ("smoltbot x2", 2, "asyncio")]
        if with_uvloop:
            variants += [("smoltbot x1 uvloop", 1, "uvloop"), ("smoltbot x2 uvloop", 2, "uvloop")]
        gateways: dict[str, subprocess.Popen[str]] = {}
        for name, processes, loop in variants:
            gateways[name] = start_gateway(name, processes, loop, gateway_env, work)
            children.append(gateways[name])
        wait_port(upstream_port)
        for name, processes, _ in variants:
            wait_port(gateways[name].port)  # type: ignore[attr-defined]
            if processes > 1:
                pin_pool(gateways[name], processes)
        time.sleep(1.0)

        script = work / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(BODY), credential=CREDENTIAL))
        bases = {"direct": upstream_url} | {
            name: f"http://127.0.0.1:{gateway.port}/anthropic" for name, gateway in gateways.items()}  # type: ignore[attr-defined]
        for base in bases.values():  # warm up connections, caches, the registry lookup
            run_wrk(base + "/v1/messages", 16, 1, script)
        results: dict[str, dict[str, list[float]]] = {name: {} for name in bases}

        def record(name: str, prefix: str, values: dict[str, float]) -> None:
            for key, value in values.items():
                results[name].setdefault(f"{prefix}{key}", []).append(value)

        seconds = max(int(args.seconds), 1)
        for round_index in range(args.rounds):
            for name, base in bases.items():
                url = base + "/v1/messages"
                record(name, "c1_", run_wrk(url, 1, args.seconds, script))
                owner = gateways[name].pid if name in gateways else None
                before = cpu_seconds(owner) if owner else 0.0
                out = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c16", f"-d{seconds}s",
                                      "--latency", "-s", str(script), url],
                                     capture_output=True, text=True, check=True).stdout
                record(name, "c16_", _parse_wrk(out))
                if owner:
                    calls = results[name]["c16_rps"][-1] * seconds
                    record(name, "c16_", {"cpu_us": (cpu_seconds(owner) - before) * 1e6 / max(calls, 1)})
            print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

        time.sleep(2.0)
        spread = {}
        for name, gateway in gateways.items():
            answered = health_by_pid(f"http://127.0.0.1:{gateway.port}")  # type: ignore[attr-defined]
            spread[name] = (len(answered), sum(int(h["spool"]["depth"]) for h in answered.values()))  # type: ignore[index, call-overload]
        med = {name: {key: statistics.median(values) for key, values in metrics.items()}
               for name, metrics in results.items()}
        load = os.getloadavg()
        report = _report(med, results, spread, args, load)
        print(report)
        if not args.no_docs:
            _write_docs(report)
    finally:
        # The gateways first (they flush to the sink), then what they talk to.
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                if "smoltbot.cli.main" in child.args:
                    try:
                        child.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        child.kill()
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(work, ignore_errors=True)


def _report(med: dict[str, dict[str, float]], raw: dict[str, dict[str, list[float]]],
            spread: dict[str, tuple[int, int]], args: argparse.Namespace,
            load: tuple[float, float, float]) -> str:
    direct = med["direct"]
    lines = [
        "## Gateway processes",
        "",
        f"`python bench/gateway_processes.py --rounds {args.rounds} --seconds {args.seconds:g}` "
        f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {sys.version.split()[0]}). "
        "smoltbot x1 is one gateway process pinned to core 0; x2 is `SMOLTBOT_GATEWAY_PROCESSES=2`, its "
        "two processes on one port (SO_REUSEPORT) pinned to cores 0 and 1; wrk (1 thread), the upstream (a "
        "static nginx reply), an ack-only Ingest sink and a real Registry on core 1, so on this 2-core "
        "machine the second process shares its core with the load generator and the upstream. Targets "
        f"interleaved, median of {args.rounds} rounds. Load average when the run ended: "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min; other work ran on the machine).",
        "",
        "| target | c=1 p50 (ms) | c=1 p50 added | c=16 req/s | c=16 rounds | vs x1 (same loop) "
        "| CPU per call at c=16 (µs) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, values in med.items():
        same_loop = name.replace("x2", "x1")
        ratio = "-"
        if name != "direct" and same_loop in med:
            ratio = f"{values['c16_rps'] / med[same_loop]['c16_rps']:.2f}x"
        rounds = ", ".join(f"{value:,.0f}" for value in raw[name]["c16_rps"])
        cpu = f"{values['c16_cpu_us']:.0f}" if "c16_cpu_us" in values else "-"
        lines.append(f"| {name} | {values['c1_p50']:.3f} | {values['c1_p50'] - direct['c1_p50']:+.3f} | "
                     f"{values['c16_rps']:,.0f} | {rounds} | {ratio} | {cpu} |")
    lines.append("")
    notes = [f"{name}: {answered} process(es) answered /health, {depth} exchanges unacked after the run"
             for name, (answered, depth) in spread.items()]
    lines.append("After the rounds: " + "; ".join(notes) + ".")
    if "smoltbot x1 uvloop" in med:
        x1, uv = med["smoltbot x1"], med["smoltbot x1 uvloop"]
        lines.append("")
        lines.append(f"uvloop against asyncio, one process: c=16 {uv['c16_rps'] / x1['c16_rps']:.2f}x the "
                     f"throughput, CPU per call {uv['c16_cpu_us'] / x1['c16_cpu_us']:.2f}x, c=1 p50 "
                     f"{uv['c1_p50'] - x1['c1_p50']:+.3f} ms.")
    return "\n".join(lines) + "\n"


def _write_docs(section: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text()
    pattern = re.compile(r"^## Gateway processes\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:  # after the "Gateway shipping" section
        anchor = re.search(r"^## Gateway shipping.*?(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
        at = anchor.end() if anchor else len(text)
        text = text[:at] + section + "\n" + text[at:]
    path.write_text(text)


if __name__ == "__main__":
    main()
