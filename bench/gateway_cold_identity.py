"""What a call costs when the gateway has not seen its credential yet (the cold identity path:
ResolveAgent + ResolveSession in the real Registry, asked after the upstream's status is known),
against a warm call and against a call the upstream refuses with 401 (no lookup at all).

    python bench/gateway_cold_identity.py [--calls 200]

Gateway, Registry (SQLite) and the Anthropic stand-in run in this process on loopback; calls
are sequential, so the figures are latencies, not throughput. Prints medians and p95 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smoltbot.core.settings import Settings
from smoltbot.gateway import start_gateway
from smoltbot.registry.server import build_server
from tests.support.anthropic_standin import AnthropicStandin

BODY = {"model": "claude-opus-4-7", "messages": [{"role": "user", "content": "hello"}]}


def figures(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"{name:<34} median {statistics.median(ordered) * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms"


async def main(calls: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="smoltbot-bench-"))
    accepted: set[str] = set()
    standin = AnthropicStandin(record=False, accepted_keys=accepted)
    await standin.start()
    settings = Settings(home=home, upstream_url=standin.base_url, hash_secret="bench-secret")
    registry = await build_server(settings, address="127.0.0.1:0")
    await registry.start()
    gateway = await start_gateway(settings, registry_address=f"127.0.0.1:{registry.port}",
                                  observer_address="127.0.0.1:1")
    url = gateway.base_url + "/anthropic/v1/messages/count_tokens"
    cold, warm, refused, identified = [], [], [], 0
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(calls):
                key = f"sk-ant-bench-{secrets.token_hex(12)}"
                accepted.add(key)
                for bucket in (cold, warm):
                    started = time.perf_counter()
                    reply = await client.post(url, json=BODY, headers={"x-api-key": key})
                    bucket.append(time.perf_counter() - started)
                    assert reply.status_code == 200, reply.text
                identified += "x-smoltbot-agent" in reply.headers
                started = time.perf_counter()
                reply = await client.post(url, json=BODY, headers={"x-api-key": key + "-revoked"})
                refused.append(time.perf_counter() - started)
                assert reply.status_code == 401
    finally:
        await gateway.stop()
        await registry.stop()
        await standin.stop()
    print(f"{calls} credentials, each: one cold call, one warm call, one call the upstream refuses (401)")
    print(figures("cold (agent + session created)", cold))
    print(figures("warm (from the cache)", warm))
    print(figures("refused by the upstream (401)", refused))
    print(f"warm calls naming their agent: {identified}/{calls}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    asyncio.run(main(parser.parse_args().calls))
