"""/v1/traces against traces the real Observer built from ingested exchanges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aap
import httpx

from tests.integration.api.helpers import Stack, auth, new_credential, seed_agent


async def test_a_trace_is_an_aap_trace_plus_verification_and_observation(api: httpx.AsyncClient,
                                                                         stack: Stack) -> None:
    seeded = await seed_agent(api, stack)
    by_name = {trace["action"]["name"]: trace for trace in seeded.traces}
    assert {"read_file", "delete_file"} <= set(by_name)

    response = await api.get(f"/v1/traces/{by_name['read_file']['trace_id']}")
    assert response.status_code == 200
    trace = response.json()
    aap.APTrace.from_dict(trace)  # AAP accepts it as is
    assert trace["agent_id"] == seeded.agent_id
    assert trace["action"]["parameters"] == {"path": "src/client.py"}
    assert trace["decision"]["alternatives_considered"]
    assert trace["observation"]["reasoning"]["present"] is True
    assert "retry loop" in trace["observation"]["reasoning"]["excerpt"]
    assert isinstance(trace["verification"]["verified"], bool)
    assert trace["observation"]["exchange_id"]


async def test_traces_filter_by_agent_session_verification_and_time(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    seeded = await seed_agent(api, stack, session="sess-filter-a")
    other = await seed_agent(api, stack, session="sess-filter-b")

    mine = (await api.get("/v1/traces", params={"agent_id": seeded.agent_id})).json()["items"]
    assert {t["trace_id"] for t in mine} == {t["trace_id"] for t in seeded.traces}

    everyone = (await api.get("/v1/traces", params={"limit": 1000})).json()["items"]
    assert {t["agent_id"] for t in everyone} >= {seeded.agent_id, other.agent_id}

    session_id = seeded.traces[0]["context"]["session_id"]
    by_session = (await api.get("/v1/traces", params={"session_id": session_id})).json()["items"]
    assert by_session and all(t["context"]["session_id"] == session_id for t in by_session)

    for verified in (True, False):
        items = (await api.get(f"/v1/agents/{seeded.agent_id}/traces",
                               params={"verified": str(verified).lower()})).json()["items"]
        assert all(t["verification"]["verified"] is verified for t in items)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await api.get(f"/v1/agents/{seeded.agent_id}/traces", params={"since": future})).json()[
        "items"
    ] == []
    assert len((await api.get(f"/v1/agents/{seeded.agent_id}/traces",
                              params={"until": future})).json()["items"]) == 3


async def test_traces_page_in_either_order_without_gaps(api: httpx.AsyncClient, stack: Stack) -> None:
    seeded = await seed_agent(api, stack)
    for order in ("desc", "asc"):
        seen, cursor = [], None
        while True:
            params = {"limit": 2, "order": order, **({"cursor": cursor} if cursor else {})}
            response = await api.get(f"/v1/agents/{seeded.agent_id}/traces", params=params)
            assert response.status_code == 200, response.text
            seen += response.json()["items"]
            cursor = response.json()["next_cursor"]
            if cursor is None:
                break
        stamps = [t["timestamp"] for t in seen]
        assert len(seen) == 3 and len({t["trace_id"] for t in seen}) == 3
        assert stamps == sorted(stamps, reverse=(order == "desc"))


async def test_unknown_trace_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/traces/no-such-trace-0")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


async def test_tool_execution_report_marks_the_trace(api: httpx.AsyncClient, stack: Stack) -> None:
    seeded = await seed_agent(api, stack)
    tool_trace = next(t for t in seeded.traces if t["action"]["name"] == "read_file")
    tool_use_id = tool_trace["observation"]["tool_use_id"]
    body = {"agent_id": seeded.agent_id, "tool_use_id": tool_use_id, "executed": True}

    assert (await api.post("/v1/tool-executions", json=body)).status_code == 401
    assert (
        await api.post("/v1/tool-executions", json=body, headers=auth(new_credential()))
    ).status_code == 403
    response = await api.post("/v1/tool-executions", json=body, headers=auth(seeded.credential))
    assert response.status_code == 200, response.text
    assert response.json() == body
    trace = (await api.get(f"/v1/traces/{tool_trace['trace_id']}")).json()
    assert trace["observation"]["executed"] is True
