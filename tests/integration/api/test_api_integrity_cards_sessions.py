"""Integrity, drift, cards and sessions through the API, against the real services."""

from __future__ import annotations

import httpx

from tests.integration.api.helpers import Stack, auth, new_credential, seed_agent


async def test_integrity_shows_score_with_its_coverage(api: httpx.AsyncClient, stack: Stack) -> None:
    seeded = await seed_agent(api, stack)
    response = await api.get(f"/v1/integrity/{seeded.agent_id}")
    assert response.status_code == 200
    integrity = response.json()
    for window in (integrity["recent"], integrity["all_time"]):
        assert window["total_traces"] == 3
        verified = sum(1 for t in seeded.traces if t["verification"]["verified"])
        assert window["verified_traces"] == verified
        assert window["score"] == verified / 3
        # Two of the three exchanges carried thinking; none was read by the model analyzer.
        assert window["with_reasoning"] == 2
        assert window["with_model_analysis"] == 0
        assert window["failed"] == 0
        assert isinstance(window["violations_by_type"], dict)
    assert integrity["timeline"] and sum(p["total_traces"] for p in integrity["timeline"]) == 3
    assert all(p["score"] is None or 0 <= p["score"] <= 1 for p in integrity["timeline"])


async def test_integrity_of_an_agent_without_traces_has_no_score(api: httpx.AsyncClient) -> None:
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(new_credential()))).json()["agent_id"]
    integrity = (await api.get(f"/v1/integrity/{agent_id}")).json()
    assert integrity["recent"]["total_traces"] == 0 and integrity["recent"]["score"] is None


async def test_drift_alerts_list(api: httpx.AsyncClient, stack: Stack) -> None:
    seeded = await seed_agent(api, stack)
    response = await api.get(f"/v1/agents/{seeded.agent_id}/drift", params={"limit": 10})
    assert response.status_code == 200
    assert response.json()["next_cursor"] is None
    assert isinstance(response.json()["items"], list)


async def test_put_card_makes_it_active_and_keeps_history(api: httpx.AsyncClient) -> None:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    default = (await api.get(f"/v1/agents/{agent_id}/card")).json()
    legacy_card = {  # the legacy AAP shape; stored in the unified one
        "aap_version": "0.1.0",
        "card_id": "ac-legacy-1",
        "agent_id": agent_id,
        "issued_at": "2026-01-01T00:00:00Z",
        "principal": {"type": "human", "identifier": "alice", "relationship": "delegated_authority"},
        "values": {"declared": ["transparency", "harm_prevention"]},
        "autonomy_envelope": {
            "bounded_actions": ["read_file", "respond"],
            "forbidden_actions": ["delete_file"],
            "escalation_triggers": [],
        },
        "audit_commitment": {
            "retention_days": 30,
            "queryable": True,
            "trace_format": "ap-trace-v1",
            "query_endpoint": "http://127.0.0.1:8000/v1/traces",
        },
    }
    url = f"/v1/agents/{agent_id}/card"
    assert (await api.put(url, json=legacy_card)).status_code == 401
    assert (await api.put(url, json=legacy_card, headers=auth(new_credential()))).status_code == 403
    bad = await api.put(
        url, json={**legacy_card, "values": {"declared": "not-a-list"}}, headers=auth(credential)
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"]

    stored = await api.put(url, json=legacy_card, headers=auth(credential))
    assert stored.status_code == 200, stored.text
    card = stored.json()
    assert card["card_version"].startswith("unified/")
    assert card["autonomy"]["forbidden_actions"] == ["delete_file"]
    assert (await api.get(url)).json()["card_id"] == card["card_id"]
    history = (await api.get(f"/v1/agents/{agent_id}/cards")).json()
    assert history["active_card_id"] == card["card_id"]
    assert [c["card_id"] for c in history["items"]] == [card["card_id"], default["card_id"]]
    assert (await api.get(f"/v1/agents/{agent_id}")).json()["active_card_id"] == card["card_id"]

    # The example the OpenAPI document shows is a card the registry accepts.
    spec = (await api.get("/openapi.json")).json()
    example = spec["paths"]["/v1/agents/{agent_id}/card"]["put"]["requestBody"]["content"]["application/json"]
    example_card = (example.get("examples") or {}).get("card", {}).get("value") or example["schema"][
        "examples"
    ][0]
    assert (await api.put(url, json=example_card, headers=auth(credential))).status_code == 200


async def test_plugin_session_events_start_count_and_end_a_session(api: httpx.AsyncClient) -> None:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    report = {"agent_id": agent_id, "session_id": "plugin-session-1", "event": "started",
              "occurred_at": "2026-11-20T10:00:00Z"}
    assert (await api.post("/v1/sessions", json=report)).status_code == 401
    assert (await api.post("/v1/sessions", json=report, headers=auth(new_credential()))).status_code == 403

    started = await api.post("/v1/sessions", json=report, headers=auth(credential))
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "active" and started.json()["source"] == "plugin"
    await api.post("/v1/sessions", json={**report, "event": "turn"}, headers=auth(credential))
    turned = await api.post("/v1/sessions", json={**report, "event": "turn", "turn_count": 7},
                            headers=auth(credential))
    assert turned.json()["turn_count"] == 7
    ended = await api.post("/v1/sessions", json={**report, "event": "ended"}, headers=auth(credential))
    assert ended.json()["status"] == "ended" and ended.json()["ended_at"]

    sessions = (await api.get(f"/v1/agents/{agent_id}/sessions")).json()
    assert [s["session_id"] for s in sessions["items"]] == ["plugin-session-1"]
    assert sessions["items"][0]["turn_count"] == 7 and sessions["next_cursor"] is None


async def test_gateway_sessions_show_up_for_the_agent(api: httpx.AsyncClient, stack: Stack) -> None:
    seeded = await seed_agent(api, stack, session="sess-from-client")
    sessions = (await api.get(f"/v1/agents/{seeded.agent_id}/sessions")).json()["items"]
    assert sessions, "the gateway-named session should be listed"
    assert all(s["agent_id"] == seeded.agent_id for s in sessions)
