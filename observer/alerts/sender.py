"""The webhook sender: takes due deliveries from the outbox under a lease, sends each once per
attempt, and records the result.

An attempt is a POST of the rendered event, signed (`signing`), with the delivery id as the
idempotency key, bounded by `webhook_timeout` from connect to the response's status (the
response body is never read), with no redirects followed. A 2xx is delivered; anything else is
retried after an exponentially growing wait with jitter, until `webhook_max_attempts`, then the
delivery is failed for good (visible through the API). A destination the operator does not
allow (`destinations`) fails for good at once. Errors recorded or logged name the destination's
host, never its URL (which may carry a token) nor the secret.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from smoltbot.core.settings import Settings
from smoltbot.core.storage import utcnow
from smoltbot.observer.alerts.destinations import DestinationRefused, check_address, destination_of
from smoltbot.observer.alerts.events import render_body
from smoltbot.observer.alerts.signing import (
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from smoltbot.observer.alerts.store import AlertStore, ClaimedDelivery

__all__ = ["DeliveryStats", "WebhookSender", "retry_delay"]

logger = logging.getLogger(__name__)

#: Deliveries one pass takes at most (sent concurrently).
CLAIM_BATCH = 32


@dataclass
class DeliveryStats:
    """What this observer's sender did since it started (exported on /metrics)."""

    attempts: int = 0
    delivered: int = 0
    #: Attempts that failed, by kind: http_error, timeout, connect_error, refused_destination.
    failures: dict[str, int] = field(default_factory=dict)
    given_up: int = 0


class _UrlPathsHidden(logging.Filter):
    """httpx logs each request's full URL at INFO ("HTTP Request: POST https://..."), and a
    webhook URL's path or query often is its token (Slack's are): on the observer's httpx logger
    every URL is shortened to its scheme, host and port."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, httpx.URL) for arg in record.args):
            record.args = tuple(
                f"{destination_of(str(arg))}/..." if isinstance(arg, httpx.URL) else arg
                for arg in record.args
            )
        return True


class _SubscriptionParametersHidden(logging.Filter):
    """aiosqlite logs every statement with its parameters at DEBUG: those of a statement on
    alert_subscriptions are webhook URLs and secrets, and are left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "alert_subscriptions" in str(record.args):
            record.msg, record.args = "%s", ("a statement on alert_subscriptions (parameters hidden)",)
        return True


def _hide_webhook_secrets_in_library_logs() -> None:
    for name, kind in (("httpx", _UrlPathsHidden), ("aiosqlite", _SubscriptionParametersHidden)):
        library_logger = logging.getLogger(name)
        if not any(isinstance(existing, kind) for existing in library_logger.filters):
            library_logger.addFilter(kind())


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt after `attempts` tries: base * 2^(attempts-1), at most
    `cap`, half of it random ("equal jitter"), so retries of many deliveries spread out and
    still grow."""
    ceiling = min(cap, base * 2 ** min(attempts - 1, 40))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class WebhookSender:
    def __init__(self, store: AlertStore, settings: Settings, owner: str) -> None:
        self.store = store
        self.owner = owner
        self.allow_private = settings.webhook_allow_private
        self.timeout = settings.webhook_timeout
        self.max_attempts = settings.webhook_max_attempts
        self.backoff_base = settings.webhook_backoff_base
        self.backoff_max = settings.webhook_backoff_max
        # Only an operator-set public URL: the loopback default means nothing in a Slack channel.
        self.dashboard_url = settings.public_api_url
        #: Long enough to outlast any attempt, so a live sender never loses its lease mid-send.
        self.lease_seconds = self.timeout + 30.0
        self.stats = DeliveryStats()
        #: Deliveries leased to us right now (given back if we stop mid-send).
        self.held: set[str] = set()
        _hide_webhook_secrets_in_library_logs()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": "smoltbot-webhooks/1"},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def run_once(self) -> int:
        """Sends the deliveries due now (one batch); returns how many it tried."""
        claimed = await self.store.claim(self.owner, CLAIM_BATCH, self.lease_seconds)
        # Each id leaves `held` once its attempt is settled: if we are stopped mid-send, the
        # ones still here are given back at once instead of waiting for their leases to expire.
        self.held.update(item.delivery_id for item in claimed)
        results = await asyncio.gather(*(self._attempt(item) for item in claimed), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                # Recording the result failed (the database): the lease runs out and the
                # delivery is sent again, at least once as promised.
                logger.warning("recording a webhook attempt failed: %s", result)
        return len(claimed)

    async def _attempt(self, item: ClaimedDelivery) -> None:
        self.stats.attempts += 1
        try:
            status, error, kind = await self._post(item)
        except Exception:  # a bug of ours must not stop the other deliveries
            logger.exception("webhook delivery %s failed inside smoltbot", item.delivery_id)
            status, error, kind = 0, "failed inside smoltbot (see the observer's log)", "internal"
        delivered = not error
        retry_at: datetime | None = None
        if delivered:
            self.stats.delivered += 1
        else:
            self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1
            if kind != "refused_destination" and item.attempts < self.max_attempts:
                retry_at = utcnow() + timedelta(
                    seconds=retry_delay(item.attempts, self.backoff_base, self.backoff_max)
                )
            else:
                self.stats.given_up += 1
            logger.warning(
                "webhook delivery %s to %s failed (attempt %d): %s%s",
                item.delivery_id,
                destination_of(item.url),
                item.attempts,
                error,
                "; retrying" if retry_at else "; given up",
            )
        await self.store.settle(
            self.owner, item.delivery_id, delivered=delivered, status=status, error=error, retry_at=retry_at
        )
        self.held.discard(item.delivery_id)

    async def _post(self, item: ClaimedDelivery) -> tuple[int, str, str]:
        """(HTTP status or 0, error or "", failure kind)."""
        try:
            await check_address(item.url, allow_private=self.allow_private)
        except DestinationRefused as refused:
            return 0, str(refused), "refused_destination"
        body = render_body(
            item.event_json,
            delivery_id=item.delivery_id,
            subscription_id=item.subscription_id,
            fmt=item.format,
            dashboard_url=self.dashboard_url,
        )
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: signature_header(item.secret, body, int(time.time())),
            IDEMPOTENCY_HEADER: item.delivery_id,
            EVENT_HEADER: item.event,
            "smoltbot-delivery-attempt": str(item.attempts),
        }
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client.stream("POST", item.url, content=body, headers=headers) as response:
                    status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            return 0, f"no response within {self.timeout:g}s", "timeout"
        except (httpx.InvalidURL, UnicodeError) as failure:
            # Refused when subscribing since; kept for rows stored before that check.
            return 0, f"not a usable URL ({type(failure).__name__})", "refused_destination"
        except (httpx.HTTPError, OSError) as failure:
            # The exception's text can quote the URL: only its kind is kept.
            return (
                0,
                f"could not reach {destination_of(item.url)} ({type(failure).__name__})",
                "connect_error",
            )
        if 200 <= status < 300:
            return status, "", ""
        return status, f"the receiver answered HTTP {status}", "http_error"
