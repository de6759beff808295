"""`/v1/agents/{id}/alerts` against the real services: the owner subscribes (the secret shown
once), lists and removes; another credential is refused, no credential is a 401; bad URLs and
private destinations are 400s saying what to fix; deliveries are listed publicly."""

from __future__ import annotations

import httpx

from tests.integration.api.helpers import Stack, auth, new_credential

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
