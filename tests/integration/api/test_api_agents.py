"""/v1/agents against the real Registry and Observer: resolve, read, list, claim."""

from __future__ import annotations

import httpx

from tests.integration.api.helpers import Stack, auth, new_credential, seed_agent


async def test_resolve_creates_the_agent_once_for_either_credential_header(api: httpx.AsyncClient) -> None:
    credential = new_credential()
    first = await api.post("/v1/agents/resolve", headers=auth(credential))
    again = await api.post("/v1/agents/resolve", headers={"authorization": f"Bearer {credential}"})
    assert first.status_code == again.status_code == 200
    assert first.json()["created"] is True and again.json()["created"] is False
    assert first.json()["agent_id"] == again.json()["agent_id"]
    assert first.json()["agent_id"].startswith("smolt-")
    assert credential not in first.text


async def test_resolve_without_a_credential_is_401(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/agents/resolve", headers={"authorization": "Basic abc"})
    assert response.status_code == 401
    assert response.json()["error"]["reason"] == "CREDENTIAL_MISSING"


async def test_agent_reports_its_trace_count_and_active_card(api: httpx.AsyncClient, stack: Stack) -> None:
    seeded = await seed_agent(api, stack)
    response = await api.get(f"/v1/agents/{seeded.agent_id}")
    assert response.status_code == 200
    agent = response.json()
    assert agent["agent_id"] == seeded.agent_id
    assert agent["trace_count"] == len(seeded.traces) == 3
    assert agent["claimed"] is False and agent["claimed_at"] is None
    assert agent["active_card_id"]
    assert agent["created_at"].endswith("Z") and agent["last_seen_at"]


async def test_unknown_agent_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/agents/smolt-00000000")
    assert response.status_code == 404
    assert response.json()["error"]["reason"] == "AGENT_NOT_FOUND"


async def test_agents_list_pages_with_an_opaque_cursor(api: httpx.AsyncClient) -> None:
    ids = set()
    for _ in range(3):
        ids.add((await api.post("/v1/agents/resolve", headers=auth(new_credential()))).json()["agent_id"])
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/agents", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [item["agent_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(seen) == ids and len(seen) == 3


async def test_claim_needs_the_agents_own_credential_and_happens_once(api: httpx.AsyncClient) -> None:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    url = f"/v1/agents/{agent_id}/claim"

    missing = await api.post(url, json={"email": "owner@example.com"})
    other = await api.post(url, json={"email": "owner@example.com"}, headers=auth(new_credential()))
    claimed = await api.post(url, json={"email": "owner@example.com"}, headers=auth(credential))
    again = await api.post(url, headers=auth(credential))

    assert missing.status_code == 401
    assert other.status_code == 403 and other.json()["error"]["reason"] == "NOT_OWNER"
    assert claimed.status_code == 200
    assert claimed.json()["claimed"] is True and claimed.json()["claimed_at"]
    assert "owner@example.com" not in claimed.text  # the contact is never shown
    assert again.status_code == 409
    assert (await api.get(f"/v1/agents/{agent_id}")).json()["claimed"] is True
