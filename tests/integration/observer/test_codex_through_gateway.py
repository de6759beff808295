"""Codex-shaped calls through the real gateway to the OpenAI stand-in (official openai SDK,
Responses API, streamed and not): the session named by Codex's `session-id` header, a sub-agent
marked in `x-codex-turn-metadata`, and each call's tokens and exact cost recorded from the
provider's usage (input_tokens includes the cached ones: stored apart, never twice)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import openai
import pytest
import sqlalchemy as sa

from smoltbot.core.pricing import load_price_table
from smoltbot.core.settings import Settings
from smoltbot.core.usage import openai_responses_usage
from smoltbot.gateway import RunningGateway, start_gateway
from smoltbot.v1 import observer_service_pb2 as pb
from tests.integration.observer.conftest import ObserverStack
from tests.support.openai_standin import OpenAIStandin

pytestmark = pytest.mark.timeout(60)

KEY = "sk-proj-codex-through-the-gateway-0123456789abcdef"
MODEL = "gpt-5.4"
SESSION = "019a4c1e-5b7d-7c3e-9f10-2a3b4c5d6e7f"


@pytest.fixture
async def codex_stack(settings_factory: Callable[..., Settings],
                      database_url: str) -> AsyncIterator[tuple[ObserverStack, RunningGateway]]:
    async with OpenAIStandin() as standin:
        stack = ObserverStack(settings_factory(openai_upstream_url=standin.base_url))
        gateway = None
        try:
            await stack.start_registry()
            observer = await stack.start_observer()
            gateway = await start_gateway(stack.observer_settings,
                                          registry_address=f"127.0.0.1:{stack.registry_port}",
                                          observer_address=f"127.0.0.1:{observer.port}")
            yield stack, gateway
        finally:
            if gateway is not None:
                await gateway.stop()
            await stack.close()


def _codex_headers(**metadata: str) -> dict[str, str]:
    headers = {"session-id": SESSION, "originator": "codex_cli_rs", "version": "0.58.0"}
    if metadata:
        headers["x-codex-turn-metadata"] = json.dumps(metadata)
    return headers


async def test_codex_session_sub_agent_and_usage_through_the_gateway(
        codex_stack: tuple[ObserverStack, RunningGateway]) -> None:
    stack, gateway = codex_stack
    responses: list[Any] = []
    async with openai.AsyncOpenAI(api_key=KEY, base_url=gateway.base_url + "/openai/v1",
                                  max_retries=0) as client:
        responses.append(await client.responses.create(
            model=MODEL, input="Why does the retry loop never stop?", extra_headers=_codex_headers()))
        async with client.responses.stream(
                model=MODEL, input="Review client.py for retry bugs.",
                extra_headers=_codex_headers(request_kind="subagent_turn", thread_source="subagent",
                                             parent_thread_id="thr-main", thread_id="thr-review",
                                             subagent_kind="review")) as stream:
            responses.append(await stream.get_final_response())

    async def rows() -> list[Any]:
        async with stack.db.read() as conn:
            return list((await conn.execute(sa.text(
                "SELECT * FROM exchange_usage WHERE session_id = :s ORDER BY occurred_at"),
                {"s": SESSION})).all())

    for _ in range(200):
        found = await rows()
        if len(found) == 2:
            break
        await asyncio.sleep(0.05)
    main, sub = found
    assert {main.provider, sub.provider} == {"openai"}
    assert {main.session_rung, sub.session_rung} == {"session-id"}
    assert (main.is_sub_agent, sub.is_sub_agent) == (False, True)
    assert (sub.sub_agent_id, sub.parent_agent_id, sub.agent_type, sub.request_kind) == (
        "thr-review", "thr-main", "review", "subagent_turn")
    prices = load_price_table()
    for row, response in zip((main, sub), responses, strict=True):
        usage = openai_responses_usage(response.usage.model_dump())
        assert (row.input_tokens, row.cache_read_tokens, row.output_tokens, row.reasoning_tokens) == (
            usage.input, usage.cache_read, usage.output, usage.reasoning)
        assert row.model == response.model
        assert Decimal(row.cost_usd) == prices.cost(usage, MODEL).usd
    assert stack.stub is not None
    session = await stack.stub.GetSessionUsage(pb.GetSessionUsageRequest(session_id=SESSION))
    assert session.total.calls == 2 and [a.sub_agent_id for a in session.sub_agents] == ["thr-review"]
    assert session.sub_agents[0].source == "codex"
