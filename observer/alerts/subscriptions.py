"""Subscriptions as the AlertService serves them: creating, listing and removing them (the
agent's owner only, proved by its credential hash as for every write), and the delivery
history. Proto-free."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from smoltbot.core.errors import InvalidArgument, NotFound, Unauthenticated
from smoltbot.core.ids import validate_agent_hash
from smoltbot.core.pagination import decode_page_token, next_page, page_size
from smoltbot.core.settings import Settings
from smoltbot.core.storage import utcnow
from smoltbot.observer.alerts.destinations import DestinationRefused, check_address, validate_url
from smoltbot.observer.alerts.events import EVENTS, FAILURE_RATE, FORMATS, SEVERITIES
from smoltbot.observer.alerts.signing import new_secret
from smoltbot.observer.alerts.store import AlertStore, DeliveryRow, SubscriptionRow
from smoltbot.observer.registry_client import RegistryClient
from smoltbot.observer.validation import validate_agent_id

__all__ = ["MAX_SUBSCRIPTIONS_PER_AGENT", "NewSubscription", "Subscriptions"]

#: Each delivery is a request the observer makes: an owner gets a few destinations, not a fan-out.
MAX_SUBSCRIPTIONS_PER_AGENT = 20
DEFAULT_FAILURE_RATE = 0.5


@dataclass(frozen=True)
class NewSubscription:
    subscription: SubscriptionRow
    #: Shown this once.
    secret: str


def _subscription_id(value: str) -> str:
    if (
        not value
        or len(value) > 48
        or not value.startswith("as-")
        or not all(ch in "0123456789abcdef" for ch in value[3:])
    ):
        raise InvalidArgument("subscription_id", "must be a subscription id (as- and hex digits)")
    return value


class Subscriptions:
    def __init__(self, store: AlertStore, registry: RegistryClient, settings: Settings) -> None:
        self.store = store
        self.registry = registry
        self.allow_private = settings.webhook_allow_private

    async def _owner(self, agent_id: str, agent_hash: str, what: str, field: str = "agent_hash") -> None:
        if not agent_hash:
            raise Unauthenticated(f"{field} is required to {what} on behalf of an agent")
        validate_agent_hash(agent_hash, field)
        validate_agent_id(agent_id, required=True)
        await self.registry.check_owner(agent_id, agent_hash.lower())

    async def create(
        self,
        agent_id: str,
        agent_hash: str,
        url: str,
        events: list[str],
        min_severity: str,
        failure_rate_threshold: float | None,
        fmt: str,
    ) -> NewSubscription:
        validate_url(url)
        if not events:
            raise InvalidArgument("events", f"name at least one of {', '.join(EVENTS)}")
        unknown = [event for event in events if event not in EVENTS]
        if unknown:
            raise InvalidArgument("events", f"unknown event {unknown[0][:64]!r}: use {', '.join(EVENTS)}")
        min_severity = min_severity or SEVERITIES[0]
        if min_severity not in SEVERITIES:
            raise InvalidArgument("min_severity", f"must be one of {', '.join(SEVERITIES)}")
        fmt = fmt or FORMATS[0]
        if fmt not in FORMATS:
            raise InvalidArgument("format", f"must be one of {', '.join(FORMATS)}")
        threshold = DEFAULT_FAILURE_RATE if failure_rate_threshold is None else failure_rate_threshold
        if not 0 < threshold <= 1:
            raise InvalidArgument("failure_rate_threshold", "must be a share of calls, 0 < x <= 1")
        if failure_rate_threshold is not None and FAILURE_RATE not in events:
            raise InvalidArgument("failure_rate_threshold", f"is used only with the {FAILURE_RATE} event")
        await self._owner(agent_id, agent_hash, "subscribe")
        try:
            await check_address(url, allow_private=self.allow_private)
        except DestinationRefused as refused:
            raise InvalidArgument("url", str(refused), reason="WEBHOOK_DESTINATION_REFUSED") from None
        existing = await self.store.list_subscriptions(agent_id, None, MAX_SUBSCRIPTIONS_PER_AGENT)
        if len(existing) >= MAX_SUBSCRIPTIONS_PER_AGENT:
            raise InvalidArgument(
                "url",
                f"the agent has {MAX_SUBSCRIPTIONS_PER_AGENT} subscriptions already: remove one first",
                reason="TOO_MANY_SUBSCRIPTIONS",
            )
        secret = new_secret()
        row = SubscriptionRow(
            "as-" + secrets.token_hex(16),
            agent_id,
            url,
            secret,
            tuple(dict.fromkeys(events)),
            min_severity,
            threshold,
            fmt,
            utcnow(),
        )
        await self.store.add_subscription(row)
        return NewSubscription(row, secret)

    async def list_subscriptions(
        self, agent_id: str, agent_hash: str, size: int, token: str
    ) -> tuple[list[SubscriptionRow], str, bool]:
        """The agent's subscriptions, oldest first, and whether the caller proved to be its owner
        (who alone sees full URLs)."""
        validate_agent_id(agent_id, required=True)
        limit = page_size(size)
        scope = f"alert_subscriptions:{agent_id}"
        after = decode_page_token(token, scope=scope, types=(datetime, str))
        if agent_hash:
            await self._owner(agent_id, agent_hash, "see its webhook URLs", "caller_agent_hash")
        rows = await self.store.list_subscriptions(agent_id, after, limit + 1)
        page, next_token = next_page(
            rows, limit, scope=scope, key=lambda row: (row.created_at, row.subscription_id)
        )
        return page, next_token, bool(agent_hash)

    async def delete(self, agent_id: str, agent_hash: str, subscription_id: str) -> None:
        _subscription_id(subscription_id)
        await self._owner(agent_id, agent_hash, "remove a subscription")
        if not await self.store.delete_subscription(agent_id, subscription_id):
            raise NotFound(
                f"agent {agent_id} has no subscription {subscription_id!r}",
                reason="SUBSCRIPTION_NOT_FOUND",
                subscription_id=subscription_id,
            )

    async def deliveries(
        self, agent_id: str, subscription_id: str, size: int, token: str
    ) -> tuple[list[DeliveryRow], str]:
        validate_agent_id(agent_id, required=True)
        if subscription_id:
            _subscription_id(subscription_id)
        limit = page_size(size)
        scope = f"alert_deliveries:{agent_id}:{subscription_id}"
        after = decode_page_token(token, scope=scope, types=(datetime, str))
        rows = await self.store.list_deliveries(agent_id, subscription_id, after, limit + 1)
        return next_page(rows, limit, scope=scope, key=lambda row: (row.created_at, row.delivery_id))
