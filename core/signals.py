"""The stop signals every long-running smoltbot process answers the same way."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["STOP_SIGNALS", "stop_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set on SIGINT/SIGTERM while inside the block; the default handlers come back
    on leaving it, so a second Ctrl-C during a slow shutdown still interrupts."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
