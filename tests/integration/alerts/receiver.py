"""A webhook receiver for tests: a real HTTP server on port 0 that answers as a script says
(fail with 500, hang past the sender's timeout, then take deliveries), checks each signature,
and processes each idempotency key once, as a receiver that de-duplicates does."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from smoltbot.observer.alerts.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Arrival:
    key: str
    event: str
    body: bytes
    signature: str
    answered: int


@dataclass
class Receiver:
    #: What to answer to the next requests, in order: an HTTP status, or "hang" (never answers in
    #: time). After the script: 200.
    script: list[int | str] = field(default_factory=list)
    hang_seconds: float = 3.0
    secrets: dict[str, str] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    #: Bodies processed, by idempotency key (each key at most once).
    processed: dict[str, dict[str, Any]] = field(default_factory=dict)
    processed_twice: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        answer = self.script.pop(0) if self.script else 200
        self.arrivals.append(
            Arrival(
                key,
                request.headers.get("smoltbot-event", ""),
                body,
                signature,
                answer if isinstance(answer, int) else 0,
            )
        )
        if answer == "hang":
            await asyncio.sleep(self.hang_seconds)
            return web.Response(status=200)
        assert isinstance(answer, int)
        if answer >= 300:
            return web.Response(status=answer)
        payload = json.loads(body)
        secret = self.secrets.get(payload.get("subscription_id", ""), next(iter(self.secrets.values()), ""))
        if not verify(secret, signature, body):
            self.bad_signatures += 1
            return web.Response(status=401)
        if key in self.processed:
            self.processed_twice[key] += 1  # a duplicate: acknowledged, not processed again
        else:
            self.processed[key] = payload
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{token}", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook/t0ken-in-path"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
