"""Capture off the event loop: /health latency while the gateway relays and captures a large stream,
and how long the record of a stream of very many tiny deltas takes to build.

    python bench/capture_load.py [--deltas 270000] [--million 1000000]

The stand-in runs in its own process (so its work does not share the gateway's loop); the gateway
runs here, with no registry or observer (records stay in its spool, where they are read back and
checked). A client streams `tiny_deltas` through the gateway while another polls /health every
10 ms; the figures are /health's latency percentiles idle and during the stream, and the time from
the stream's last byte to its record in the spool. Prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smoltbot.core.settings import load_settings  # noqa: E402
from smoltbot.gateway import start_gateway  # noqa: E402
from tests.integration.gateway.helpers import spooled_exchanges, unused_address  # noqa: E402

BODY = {"model": "claude-opus-4-7", "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": "Many tiny deltas, please."}]}


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    if not ordered:
        return "no samples"
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"n={len(ordered)} p50={p(0.5):.1f} ms p99={p(0.99):.1f} ms max={ordered[-1] * 1000:.1f} ms"


async def health_latencies(base_url: str, stop: asyncio.Event) -> list[float]:
    samples: list[float] = []
    async with httpx.AsyncClient(timeout=60) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            (await http.get(base_url + "/health")).raise_for_status()
            samples.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)
    return samples


async def one_stream(gateway, home: Path, scratch: Path, deltas: int) -> dict[str, float]:
    stop = asyncio.Event()
    poller = asyncio.create_task(health_latencies(gateway.base_url, stop))
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as http, http.stream(
        "POST",
        gateway.base_url + "/anthropic/v1/messages",
        json=BODY,
        headers={
            "x-api-key": "sk-bench-capture-0123456789",
            "accept-encoding": "identity",
            "x-standin-scenario": "tiny_deltas",
            "x-standin-deltas": str(deltas),
        },
    ) as r:
        size = sum([len(chunk) async for chunk in r.aiter_raw()])
    relayed = time.perf_counter()
    spool = gateway.gateway.spool
    before = spool.depth
    while spool.building:
        await asyncio.sleep(0.005)
    built = time.perf_counter()
    await asyncio.sleep(0.2)
    stop.set()
    during = await poller
    exchange = spooled_exchanges(home, scratch)[-1]
    text = json.loads(exchange.response.body)["content"][0]["text"]
    assert len(text) == deltas, (len(text), deltas)
    print(
        f"  {deltas} deltas, {size / 1e6:.1f} MB relayed in {relayed - t0:.2f} s; record built "
        f"{built - relayed:.2f} s after the last byte (spool depth {before}); text of {len(text)} chars "
        "checked"
    )
    print(f"  /health during: {percentiles(during)}")
    return {"relay_s": relayed - t0, "record_after_s": built - relayed}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deltas", type=int, default=270_000, help="deltas of the ~30 MB stream")
    parser.add_argument("--million", type=int, default=1_000_000)
    args = parser.parse_args()
    standin = subprocess.Popen([sys.executable, "-m", "tests.support.anthropic_standin"], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert standin.stdout is not None
        url = standin.stdout.readline().strip().removeprefix("LISTENING ")
        with tempfile.TemporaryDirectory() as scratch:
            home = Path(scratch) / "home"
            settings = load_settings(home=home, upstream_url=url, hash_secret="bench")
            gateway = await start_gateway(settings, registry_address=unused_address(),
                                          observer_address=unused_address())
            try:
                stop = asyncio.Event()
                idle_task = asyncio.create_task(health_latencies(gateway.base_url, stop))
                await asyncio.sleep(2)
                stop.set()
                print(f"/health idle: {percentiles(await idle_task)}")
                print("~30 MB stream:")
                await one_stream(gateway, home, Path(scratch), args.deltas)
                print("a million tiny deltas:")
                await one_stream(gateway, home, Path(scratch), args.million)
            finally:
                await gateway.stop()
    finally:
        standin.terminate()
        standin.wait()


if __name__ == "__main__":
    asyncio.run(main())
