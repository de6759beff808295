"""Prometheus /metrics over plain HTTP beside a gRPC service (registry, observer).

The gateway and the API serve /metrics on their own HTTP port; the gRPC services have none, so
each gets a small aiohttp site of its own (`Settings.registry_metrics_port` /
`observer_metrics_port`, 0: off) on `Settings.metrics_host`, loopback unless the operator says
otherwise. It answers GET /metrics only, rendered fresh on each scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["METRICS_CONTENT_TYPE", "MetricsEndpoint"]

logger = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class MetricsEndpoint:
    """GET /metrics on host:port (port 0: an ephemeral one; `port` is the bound one after start)."""

    def __init__(self, render: Callable[[], Awaitable[bytes]], host: str, port: int, *, what: str) -> None:
        self._render = render
        self.host = host
        self.port = port
        self.what = what
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = await self._render()
        # aiohttp refuses a content_type with parameters; the header carries Prometheus' version.
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise OSError(f"could not serve the {self.what}'s /metrics on {self.host}:{self.port}: "
                          f"{error.strerror or error}; pick another port or 0 to turn it off") from error
        server = site._server  # aiohttp exposes the bound sockets only here
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._runner = runner
        logger.info("%s serves Prometheus metrics at %s", self.what, self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
