"""The API's Prometheus metrics, served at GET /metrics on the API's own port: requests by method,
route (the route's template, so ids never become labels; "unmatched" for any other path) and
status, their duration, and the process' own figures. A registry of its own per app."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["METRICS_CONTENT_TYPE", "ApiMetrics", "MeasureRequests"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.requests = Counter("smoltbot_api_requests", "Requests answered, by method, route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.duration = Histogram("smoltbot_api_request_duration_seconds", "Time to answer a request "
                                  "(its last byte), by route.", ["route"], buckets=_BUCKETS,
                                  registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeasureRequests:
    """ASGI middleware counting every HTTP request into `ApiMetrics` once it is answered."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes answers 500 further out

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)
