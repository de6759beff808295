"""`/v1/agents/{id}/alerts` against the real services: the owner subscribes (the secret shown
once), lists and removes; another credential is refused, no credential is a 401; bad URLs and
private destinations are 400s saying what to fix; deliveries are listed publicly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx

from tests.integration.api.helpers import (
    Stack,
    anthropic_response,
    auth,
    ingest,
    make_exchange,
    new_credential,
)
from tests.integration.api.test_api_drift_acknowledge import FORBID_DELETE
from tests.support.waiting import wait_until

HOOK = "https://hooks.example.com/services/T000/B000/secret-token"


async def _agent(api: httpx.AsyncClient) -> tuple[str, str]:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    return credential, agent_id


async def test_the_owner_subscribes_lists_and_removes(api: httpx.AsyncClient, stack: Stack) -> None:
    credential, agent_id = await _agent(api)
    path = f"/v1/agents/{agent_id}/alerts"
    body = {"url": HOOK, "events": ["violation", "drift"], "min_severity": "high", "format": "slack"}

    stranger = await api.post(path, json=body, headers=auth(new_credential()))
    assert stranger.status_code == 403 and stranger.json()["error"]["status"] == "PERMISSION_DENIED"
    assert (await api.post(path, json=body)).status_code == 401

    created = await api.post(path, json=body, headers=auth(credential))
    assert created.status_code == 200, created.text
    subscription = created.json()
    assert subscription["secret"].startswith("whsec_") and subscription["url"] == HOOK
    assert subscription["destination"] == "https://hooks.example.com"
    assert subscription["events"] == ["violation", "drift"] and subscription["format"] == "slack"

    listed = await api.get(path, headers=auth(credential))
    assert listed.status_code == 200
    (item,) = listed.json()["items"]
    assert item["url"] == HOOK and "secret" not in item  # the secret is never shown again
    assert (await api.get(path, headers=auth(new_credential()))).status_code == 403
    assert (await api.get(path)).status_code == 401

    one = f"{path}/{subscription['subscription_id']}"
    assert (await api.delete(one, headers=auth(new_credential()))).status_code == 403
    assert (await api.delete(one)).status_code == 401
    removed = await api.delete(one, headers=auth(credential))
    assert removed.status_code == 200
    assert removed.json() == {"agent_id": agent_id, "subscription_id": subscription["subscription_id"]}
    gone = await api.delete(one, headers=auth(credential))
    assert gone.status_code == 404 and gone.json()["error"]["reason"] == "SUBSCRIPTION_NOT_FOUND"
    assert (await api.get(path, headers=auth(credential))).json()["items"] == []

    deliveries = await api.get(f"{path}/deliveries")
    assert deliveries.status_code == 200 and deliveries.json()["items"] == []


async def test_bad_subscriptions_say_what_to_fix(api: httpx.AsyncClient, stack: Stack) -> None:
    credential, agent_id = await _agent(api)
    path = f"/v1/agents/{agent_id}/alerts"
    for body, field in (
        ({"url": "ftp://files.example.com/x", "events": ["drift"]}, "url"),
        ({"url": "https://user:pw@hooks.example.com/x", "events": ["drift"]}, "url"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["drift"]}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data/", "events": ["drift"]}, "url"),
        ({"url": HOOK, "events": ["drift"], "failure_rate_threshold": 0.2}, "failure_rate_threshold"),
    ):
        refused = await api.post(path, json=body, headers=auth(credential))
        assert refused.status_code == 400, (body, refused.text)
        assert field in refused.json()["error"]["message"], refused.text
    private = await api.post(
        path, json={"url": "http://10.0.0.8/hook", "events": ["drift"]}, headers=auth(credential)
    )
    assert private.json()["error"]["reason"] == "WEBHOOK_DESTINATION_REFUSED"
    assert "SMOLTBOT_WEBHOOK_ALLOW_PRIVATE" in private.json()["error"]["message"]
    for body in (
        {"url": HOOK, "events": []},
        {"url": HOOK, "events": ["everything"]},
        {"url": HOOK, "events": ["drift"], "format": "xml"},
        {"url": HOOK, "events": ["drift"], "x": 1},
    ):
        assert (await api.post(path, json=body, headers=auth(credential))).status_code == 422, body


async def test_the_agent_page_shows_webhooks_without_their_urls_and_recent_deliveries(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    credential, agent_id = await _agent(api)
    assert (
        await api.put(f"/v1/agents/{agent_id}/card", json=FORBID_DELETE, headers=auth(credential))
    ).is_success
    empty = await api.get(f"/agents/{agent_id}")
    assert 'id="webhooks"' in empty.text and "smoltbot alerts add" in empty.text
    created = await api.post(
        f"/v1/agents/{agent_id}/alerts", json={"url": HOOK, "events": ["violation"]}, headers=auth(credential)
    )
    assert created.status_code == 200, created.text
    start = datetime.now(UTC) + timedelta(seconds=5)
    await ingest(
        stack,
        make_exchange(
            stack,
            credential,
            anthropic_response(tool=("delete_file", {"path": "/x"})),
            agent_id=agent_id,
            at=start,
        ),
    )

    async def delivery_shown() -> str | None:
        page = (await api.get(f"/agents/{agent_id}/live")).text
        return page if 'data-testid="delivery"' in page else None

    page = await wait_until(delivery_shown, timeout=20, what="a delivery on the agent page")
    assert 'data-testid="webhook"' in page and "https://hooks.example.com" in page
    assert "secret-token" not in page and "/services/" not in page  # the URL's path holds a token
    assert "delete_file broke its card" in page
    deliveries = (await api.get(f"/v1/agents/{agent_id}/alerts/deliveries")).json()["items"]
    assert [d["event"] for d in deliveries] == ["violation"]
    assert "secret-token" not in json.dumps(deliveries)
