"""`provider` on every trace over the public API: `?provider=` filters /v1/traces and an agent's
traces (refusing an unknown provider with a message that names the choices), and the dashboard
shows the provider and model in the trace list and on the trace page, with a reasoning summary
said to be one."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from smoltbot.v1 import exchange_pb2
from tests.integration.api.conftest import api, stack  # noqa: F401 - the API's fixtures
from tests.integration.api.helpers import Stack, hash_of, ingest, seed_agent, wait_for_traces

RESPONSE = {
    "id": "resp_0a1b2c", "object": "response", "status": "completed", "model": "gpt-5.1-codex", "error": None,
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [
            {"type": "summary_text", "text": "The failing test is in test_client.py; run it alone."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_7", "name": "shell", "status": "completed",
         "arguments": json.dumps({"command": ["pytest", "-q", "tests/test_client.py"]})},
    ],
    "usage": {"input_tokens": 900, "output_tokens": 40, "total_tokens": 940,
              "input_tokens_details": {"cached_tokens": 0},
              "output_tokens_details": {"reasoning_tokens": 16}},
}
GEMINI = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "It is sunny."}]}, "finishReason": "STOP",
                    "index": 0}],
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 4, "totalTokenCount": 12},
    "modelVersion": "gemini-2.5-flash", "responseId": "r-1",
}


def _exchange(on: Stack, credential: str, agent_id: str, provider: str, path: str, request: dict[str, Any],
              response: dict[str, Any]) -> exchange_pb2.Exchange:
    started = datetime.now(UTC)
    ended = started + timedelta(milliseconds=800)
    exchange = exchange_pb2.Exchange(
        exchange_id=secrets.token_hex(16), agent_hash=hash_of(on, credential), agent_id=agent_id,
        provider=provider, outcome=exchange_pb2.EXCHANGE_OUTCOME_COMPLETE, gateway_id="test-gateway",
        request=exchange_pb2.CapturedRequest(method="POST", path=path, body=json.dumps(request).encode()),
        response=exchange_pb2.CapturedResponse(status=200, body=json.dumps(response).encode()))
    exchange.timings.started_at.FromDatetime(started)
    exchange.timings.ended_at.FromDatetime(ended)
    return exchange


async def test_traces_filter_by_provider_and_the_dashboard_shows_it(
        api: httpx.AsyncClient, stack: Stack) -> None:  # noqa: F811 - fixtures
    seeded = await seed_agent(api, stack)
    agent_id = seeded.agent_id
    await ingest(stack,
                 _exchange(stack, seeded.credential, agent_id, "openai", "/v1/responses",
                           {"model": "gpt-5.1-codex", "input": "fix it"}, RESPONSE),
                 _exchange(stack, seeded.credential, agent_id, "gemini",
                           "/v1beta/models/gemini-2.5-flash:generateContent",
                           {"contents": [{"role": "user", "parts": [{"text": "weather?"}]}]}, GEMINI))
    everything = await wait_for_traces(api, agent_id, 5)
    assert sorted(t["observation"]["provider"] for t in everything) == [
        "anthropic", "anthropic", "anthropic", "gemini", "openai"]

    for path in (f"/v1/agents/{agent_id}/traces", "/v1/traces"):
        params: dict[str, Any] = {} if path.startswith("/v1/agents") else {"agent_id": agent_id}
        listed = {}
        for provider in ("anthropic", "openai", "gemini"):
            reply = await api.get(path, params={**params, "provider": provider})
            assert reply.status_code == 200, reply.text
            listed[provider] = reply.json()["items"]
        assert [len(listed[p]) for p in ("anthropic", "openai", "gemini")] == [3, 1, 1]
        [openai_trace] = listed["openai"]
        assert openai_trace["action"]["type"] == "execute" and openai_trace["action"]["name"] == "shell"
        assert openai_trace["action"]["parameters"] == {"command": ["pytest", "-q", "tests/test_client.py"]}
        assert openai_trace["observation"]["api"] == "openai.responses"
        assert openai_trace["observation"]["reasoning"]["summary_only"] is True
        [gemini_trace] = listed["gemini"]
        assert gemini_trace["action"]["name"] == "respond"
        assert gemini_trace["observation"]["model"] == "gemini-2.5-flash"
    refused = await api.get(f"/v1/agents/{agent_id}/traces", params={"provider": "mistral"})
    assert refused.status_code in (400, 422) and "provider" in refused.text
    assert "openai" in refused.text

    page = await api.get(f"/agents/{agent_id}")
    assert page.status_code == 200
    assert "gpt-5.1-codex" in page.text and "gemini-2.5-flash" in page.text
    trace_page = await api.get(f"/agents/{agent_id}/traces/{openai_trace['trace_id']}")
    assert trace_page.status_code == 200
    assert 'data-testid="trace-provider"' in trace_page.text and "openai.responses" in trace_page.text
    assert 'data-testid="summary-only"' in trace_page.text
