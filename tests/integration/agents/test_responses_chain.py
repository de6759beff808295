"""The Responses API's `previous_response_id` chain names the session through the real gateway:
a call continuing an earlier response of the same agent joins that response's session, even after
the idle gap that would otherwise start a new one (official openai SDK, no session headers)."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
import sqlalchemy as sa

from tests.integration.agents.conftest import OpenAIThroughGateway

pytestmark = pytest.mark.timeout(60)

KEY = "sk-proj-responses-chain-through-smoltbot-0123456789"
#: Short enough that the test's pause ends an inferred session.
IDLE_SECONDS = 0.6


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"session_idle_minutes": IDLE_SECONDS / 60}


async def test_a_continued_response_joins_its_session_after_the_idle_gap(
        openai_gateway: OpenAIThroughGateway) -> None:
    async with openai.AsyncOpenAI(api_key=KEY, base_url=openai_gateway.openai_base_url,
                                  max_retries=0) as client:
        first = await client.responses.create(model="gpt-5.1", input="Start a plan.")
        await asyncio.sleep(IDLE_SECONDS * 2)
        async with client.responses.stream(model="gpt-5.1", input="Go on.",
                                           previous_response_id=first.id) as stream:
            continued = await stream.get_final_response()
        await asyncio.sleep(IDLE_SECONDS * 2)
        unrelated = await client.responses.create(model="gpt-5.1", input="Something else.")

    rows = await _usage_rows(openai_gateway, count=3)
    sessions = [row.session_id for row in rows]
    assert all(sessions), sessions
    # Without the chain the pause would have split the first two; the third has no chain.
    assert sessions[0] == sessions[1] != sessions[2], sessions
    assert [row.session_rung for row in rows] == ["none", "previous_response_id", "none"]
    assert continued.id != first.id and unrelated.id not in (first.id, continued.id)


async def _usage_rows(through: OpenAIThroughGateway, *, count: int) -> list[Any]:
    found: list[Any] = []
    for _ in range(300):
        async with through.stack.db.read() as conn:
            found = list((await conn.execute(sa.text(
                "SELECT * FROM exchange_usage ORDER BY occurred_at"))).all())
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} usage rows, found {len(found)}")
