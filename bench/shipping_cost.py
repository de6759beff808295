"""What shipping one exchange to the Observer costs the gateway, batched and one per message.

    python bench/shipping_cost.py [--exchanges 20000] [--burst 16] [--rounds 3] [--rate 0] [--linger S]
                                  [--busy-linger S]

The gateway's real spool and shipper (`gateway/spool.py`, `gateway/shipper.py`) in this process
ship `--exchanges` records of a usual size (about 3 KB), submitted `--burst` at a time (what
c=16 load hands them), as fast as the event loop turns or paced at `--rate` exchanges/s, to an
ack-only Ingest sink in its own process on the other core. Two sinks: one that takes batches,
one that answers as observers before batches did (the shipper then falls back to one exchange
per message). "batched, no linger" is the batched shipper with `linger=0` (a request whenever the
stream is idle, as before issue 16's round 5), so `--burst 1 --rate 1000` (one call at a time)
shows what the linger saves; "batched, 5 ms linger only" is the batched shipper without the
longer linger once busy (`busy_linger` equal to `linger`, as before round 7), so against
"batched" it shows what the busy linger saves. Rounds alternate between the modes; the figure
is this process's CPU time (all its threads, so gRPC's too) per exchange, which other work on
the machine moves far less than throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smoltbot.gateway.shipper import Shipper, encode_ingest_request
from smoltbot.gateway.spool import Spool
from smoltbot.v1 import exchange_pb2

SINK = """
import asyncio, sys
import grpc
from smoltbot.v1 import observer_service_pb2 as pb, observer_service_pb2_grpc as pbg
ACCEPTED = pb.INGEST_STATUS_ACCEPTED
SINGLE = sys.argv[2] == "single"
class Sink(pbg.ObserverServiceServicer):
    async def Ingest(self, requests, context):
        async for request in requests:
            if request.exchanges and SINGLE:
                yield pb.IngestResponse(status=pb.INGEST_STATUS_REJECTED, message="no exchange")
            elif request.exchanges:
                yield pb.IngestResponse(acks=[pb.IngestAck(exchange_id=e.exchange_id, status=ACCEPTED)
                                              for e in request.exchanges])
            else:
                yield pb.IngestResponse(exchange_id=request.exchange.exchange_id, status=ACCEPTED)
async def main():
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 100 << 20)])
    pbg.add_ObserverServiceServicer_to_server(Sink(), server)
    server.add_insecure_port(sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def payload() -> tuple[str, bytes]:
    exchange_id = secrets.token_hex(16)
    exchange = exchange_pb2.Exchange(exchange_id=exchange_id, agent_hash=secrets.token_hex(32),
                                     gateway_id="bench:1", outcome_detail="x" * 3000)
    return exchange_id, encode_ingest_request(exchange)


async def ship(address: str, count: int, burst: int, rate: float, directory: Path,
               lingers: dict[str, float]) -> dict[str, float]:
    spool = Spool(directory, 1 << 34)
    spool.open()
    shipper = Shipper(spool, address, **lingers)  # type: ignore[arg-type]
    shipper.start()
    records = [payload() for _ in range(count)]
    await asyncio.sleep(0.3)  # the channel connects
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, count, burst):
        for exchange_id, data in records[start:start + burst]:
            shipper.submit_payload(exchange_id, data)
        # Paced: `burst` exchanges every burst/rate seconds; else as fast as the loop turns.
        await asyncio.sleep(burst / rate if rate else 0)
    while spool.depth:
        await asyncio.sleep(0.005)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    batches, requests = shipper.batches, shipper.requests
    await shipper.stop()
    return {"cpu_us": cpu * 1e6 / count, "per_s": count / wall, "batches": batches, "requests": requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exchanges", type=int, default=20000)
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.0, help="exchanges/s to submit (0: unpaced)")
    parser.add_argument("--linger", type=float, default=None,
                        help="the batched shipper's linger in seconds (default: the shipper's own)")
    parser.add_argument("--busy-linger", type=float, default=None,
                        help="the batched shipper's busy linger in seconds (default: the shipper's own)")
    args = parser.parse_args()
    cores = os.sched_getaffinity(0)
    if len(cores) >= 2:
        os.sched_setaffinity(0, {min(cores)})
    sink_core = str(max(cores))
    children: list[subprocess.Popen[str]] = []
    chosen = {key: value for key, value in (("linger", args.linger), ("busy_linger", args.busy_linger))
              if value is not None}
    base_linger = args.linger
    if base_linger is None:
        base_linger = inspect.signature(Shipper).parameters["linger"].default
    modes: dict[str, tuple[str, dict[str, float]]] = {
        "batched": ("batch", chosen),
        "batched, 5 ms linger only": ("batch", {"linger": base_linger, "busy_linger": base_linger}),
        "batched, no linger": ("batch", {"linger": 0.0, "busy_linger": 0.0}),
        "one per message": ("single", {})}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
    try:
        addresses = {}
        for name, (mode, _linger) in modes.items():
            port = free_port()
            children.append(subprocess.Popen(["taskset", "-c", sink_core, sys.executable, "-c", SINK,
                                              f"127.0.0.1:{port}", mode], text=True))
            addresses[name] = f"127.0.0.1:{port}"
        time.sleep(1.5)
        with tempfile.TemporaryDirectory(prefix="smoltbot-shipping-") as work:
            for round_index in range(args.rounds):
                for name, address in addresses.items():
                    directory = Path(work) / f"{name.replace(' ', '-')}-{round_index}"
                    results[name].append(asyncio.run(ship(address, args.exchanges, args.burst, args.rate,
                                                          directory, modes[name][1])))
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=10)
    linger = "" if args.linger is None else f" --linger {args.linger:g}"
    if args.busy_linger is not None:
        linger += f" --busy-linger {args.busy_linger:g}"
    print(f"`python bench/shipping_cost.py --exchanges {args.exchanges} --burst {args.burst} "
          f"--rounds {args.rounds} --rate {args.rate:g}{linger}` ({time.strftime('%Y-%m-%d')}; "
          f"load average {os.getloadavg()[0]:.1f}); "
          "median of the rounds:\n")
    print("| shipping | gateway CPU per exchange (µs) | exchanges/s | requests sent | of them batches |")
    print("|---|---:|---:|---:|---:|")
    for name, rounds in results.items():
        print(f"| {name} | {statistics.median(r['cpu_us'] for r in rounds):.0f} "
              f"| {statistics.median(r['per_s'] for r in rounds):,.0f} "
              f"| {statistics.median(r['requests'] for r in rounds):,.0f} "
              f"| {statistics.median(r['batches'] for r in rounds):,.0f} |")
    batched = statistics.median(r["cpu_us"] for r in results["batched"])
    single = statistics.median(r["cpu_us"] for r in results["one per message"])
    unlingered = statistics.median(r["cpu_us"] for r in results["batched, no linger"])
    unbusy = statistics.median(r["cpu_us"] for r in results["batched, 5 ms linger only"])
    print(f"\nBatched shipping costs {batched / single:.2f}x the CPU of one exchange per message, "
          f"{batched / unlingered:.2f}x that of batched shipping without the linger, and "
          f"{batched / unbusy:.2f}x that without the busy linger.")


if __name__ == "__main__":
    main()
