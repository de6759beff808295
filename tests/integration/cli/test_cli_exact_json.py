"""Exact JSON from capture to every place traces are served: the Observer (gRPC), `/v1` REST,
the dashboard's trace page and `smoltbot logs --json`, all real, on one stack. Integers stay
integers (1234567890123456789 exact), floats stay floats. And API activity is listed as such."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from smoltbot.v1 import observer_service_pb2 as pb
from smoltbot.v1 import observer_service_pb2_grpc
from tests.integration.api.helpers import anthropic_response, ingest, make_exchange
from tests.integration.cli.conftest import Cli, LocalStack, wait_for_traces

pytestmark = pytest.mark.timeout(90)

EXACT: dict[str, Any] = {"path": "ledger.csv", "amount_cents": 1234567890123456789, "count": 5, "ratio": 5.0,
                         "delta": -0.25, "huge": 10**30, "tiny": 1e-7, "items": [1, 2.0, {"n": 3}]}


def _assert_exact(parameters: dict[str, Any]) -> None:
    assert parameters == EXACT
    assert type(parameters["count"]) is int and type(parameters["ratio"]) is float
    assert type(parameters["amount_cents"]) is int and parameters["amount_cents"] == 1234567890123456789
    assert [type(item) for item in parameters["items"][:2]] == [int, float]


async def test_json_values_are_exact_everywhere_traces_are_served(cli: Cli, local_stack: LocalStack,
                                                                 credential: str) -> None:
    target = local_stack.ingest_target
    async with httpx.AsyncClient(base_url=local_stack.api_url) as client:
        exchange = make_exchange(target, credential, anthropic_response(
            thinking="Pay the ledger.", tool=("transfer", EXACT)))
        models = make_exchange(target, credential, anthropic_response(text="x"))
        models.request.method, models.request.path, models.request.body = "GET", "/v1/models", b""
        models.response.body = b'{"data": [], "has_more": false}'
        await ingest(target, exchange, models)
        stub = observer_service_pb2_grpc.ObserverServiceStub(local_stack.observer_channel)
        agent_id = ""
        for _ in range(200):
            found = [t for t in (await stub.ListTraces(pb.ListTracesRequest(page_size=100))).traces
                     if t.observation.exchange_id == exchange.exchange_id]
            if found:
                agent_id = found[0].agent_id
                break
            await asyncio.sleep(0.05)
        assert agent_id.startswith("smolt-")
        traces = await wait_for_traces(local_stack.api_url, agent_id, 2)

        # gRPC
        _assert_exact(json.loads(found[0].action.parameters_json))
        # REST, list and item
        listed = next(t for t in traces if t["observation"]["exchange_id"] == exchange.exchange_id)
        _assert_exact(listed["action"]["parameters"])
        one = (await client.get(f"/v1/traces/{listed['trace_id']}")).json()
        _assert_exact(one["action"]["parameters"])
        assert "parameters_json" not in one["action"] and "metadata_json" not in one["context"]
        assert type(one["context"]["metadata"]["decision_index"]) is int
        raw = (await client.get(f"/v1/traces/{listed['trace_id']}")).text
        assert '"amount_cents":1234567890123456789' in raw and '"ratio":5.0' in raw and '"count":5' in raw
        # The dashboard's trace page shows the trace's JSON
        page = (await client.get(f"/agents/{agent_id}/traces/{listed['trace_id']}")).text
        assert "1234567890123456789" in page and "1234567890123456768" not in page
        assert "&#34;count&#34;: 5," in page or '"count": 5,' in page

        # API activity is listed, marked, and outside the score.
        activity = next(t for t in traces if t["observation"]["exchange_id"] == models.exchange_id)
        assert activity["observation"]["record_kind"] == "activity"
        assert activity["observation"]["request_path"] == "/v1/models"
        only = (await client.get(f"/v1/agents/{agent_id}/traces", params={"record_kind": "activity"})).json()
        assert [t["trace_id"] for t in only["items"]] == [activity["trace_id"]]
        integrity = (await client.get(f"/v1/integrity/{agent_id}")).json()
        assert integrity["all_time"]["total_traces"] == 1 and integrity["all_time"]["activity"] == 1

    # The CLI, configured for this agent
    cli.smoltbot_home.mkdir(parents=True, exist_ok=True)
    cli.config_path.write_text(json.dumps({"agent_id": agent_id, "api_url": local_stack.api_url}))
    result = await cli("logs", "--json")
    assert result.exit_code == 0, result.output
    printed = {t["observation"]["exchange_id"]: t for t in json.loads(result.stdout)}
    _assert_exact(printed[exchange.exchange_id]["action"]["parameters"])
    assert '"amount_cents": 1234567890123456789' in result.stdout and '"ratio": 5.0' in result.stdout
    table = await cli("logs")
    assert table.exit_code == 0, table.output
    assert "activity GET /v1/models" in table.stdout
