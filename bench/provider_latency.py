"""The gateway's added latency per provider: OpenAI- and Gemini-shaped calls beside Anthropic-shaped
ones, in the same run, against calling each stand-in directly.

    python bench/provider_latency.py [--calls 300] [--rounds 3]

The three stand-ins (tests/support) and the gateway run as their own processes (the gateway pinned
to core 0, the stand-ins and this client to core 1 when `taskset` exists); the gateway has no
Registry or Observer (its records go to its spool: the hash-only path, the same for every
provider). For each provider and mode (plain JSON reply, streamed reply read to its end) the client
makes sequential calls, direct and through the gateway, interleaved in rounds; the figure is the
median per-call time, and "added" is the gateway's median minus the direct one. The ratios say how
the OpenAI and Gemini paths compare with the Anthropic path (near 1: no provider costs more).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_CORE, LOAD_CORE = "0", "1"
KEYS = {"anthropic": "sk-ant-bench-0123456789abcdef", "openai": "sk-proj-bench-0123456789abcdef",
        "gemini": "AIza-bench-0123456789abcdef"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {timeout}s")


def spawn(core: str, argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
    prefix = ["taskset", "-c", core] if shutil.which("taskset") else []
    return subprocess.Popen([*prefix, *argv], text=True, **kwargs)  # type: ignore[call-overload]


def calls(provider: str, base: str, stream: bool) -> tuple[str, dict[str, str], dict[str, object]]:
    """(url, headers, json body) of one call in the provider's own shape."""
    key = KEYS[provider]
    if provider == "anthropic":
        body: dict[str, object] = {"model": "claude-opus-4-7", "max_tokens": 64, "stream": stream,
                                   "messages": [{"role": "user", "content": "Say hello in five words."}]}
        return f"{base}/v1/messages", {"x-api-key": key, "anthropic-version": "2023-06-01"}, body
    if provider == "openai":
        body = {"model": "gpt-4.1", "stream": stream,
                "messages": [{"role": "user", "content": "Say hello in five words."}]}
        return f"{base}/v1/chat/completions", {"authorization": f"Bearer {key}"}, body
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hello in five words."}]}]}
    return f"{base}/v1beta/models/gemini-2.5-flash:{action}", {"x-goog-api-key": key}, body


async def timed(http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, object],
                count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        async with http.stream("POST", url, headers=headers, json=body) as response:
            async for _chunk in response.aiter_raw():
                pass
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}")
        times.append(time.perf_counter() - start)
    return times


async def measure(standins: dict[str, str], gateway: str, count: int, rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    async with httpx.AsyncClient(timeout=60) as http:
        for provider in standins:  # warm up every path (connections, the gateway's first calls)
            for stream in (False, True):
                for base in (standins[provider], f"{gateway}/{provider}"):
                    await timed(http, *calls(provider, base, stream), 20)
        for _ in range(rounds):
            for provider, direct in standins.items():
                for stream in (False, True):
                    mode = "stream" if stream else "json"
                    for target, base in (("direct", direct), ("gateway", f"{gateway}/{provider}")):
                        key = f"{provider}/{mode}/{target}"
                        samples.setdefault(key, []).extend(
                            await timed(http, *calls(provider, base, stream), count))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300,
                        help="calls per provider, mode and target per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smoltbot-bench-providers-"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    children: list[subprocess.Popen[str]] = []
    try:
        standins: dict[str, str] = {}
        for provider in KEYS:
            child = spawn(LOAD_CORE, [sys.executable, "-m", f"tests.support.{provider}_standin"],
                          stdout=subprocess.PIPE, env=env, cwd=ROOT)
            children.append(child)
            assert child.stdout is not None
            url = child.stdout.readline().strip().removeprefix("LISTENING ").rstrip("/")
            if not url.startswith("http"):
                raise SystemExit(f"the {provider} stand-in did not start")
            standins[provider] = url
        port = free_port()
        gateway_env = {**env, "SMOLTBOT_HOME": str(work / "home"), "SMOLTBOT_HASH_SECRET": "bench",
                       "SMOLTBOT_LOG_LEVEL": "ERROR", "SMOLTBOT_UPSTREAM_URL": standins["anthropic"],
                       "SMOLTBOT_OPENAI_UPSTREAM_URL": standins["openai"],
                       "SMOLTBOT_GEMINI_UPSTREAM_URL": standins["gemini"],
                       "SMOLTBOT_REGISTRY_ADDRESS": f"127.0.0.1:{free_port()}",
                       "SMOLTBOT_OBSERVER_ADDRESS": f"127.0.0.1:{free_port()}"}
        children.append(spawn(GATEWAY_CORE, [sys.executable, "-m", "smoltbot.cli.main", "serve", "gateway",
                                             "--host", "127.0.0.1", "--port", str(port)], env=gateway_env))
        wait_port(port)
        if shutil.which("taskset"):
            subprocess.run(["taskset", "-cp", LOAD_CORE, str(os.getpid())], check=False, capture_output=True)
        samples = asyncio.run(measure(standins, f"http://127.0.0.1:{port}", args.calls, args.rounds))
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(work, ignore_errors=True)

    print(f"Gateway added latency per provider ({args.rounds} rounds x {args.calls} sequential calls per "
          f"provider, mode and target; median per call)")
    added: dict[str, float] = {}
    for key in sorted({k.rsplit("/", 1)[0] for k in samples}):
        direct = statistics.median(samples[f"{key}/direct"]) * 1000
        through = statistics.median(samples[f"{key}/gateway"]) * 1000
        added[key] = through - direct
        print(f"  {key:<18} direct {direct:6.2f} ms   through the gateway {through:6.2f} ms   "
              f"added {through - direct:5.2f} ms")
    for mode in ("json", "stream"):
        base = added[f"anthropic/{mode}"]
        ratios = "   ".join(f"{p}/anthropic {added[f'{p}/{mode}'] / base:4.2f}" for p in ("openai", "gemini"))
        print(f"  added-latency ratio, {mode:<6}: {ratios}")
    print("  (the like-for-like figure is json: the Anthropic stand-in's stream takes ~10 ms direct,\n"
          "   many small writes, and the gateway's work overlaps its gaps, which makes Anthropic's\n"
          "   added stream time smaller)")


if __name__ == "__main__":
    main()
