"""The parts of observer.alerts that need no server: signatures as receivers check them, URL
rules and the SSRF guard, the retry schedule, the bodies and the idempotency key."""

from __future__ import annotations

import json

import pytest

from smoltbot.core.errors import InvalidArgument
from smoltbot.observer.alerts.destinations import (
    DestinationRefused,
    check_address,
    destination_of,
    validate_url,
)
from smoltbot.observer.alerts.events import AlertEvent, delivery_id_for, render_body, severity_rank
from smoltbot.observer.alerts.sender import retry_delay
from smoltbot.observer.alerts.signing import new_secret, sign, signature_header, verify

BODY = b'{"event":"violation"}'


def test_a_signature_verifies_only_for_its_secret_body_and_time() -> None:
    secret = new_secret()
    header = signature_header(secret, BODY, timestamp=1_800_000_000)
    assert header == f"t=1800000000,v1={sign(secret, 1_800_000_000, BODY)}"
    assert verify(secret, header, BODY, now=1_800_000_100)
    assert not verify(secret, header, BODY + b" ", now=1_800_000_100)  # body changed
    assert not verify(new_secret(), header, BODY, now=1_800_000_100)  # another secret
    assert not verify(secret, header, BODY, now=1_800_001_000)  # replayed 1000 s later
    assert not verify(secret, header.replace("t=1800000000", "t=1800000001"), BODY, now=1_800_000_000)
    assert not verify(secret, "v1=deadbeef", BODY)


def test_the_signed_string_is_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"whsec_k", b"42." + BODY, hashlib.sha256).hexdigest()
    assert sign("whsec_k", 42, BODY) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/x",
        "https://",
        "https://user:pw@example.com/x",
        "https://example.com/#frag",
        "https://exa mple.com/",
        "https://example.com:99999/",
        "https://example.com/" + "x" * 2048,
        "javascript:alert(1)",
        "https://[::1/",
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_url(url)
    assert refused.value.field == "url"


def test_the_destination_shows_no_path_query_or_token() -> None:
    assert destination_of("https://hooks.slack.com/services/T0/B0/tok?x=1") == "https://hooks.slack.com"
    assert destination_of("http://[::1]:8080/a") == "http://[::1]:8080"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://localhost/",
        "http://api.localhost/",
        "http://100.64.0.1/",
    ],
)
async def test_private_destinations_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(DestinationRefused, match="SMOLTBOT_WEBHOOK_ALLOW_PRIVATE"):
        await check_address(url, allow_private=False)
    await check_address(url, allow_private=True)


async def test_a_host_no_resolver_can_take_is_left_to_the_delivery() -> None:
    # A 70-character label is no valid DNS name: getaddrinfo raises UnicodeError, not OSError.
    await check_address("https://" + "a" * 70 + ".example/hook", allow_private=False)


async def test_public_literal_addresses_pass() -> None:
    await check_address("https://93.184.215.14/hook", allow_private=False)
    await check_address("https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook", allow_private=False)


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    for attempts, ceiling in ((1, 2.0), (2, 4.0), (5, 32.0), (30, 3600.0)):
        delays = [retry_delay(attempts, 2.0, 3600.0) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jittered


def test_severities_rank_and_an_unknown_one_is_never_held_back() -> None:
    assert severity_rank("low") < severity_rank("medium") < severity_rank("high") < severity_rank("critical")
    assert severity_rank("catastrophic") > severity_rank("critical")


def test_bodies_carry_the_delivery_id_or_slacks_text() -> None:
    event = AlertEvent(
        "violation",
        "tr-1",
        "smolt-0a1b",
        "2026-12-03T00:00:00Z",
        "delete_file broke its card",
        {"trace_id": "tr-1"},
    )
    key = delivery_id_for("as-1", event.event_key)
    assert key == delivery_id_for("as-1", "violation:tr-1") != delivery_id_for("as-2", "violation:tr-1")
    body = json.loads(render_body(event.to_json(), delivery_id=key, subscription_id="as-1", fmt="json"))
    assert body == {
        "id": key,
        "subscription_id": "as-1",
        "event": "violation",
        "agent_id": "smolt-0a1b",
        "occurred_at": "2026-12-03T00:00:00Z",
        "summary": "delete_file broke its card",
        "data": {"trace_id": "tr-1"},
    }
    slack = json.loads(
        render_body(
            event.to_json(),
            delivery_id=key,
            subscription_id="as-1",
            fmt="slack",
            dashboard_url="http://127.0.0.1:8000",
        )
    )
    assert set(slack) == {"text"} and "delete_file broke its card" in slack["text"]
    assert "http://127.0.0.1:8000/agents/smolt-0a1b" in slack["text"]
