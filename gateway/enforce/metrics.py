"""The enforcement counters, in the gateway's own Prometheus registry (`GatewayMetrics.registry`)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from smoltbot.core.aap.enforcement import ACTIONS

__all__ = ["EnforcementMetrics"]


class EnforcementMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        calls = Counter(
            "smoltbot_gateway_enforcement_tool_calls",
            "Tool calls judged against the agent's card, by what the gateway did "
            "(allowed, blocked, escalated, nudged, not_enforced).", ["action"], registry=registry)
        self._by_action = {action: calls.labels(action) for action in ACTIONS}
        self.card_unavailable = Counter(
            "smoltbot_gateway_enforcement_card_unavailable",
            "Calls whose card could not be read (the card's fail policy decided).", registry=registry)
        self.nudges_delivered = Counter(
            "smoltbot_gateway_enforcement_nudges_delivered",
            "Nudge notes added to a session's next request.", registry=registry)
        self.watch_live = Gauge(
            "smoltbot_gateway_enforcement_card_watch_live",
            "1 while the Registry's card watch stream is up (cached cards are current).", registry=registry)

    def count(self, action: str) -> None:
        self._by_action[action].inc()

    def track_watch(self, live: Callable[[], float]) -> None:
        self.watch_live.set_function(live)
