"""The registry's Prometheus metrics (served by `core.metrics_http` on `registry_metrics_port`):
how many agents, sessions and alignment cards it holds (counted per scrape), activity writes
waiting to be flushed, and the process' own figures. A registry of its own per server."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from smoltbot.core.storage import Database
from smoltbot.registry.agents import Agents
from smoltbot.registry.store import agents, alignment_cards, sessions

__all__ = ["RegistryMetrics"]

_COUNTED = (("agents", agents), ("sessions", sessions), ("cards", alignment_cards))


class _Counts(Collector):
    def __init__(self, metrics: RegistryMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("smoltbot_registry_pending_touches", "Agent and session activity "
                                "recorded but not written yet.", value=self._metrics.agents.touches.pending)
        counts = self._metrics.counts
        if counts is None:  # unknown during a database outage: absent, not zero
            return
        for name, _ in _COUNTED:
            yield GaugeMetricFamily(f"smoltbot_registry_{name}", f"Rows of {name} in the registry.",
                                    value=counts[name])


class RegistryMetrics:
    def __init__(self, db: Database, agents: Agents) -> None:
        self.db = db
        self.agents = agents
        self.counts: dict[str, int] | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.registry.register(_Counts(self))

    async def render(self) -> bytes:
        try:
            async with self.db.read() as conn:
                self.counts = {name: int((await conn.execute(sa.select(sa.func.count()).select_from(table)))
                                         .scalar_one()) for name, table in _COUNTED}
        except Exception:  # noqa: BLE001 - a scrape during a database outage still answers
            self.counts = None
        return generate_latest(self.registry)
