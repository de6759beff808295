"""The observer's alert worker: the feed and the sender, each in its own loop, and their
Prometheus metrics. The feed runs every `alert_poll_interval` seconds or when the processor has
written new results; the sender runs when the feed queued something, when a retry falls due,
or on the same interval. Both keep their state in the database only, so a restart resumes
where the last observer stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from smoltbot.core.settings import Settings
from smoltbot.core.storage import utcnow
from smoltbot.observer.alerts.feed import AlertFeed
from smoltbot.observer.alerts.sender import WebhookSender
from smoltbot.observer.alerts.store import AlertStore

__all__ = ["AlertWorker"]

logger = logging.getLogger(__name__)

_STATES = ("pending", "sending", "delivered", "failed")


class AlertWorker:
    def __init__(self, store: AlertStore, settings: Settings, owner: str) -> None:
        self.store = store
        self.feed = AlertFeed(store, settings)
        self.sender = WebhookSender(store, settings, owner)
        self.interval = settings.alert_poll_interval
        #: Deliveries that ended are kept as long as traces at most (SMOLTBOT_RETENTION_MAX_DAYS).
        self.history_days = settings.retention_max_days
        self._pruned_at = float("-inf")
        self._feed_wanted = asyncio.Event()
        self._send_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Outbox rows by state at the last scrape (None: the database could not say).
        self.outbox_states: dict[str, int] | None = None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._feed_loop(), name="alert-feed"),
            asyncio.create_task(self._send_loop(), name="alert-sender"),
        ]

    def wake(self) -> None:
        """New results were written: look for events now."""
        self._feed_wanted.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        held = list(self.sender.held)
        try:
            await self.sender.store.release(self.sender.owner, held)
        except Exception as error:  # noqa: BLE001 - their leases expire and another observer sends them
            logger.warning("could not give back %d webhook deliveries on stop: %s", len(held), error)
        await self.sender.close()

    async def _feed_loop(self) -> None:
        while True:
            try:
                if await self.feed.run_once():
                    self._send_wanted.set()
            except Exception:
                logger.exception("the alert feed failed; it runs again in %gs", self.interval)
            await self.refresh()
            await self._prune_hourly()
            # Under load the processor writes results all the time: a pass re-reads the settle
            # window, so passes are at least a quarter of the interval apart.
            await asyncio.sleep(self.interval / 4)
            await self._wait(self._feed_wanted)

    async def _send_loop(self) -> None:
        while True:
            try:
                while await self.sender.run_once():
                    pass
            except Exception:
                logger.exception("the webhook sender failed; it runs again in %gs", self.interval)
            await self._wait(self._send_wanted)

    async def _wait(self, event: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.interval)
        event.clear()

    async def _prune_hourly(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._pruned_at < 3600:
            return
        self._pruned_at = loop.time()
        try:
            await self.store.prune(utcnow() - timedelta(days=self.history_days))
        except Exception:
            logger.exception("pruning old webhook deliveries failed")

    async def refresh(self) -> None:
        """Reads the outbox's counts by state for the next scrape (after each feed pass)."""
        try:
            self.outbox_states = await self.store.delivery_counts()
        except Exception:  # noqa: BLE001 - a scrape during a database outage still answers
            self.outbox_states = None

    def collector(self) -> Collector:
        return _WebhookMetrics(self)


class _WebhookMetrics(Collector):
    def __init__(self, worker: AlertWorker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._worker.sender.stats
        yield CounterMetricFamily(
            "smoltbot_webhook_attempts", "Webhook delivery attempts this observer made.", value=stats.attempts
        )
        yield CounterMetricFamily(
            "smoltbot_webhook_delivered", "Webhook deliveries a receiver took (2xx).", value=stats.delivered
        )
        failed = CounterMetricFamily(
            "smoltbot_webhook_failed_attempts", "Webhook attempts that failed, by kind.", labels=["kind"]
        )
        for kind in ("http_error", "timeout", "connect_error", "refused_destination", "internal"):
            failed.add_metric([kind], stats.failures.get(kind, 0))
        yield failed
        yield CounterMetricFamily(
            "smoltbot_webhook_given_up",
            "Webhook deliveries failed for good (last attempt made or destination refused).",
            value=stats.given_up,
        )
        states = self._worker.outbox_states
        if states is not None:
            outbox = GaugeMetricFamily(
                "smoltbot_webhook_outbox",
                "Webhook deliveries in the outbox by state (all observers).",
                labels=["state"],
            )
            for state in _STATES:
                outbox.add_metric([state], states.get(state, 0))
            yield outbox
