"""The gateway's Prometheus metrics, in a registry of its own (one per app, so several gateways
in one process, as in tests, never share or collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["METRICS_CONTENT_TYPE", "GatewayMetrics"]

#: The content type of `GatewayMetrics.render()` (Prometheus text exposition).
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0,
)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "smoltbot_gateway_requests", "Proxied calls by HTTP status returned to the client "
            "(0: the client went away first).", ["status"], registry=self.registry)
        self.latency = Histogram(
            "smoltbot_gateway_request_duration_seconds",
            "Time from receiving a call to sending the last byte of its response.",
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.active_streams = Gauge(
            "smoltbot_gateway_active_streams", "Streamed responses being relayed now.",
            registry=self.registry)
        self.exchanges_captured = Counter(
            "smoltbot_gateway_exchanges_captured", "Exchanges captured and spooled.", registry=self.registry)
        self.exchanges_shipped = Counter(
            "smoltbot_gateway_exchanges_shipped", "Exchanges sent to the observer (re-sends included).",
            registry=self.registry)
        self._acked = Counter(
            "smoltbot_gateway_exchanges_acked", "Exchanges acknowledged by the observer, by ack status.",
            ["status"], registry=self.registry)
        self.spool_dropped = Counter(
            "smoltbot_gateway_spool_dropped", "Unshipped exchanges dropped because the spool was full.",
            registry=self.registry)
        self.capture_failures = Counter(
            "smoltbot_gateway_capture_failures", "Calls recorded by a minimal record because the full one "
            "could not be built or shipped (the minimal record says what failed).", registry=self.registry)
        self.exchanges_set_aside = Counter(
            "smoltbot_gateway_exchanges_set_aside", "Exchanges the observer could not take after bounded "
            "retries, set aside in the dead-letter directory.", registry=self.registry)
        self.spool_write_failures = Counter(
            "smoltbot_gateway_spool_write_failures",
            "Exchanges that could not be written to the spool's disk "
            "(kept in memory and shipped from there).",
            registry=self.registry)
        self.spool_depth = Gauge(
            "smoltbot_gateway_spool_depth", "Exchanges in the spool waiting for an observer ack.",
            registry=self.registry)
        self.spool_bytes = Gauge(
            "smoltbot_gateway_spool_bytes", "Bytes the spool uses on disk.", registry=self.registry)
        self._status_children: dict[int, Counter] = {}
        self._ack_children: dict[str, Counter] = {}

    def count_request(self, status: int) -> None:
        child = self._status_children.get(status)
        if child is None:
            child = self._status_children[status] = self._requests.labels(str(status))
        child.inc()

    def count_ack(self, status: str) -> None:
        child = self._ack_children.get(status)
        if child is None:
            label = status.removeprefix("INGEST_STATUS_").lower()
            child = self._ack_children[status] = self._acked.labels(label)
        child.inc()

    def track_spool(self, depth: Callable[[], float], size: Callable[[], float]) -> None:
        self.spool_depth.set_function(depth)
        self.spool_bytes.set_function(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
