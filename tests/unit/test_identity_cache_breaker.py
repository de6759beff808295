"""The gateway's identity cache trips the shared core.breaker when the Registry cannot be reached,
and probes it again after a cooldown that doubles on each failed probe, on a clock moved by hand.

The Registry here is a real address nobody listens on (connection refused, UNAVAILABLE): no
stand-in for our own service, and no sleeping out cooldowns."""

from __future__ import annotations

import socket

from smoltbot.gateway.identity_cache import IdentityCache

HASH = "ab" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_registry_opens_the_breaker_and_each_failed_probe_waits_longer() -> None:
    clock = FakeClock()
    cache = IdentityCache(f"127.0.0.1:{_closed_port()}", session_idle_minutes=30, cold_deadline=10.0,
                          lookup_timeout=5.0, breaker_cooldown=1.0, breaker_max_cooldown=3.0, clock=clock)
    cache.start()
    try:
        assert await cache.resolve(HASH, "") == ("", "")
        breaker = cache._breaker
        assert breaker.state == "open" and breaker.reset_after == 1.0
        assert not await cache.reachable(), "open: unreachable without asking"
        # Open: answered from memory at once, no lookup started.
        assert await cache.resolve(HASH, "") == ("", "") and not cache._resolving
        clock.now += 1.0
        assert breaker.state == "half_open"
        assert await cache.resolve(HASH, "") == ("", ""), "the probe fails too"
        assert breaker.state == "open" and breaker.reset_after == 2.0
        clock.now += 2.0
        await cache.resolve(HASH, "")
        clock.now += 3.0
        await cache.resolve(HASH, "")
        assert breaker.reset_after == 3.0, "the cooldown stops at breaker_max_cooldown"
    finally:
        await cache.close()
