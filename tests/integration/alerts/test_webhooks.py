"""Webhooks end to end: a real Registry and Observer on the test's database (SQLite and
PostgreSQL), exchanges in over Ingest, deliveries out to a real HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from smoltbot.core.errors import error_info_of
from smoltbot.core.grpc_client import open_channel
from smoltbot.core.settings import Settings
from smoltbot.core.tls import TlsConfig
from smoltbot.observer.alerts.store import AlertStore
from smoltbot.v1 import alert_service_pb2 as apb
from smoltbot.v1 import alert_service_pb2_grpc, exchange_pb2
from tests.integration.alerts.receiver import Receiver
from tests.integration.observer.conftest import ObserverStack, new_hash
from tests.integration.observer.exchanges import error_body, make_exchange
from tests.integration.observer.test_drift import CARD, _calls
from tests.support.waiting import wait_until

#: Fast retries, a short timeout, loopback receivers allowed.
FAST = {
    "webhook_allow_private": True,
    "webhook_timeout": 0.5,
    "webhook_backoff_base": 0.05,
    "webhook_backoff_max": 0.3,
    "webhook_max_attempts": 50,
    "alert_poll_interval": 0.1,
}


@pytest.fixture
async def stack(database_url: str, settings_factory: Callable[..., Settings]) -> AsyncIterator[ObserverStack]:
    stack = ObserverStack(settings_factory(observer_max_attempts=2))
    stack.observer_overrides = dict(FAST)
    try:
        await stack.start_registry()
        await stack.start_observer()
        yield stack
    finally:
        await stack.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


class Alerts:
    """An AlertService stub on the stack's current observer."""

    def __init__(self, stack: ObserverStack) -> None:
        assert stack.observer is not None
        self.channel = open_channel(
            f"127.0.0.1:{stack.observer.port}", TlsConfig.from_settings(stack.settings)
        )
        self.stub = alert_service_pb2_grpc.AlertServiceStub(self.channel)

    async def __aenter__(self) -> alert_service_pb2_grpc.AlertServiceStub:
        return self.stub

    async def __aexit__(self, *_: object) -> None:
        await self.channel.close()


async def _subscribe(
    stack: ObserverStack, agent_id: str, agent_hash: str, receiver: Receiver, **fields: object
) -> apb.CreateAlertSubscriptionResponse:
    async with Alerts(stack) as alerts:
        created = await alerts.CreateAlertSubscription(
            apb.CreateAlertSubscriptionRequest(
                agent_id=agent_id, agent_hash=agent_hash, url=receiver.url, **fields
            )
        )  # type: ignore[arg-type]
    receiver.secrets[created.subscription.subscription_id] = created.secret
    return created


def _both_failures(found: set[str]) -> set[str] | None:
    return found if {"the receiver answered HTTP 500", "no response within 0.5s"} <= found else None


def _minimal(agent_hash: str) -> object:
    minimal = make_exchange(agent_hash, None, request=b"")
    minimal.capture_failure = "response body could not be captured: decoder error"
    return minimal


async def test_every_event_arrives_signed_once_through_failures_timeouts_and_a_restart(
    stack: ObserverStack, receiver: Receiver
) -> None:
    start = datetime.now(UTC) + timedelta(minutes=1)
    agent_id, agent_hash = await stack.agent()
    await stack.put_card(agent_id, agent_hash, json.dumps(CARD))
    created = await _subscribe(
        stack,
        agent_id,
        agent_hash,
        receiver,
        events=["violation", "missed_escalation", "record_set_aside"],
        min_severity="high",
    )
    assert created.secret.startswith("whsec_") and created.subscription.url == receiver.url
    # Failures (500, 503) and calls that hang past the 0.5 s timeout, then it takes deliveries.
    receiver.script = [500, 500, 503, "hang", "hang", 500, "hang", "hang"]

    async def errors() -> set[str]:
        async with Alerts(stack) as alerts:
            response = await alerts.ListAlertDeliveries(apb.ListAlertDeliveriesRequest(agent_id=agent_id))
        return {d.last_error for d in response.deliveries if d.last_error}

    # Gathered over polls from before the first delivery: a delivery's last error changes with
    # each attempt, and the first attempts may come while the other exchanges are still processed.
    seen: set[str] = set()

    async def both_seen() -> set[str] | None:
        seen.update(await errors())
        return _both_failures(seen)

    watching = asyncio.create_task(wait_until(both_seen, timeout=30, what="a 5xx and a timeout recorded"))
    first = [*_calls(agent_hash, ["read_file", "delete_file", "delete_file"], start), _minimal(agent_hash)]
    await stack.ingest(first)  # type: ignore[arg-type]
    await stack.wait_finished([e.exchange_id for e in first])  # type: ignore[attr-defined]
    await watching
    assert {"the receiver answered HTTP 500", "no response within 0.5s"} <= seen

    # Restart in the middle: deliveries leased by the stopped observer are given back (or their
    # leases expire) and the new one sends them; events stored meanwhile are found by its feed.
    await stack.stop_observer()
    await stack.start_observer()
    second = _calls(agent_hash, ["delete_file", "list_dir"], start + timedelta(minutes=1))
    await stack.ingest(second)
    await stack.wait_finished([e.exchange_id for e in second])

    # Two forbidden calls before the restart and one after: a violation and a missed escalation
    # each; the minimal record: one set aside. read_file and list_dir break nothing.
    expected = {"violation": 3, "missed_escalation": 3, "record_set_aside": 1}
    await wait_until(
        lambda: len(receiver.processed) == sum(expected.values()),
        timeout=30,
        what=f"all {sum(expected.values())} events processed (got {len(receiver.processed)})",
    )
    assert receiver.bad_signatures == 0
    kinds: dict[str, int] = {}
    for payload in receiver.processed.values():
        kinds[payload["event"]] = kinds.get(payload["event"], 0) + 1
        assert payload["agent_id"] == agent_id
        assert payload["subscription_id"] == created.subscription.subscription_id
    assert kinds == expected
    # Each delivery's key is its id, and no key was processed twice (a duplicate arrival, if the
    # restart caused one, was recognised by its key).
    assert all(key == payload["id"] for key, payload in receiver.processed.items())
    assert not receiver.processed_twice or all(key in receiver.processed for key in receiver.processed_twice)
    assert [arrival.answered for arrival in receiver.arrivals[:3]] == [500, 500, 503]

    async def settled() -> list[apb.AlertDelivery] | None:
        async with Alerts(stack) as alerts:
            response = await alerts.ListAlertDeliveries(apb.ListAlertDeliveriesRequest(agent_id=agent_id))
        return list(response.deliveries) if {d.state for d in response.deliveries} == {"delivered"} else None

    # The receiver may have answered before the sender recorded it.
    history = await wait_until(settled, what="every delivery recorded as delivered")
    assert len(history) == 7
    assert {d.delivery_id for d in history} == set(receiver.processed)
    assert sum(d.attempts for d in history) > 7  # failed attempts are counted
    assert all(d.HasField("delivered_at") and not d.last_error for d in history)


async def test_failures_stay_visible_and_the_url_never_leaks(
    stack: ObserverStack, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await stack.stop_observer()
    stack.observer_overrides = {**FAST, "webhook_max_attempts": 2}
    await stack.start_observer()
    agent_id, agent_hash = await stack.agent()
    await stack.put_card(agent_id, agent_hash, json.dumps(CARD))
    await _subscribe(stack, agent_id, agent_hash, receiver, events=["record_set_aside"], format="slack")
    receiver.script = [500, 502]
    await stack.ingest([_minimal(agent_hash)])  # type: ignore[list-item]

    async def failed() -> list[apb.AlertDelivery]:
        async with Alerts(stack) as alerts:
            response = await alerts.ListAlertDeliveries(apb.ListAlertDeliveriesRequest(agent_id=agent_id))
        return [d for d in response.deliveries if d.state == "failed"]

    (delivery,) = await wait_until(failed, timeout=15, what="the delivery failed for good")
    assert delivery.attempts == 2 and delivery.last_status == 502
    assert delivery.last_error == "the receiver answered HTTP 502"
    assert receiver.arrivals[0].event == "record_set_aside"
    assert set(json.loads(receiver.arrivals[0].body)) == {"text"}  # Slack's shape
    # Anyone may list subscriptions (the dashboard does): the URL's path holds a token, so only
    # the owner sees it.
    async with Alerts(stack) as alerts:
        public = (
            await alerts.ListAlertSubscriptions(apb.ListAlertSubscriptionsRequest(agent_id=agent_id))
        ).subscriptions[0]
        owned = (
            await alerts.ListAlertSubscriptions(
                apb.ListAlertSubscriptionsRequest(agent_id=agent_id, caller_agent_hash=agent_hash)
            )
        ).subscriptions[0]
    assert public.url == "" and public.destination == receiver.url.split("/hook")[0]
    assert owned.url == receiver.url
    # Neither the URL's path (its token) nor the secret reached a log line, httpx's included.
    ours = "\n".join(
        record.getMessage() for record in caplog.records if not record.name.startswith("aiohttp")
    )  # the receiver's own access log
    assert "HTTP Request: POST http://127.0.0.1" in ours
    assert "t0ken-in-path" not in ours
    assert not any(secret in ours for secret in receiver.secrets.values())

    # History that ended is pruned once older than the retention period; pending work never is.
    store = AlertStore(stack.db)
    assert await store.prune(delivery.created_at.ToDatetime(UTC)) == 0
    assert await store.prune(datetime.now(UTC) + timedelta(days=1)) == 1
    assert await failed() == []


async def test_two_observers_on_one_database_send_each_delivery_once(
    stack: ObserverStack, receiver: Receiver
) -> None:
    from smoltbot.observer.server import build_server

    second = await build_server(stack.observer_settings, address="127.0.0.1:0")
    await second.start()
    try:
        agent_id, agent_hash = await stack.agent()
        await stack.put_card(agent_id, agent_hash, json.dumps(CARD))
        await _subscribe(stack, agent_id, agent_hash, receiver, events=["violation"])
        calls = _calls(agent_hash, ["delete_file"] * 12, datetime.now(UTC) + timedelta(minutes=1))
        await stack.ingest(calls)
        await stack.wait_finished([c.exchange_id for c in calls])
        await wait_until(lambda: len(receiver.processed) == 12, timeout=20, what="12 violations delivered")
        # Both observers' feeds found every event; the outbox queued each once and one lease
        # sent it: no key arrived twice.
        keys = [arrival.key for arrival in receiver.arrivals]
        assert len(keys) == len(set(keys)) == 12
    finally:
        await second.stop(0.5)


async def test_a_subscription_gets_only_what_happens_after_it(
    stack: ObserverStack, receiver: Receiver
) -> None:
    agent_id, agent_hash = await stack.agent()
    await stack.put_card(agent_id, agent_hash, json.dumps(CARD))
    before = _calls(agent_hash, ["delete_file"], datetime.now(UTC) + timedelta(minutes=1))
    await stack.ingest(before)
    await stack.wait_finished([c.exchange_id for c in before])
    await _subscribe(stack, agent_id, agent_hash, receiver, events=["violation"])
    after = _calls(agent_hash, ["delete_file"], datetime.now(UTC) + timedelta(minutes=2))
    await stack.ingest(after)
    await stack.wait_finished([c.exchange_id for c in after])
    (payload,) = await wait_until(lambda: list(receiver.processed.values()), what="one delivery")
    traces = await stack.traces_by_exchange([after[0].exchange_id], agent_id=agent_id)
    trace_ids = {t.trace_id for t in traces[after[0].exchange_id]}
    assert payload["data"]["trace_id"] in trace_ids


async def test_only_the_owner_subscribes_or_removes(stack: ObserverStack, receiver: Receiver) -> None:
    agent_id, agent_hash = await stack.agent()
    async with Alerts(stack) as alerts:
        for agent_hash_used, code in (
            (new_hash(), grpc.StatusCode.PERMISSION_DENIED),
            ("", grpc.StatusCode.UNAUTHENTICATED),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await alerts.CreateAlertSubscription(
                    apb.CreateAlertSubscriptionRequest(
                        agent_id=agent_id, agent_hash=agent_hash_used, url=receiver.url, events=["drift"]
                    )
                )
            assert refused.value.code() is code
        created = await alerts.CreateAlertSubscription(
            apb.CreateAlertSubscriptionRequest(
                agent_id=agent_id, agent_hash=agent_hash, url=receiver.url, events=["drift"]
            )
        )
        subscription_id = created.subscription.subscription_id
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await alerts.DeleteAlertSubscription(
                apb.DeleteAlertSubscriptionRequest(
                    agent_id=agent_id, agent_hash=new_hash(), subscription_id=subscription_id
                )
            )
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        await alerts.DeleteAlertSubscription(
            apb.DeleteAlertSubscriptionRequest(
                agent_id=agent_id, agent_hash=agent_hash, subscription_id=subscription_id
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await alerts.DeleteAlertSubscription(
                apb.DeleteAlertSubscriptionRequest(
                    agent_id=agent_id, agent_hash=agent_hash, subscription_id=subscription_id
                )
            )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        listed = await alerts.ListAlertSubscriptions(apb.ListAlertSubscriptionsRequest(agent_id=agent_id))
        assert list(listed.subscriptions) == []


async def test_private_destinations_are_refused_unless_the_operator_allows_them(
    stack: ObserverStack, receiver: Receiver
) -> None:
    await stack.stop_observer()
    stack.observer_overrides = {**FAST, "webhook_allow_private": False}
    await stack.start_observer()
    agent_id, agent_hash = await stack.agent()
    async with Alerts(stack) as alerts:
        for url in (
            receiver.url,
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:9/x",
            "http://localhost:9/",
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await alerts.CreateAlertSubscription(
                    apb.CreateAlertSubscriptionRequest(
                        agent_id=agent_id, agent_hash=agent_hash, url=url, events=["drift"]
                    )
                )
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "SMOLTBOT_WEBHOOK_ALLOW_PRIVATE" in (refused.value.details() or "")


async def test_drift_and_a_failure_rate_over_the_threshold_are_sent_once_each(
    stack: ObserverStack, receiver: Receiver
) -> None:
    await stack.stop_observer()
    stack.observer_overrides = {**FAST, "alert_failure_window": 60.0, "alert_failure_min_calls": 4}
    await stack.start_observer()
    agent_id, agent_hash = await stack.agent()
    await stack.put_card(agent_id, agent_hash, json.dumps(CARD))
    await _subscribe(
        stack, agent_id, agent_hash, receiver, events=["drift", "failure_rate"], failure_rate_threshold=0.5
    )
    # Three of four calls in one window fail upstream (529): 75% >= 50%.
    now = datetime.now(UTC)
    failing = [
        make_exchange(
            agent_hash,
            error_body("overloaded_error", "Overloaded"),
            status=529,
            outcome=exchange_pb2.EXCHANGE_OUTCOME_UPSTREAM_ERROR,
            ended_at=now,
        )
        for _ in range(3)
    ]
    fine = _calls(agent_hash, ["read_file"], now)
    drifting = _calls(
        agent_hash,
        ["read_file", "list_dir"] * 5 + ["delete_file"] * 5,
        datetime.now(UTC) + timedelta(minutes=1),
    )
    await stack.ingest([*failing, *fine, *drifting])
    await stack.wait_finished([e.exchange_id for e in [*failing, *fine, *drifting]])
    await stack.wait_drift_settled(agent_id)

    def kinds() -> dict[str, int]:
        found: dict[str, int] = {}
        for payload in receiver.processed.values():
            found[payload["event"]] = found.get(payload["event"], 0) + 1
        return found

    await wait_until(
        lambda: kinds() == {"drift": 1, "failure_rate": 1},
        timeout=15,
        what="one drift and one failure-rate alert",
    )
    rate = next(p for p in receiver.processed.values() if p["event"] == "failure_rate")
    assert rate["data"]["failed"] == 3 and rate["data"]["threshold"] == 0.5
    assert rate["data"]["calls"] >= 4 and rate["data"]["rate"] >= 0.5
    drift = next(p for p in receiver.processed.values() if p["event"] == "drift")
    assert drift["data"]["alert_id"].startswith("da-")
    # More passes of the feed find the same events: nothing is sent again.
    sent = len(receiver.arrivals)
    await asyncio.sleep(0.5)
    assert len(receiver.arrivals) == sent and not receiver.processed_twice

    assert stack.observer is not None and stack.observer.components.alerts is not None
    metrics = (await stack.observer.components.metrics.render()).decode()
    assert "smoltbot_webhook_delivered_total 2.0" in metrics
    assert 'smoltbot_webhook_outbox{state="delivered"}' in metrics


async def test_an_agent_has_at_most_twenty_subscriptions(stack: ObserverStack, receiver: Receiver) -> None:
    agent_id, agent_hash = await stack.agent()
    async with Alerts(stack) as alerts:
        for n in range(20):
            await alerts.CreateAlertSubscription(
                apb.CreateAlertSubscriptionRequest(
                    agent_id=agent_id, agent_hash=agent_hash, url=f"{receiver.url}/{n}", events=["drift"]
                )
            )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await alerts.CreateAlertSubscription(
                apb.CreateAlertSubscriptionRequest(
                    agent_id=agent_id, agent_hash=agent_hash, url=receiver.url, events=["drift"]
                )
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_of(refused.value).reason == "TOO_MANY_SUBSCRIPTIONS"  # type: ignore[union-attr]
        listed = await alerts.ListAlertSubscriptions(
            apb.ListAlertSubscriptionsRequest(agent_id=agent_id, page_size=15)
        )
        assert len(listed.subscriptions) == 15 and listed.next_page_token
        rest = await alerts.ListAlertSubscriptions(
            apb.ListAlertSubscriptionsRequest(
                agent_id=agent_id, page_size=15, page_token=listed.next_page_token
            )
        )
        assert len(rest.subscriptions) == 5 and not rest.next_page_token
