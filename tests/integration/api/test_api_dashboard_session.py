"""The session page in a real headless Chromium, against the real API server and services: a
Claude Code session reached from the agent page shows its turn with the model calls, the tool
call's name and main argument, the reasoning excerpt and verdict, the Explore sub-agent nested
in the turn, and the tokens and cost per turn and in total (unknown cost shown as such). The
agent page pages back to older traces (plain HTTP), and the owner acknowledges a drift alert there
with the agent's credential."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from smoltbot.api.app import RunningApi, start_api
from tests.integration.api.helpers import (
    Stack,
    anthropic_response,
    auth,
    ingest,
    make_exchange,
    new_credential,
)
from tests.integration.api.test_api_dashboard import ARTIFACTS, CHROMIUM
from tests.integration.api.test_api_drift_acknowledge import drifting_agent
from tests.integration.api.test_api_usage import SESSION, claude_code_session

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def server(stack: Stack) -> AsyncIterator[RunningApi]:
    running = await start_api(stack.settings, "127.0.0.1", 0, registry_address=stack.registry_address,
                              observer_address=stack.observer_address)
    try:
        yield running
    finally:
        await running.stop()


async def _agent(client: httpx.AsyncClient) -> tuple[str, str]:
    credential = new_credential()
    response = await client.post("/v1/agents/resolve", headers=auth(credential))
    return credential, response.json()["agent_id"]


async def _wait_traces(client: httpx.AsyncClient, agent_id: str, count: int) -> None:
    for _ in range(200):
        items = (await client.get(f"/v1/agents/{agent_id}/traces", params={"limit": 1000})).json()["items"]
        if len(items) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{agent_id} never had {count} traces")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
async def test_session_page_shows_turns_sub_agents_and_costs(server: RunningApi, stack: Stack) -> None:
    from playwright.async_api import async_playwright

    async with httpx.AsyncClient(base_url=server.base_url) as client:
        credential, agent_id = await _agent(client)
        await ingest(stack, *claude_code_session(stack, credential, agent_id))
        await _wait_traces(client, agent_id, 3)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: problems.append(message.text)
                    if message.type == "error" else None)
            await page.goto(f"{server.base_url}/agents/{agent_id}")
            summary = await page.get_by_test_id("session-summary").first.inner_text()
            assert "1 turn · 3 calls · $0.00933 + 1 call of unknown cost" in summary
            await page.get_by_test_id("session-link").first.click()
            await page.wait_for_url(f"**/agents/{agent_id}/sessions/{SESSION}")
            assert (await page.get_by_test_id("session-title").inner_text()).strip() == SESSION
            assert (await page.get_by_test_id("turn-count").inner_text()).strip() == "1 turn"
            assert await page.get_by_test_id("turn").count() == 1
            turn = page.get_by_test_id("turn").first
            assert "turn 1" in (await turn.inner_text()).lower()
            # The main agent's Task call with its main argument, and its verdict.
            assert "Task" in await turn.get_by_test_id("tool-name").first.inner_text()
            assert "Find the retry loop" in await turn.get_by_test_id("tool-argument").first.inner_text()
            assert await turn.locator(".badge").count() == 3
            # The sub-agent sits inside the turn, with its own call and its cost.
            sub_agent = turn.get_by_test_id("sub-agent")
            assert await sub_agent.count() == 1
            sub_text = (await sub_agent.inner_text()).lower()
            assert "explore" in sub_text and "a7f3c2e19b" in sub_text and "$0.00105" in sub_text
            assert await sub_agent.locator("tr.trace-row").count() == 1
            turn_usage = await turn.get_by_test_id("turn-usage").first.inner_text()
            assert "$0.00933 + 1 call of unknown cost" in turn_usage
            assert (await page.get_by_test_id("total-cost").inner_text()).strip() == \
                "$0.00933 + 1 call of unknown cost"
            tokens = await page.get_by_test_id("total-tokens").inner_text()
            assert "6,115 in (5,000 cached) / 255 out" in tokens
            await page.screenshot(path=str(ARTIFACTS / "session.png"), full_page=True)
            await page.close()
        finally:
            await browser.close()
    assert problems == []


async def test_agent_page_pages_back_to_older_traces(server: RunningApi, stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        credential, agent_id = await _agent(client)
        start = datetime.now(UTC) - timedelta(minutes=30)
        await ingest(stack, *(make_exchange(stack, credential, anthropic_response(text=f"Reply number {n}."),
                                            agent_id=agent_id, at=start + timedelta(seconds=n))
                              for n in range(30)))
        await _wait_traces(client, agent_id, 30)
        newest = (await client.get(f"/agents/{agent_id}")).text
        assert "data-live-root" in newest and "Reply number 29." in newest and "Reply number 0." not in newest
        older = re.search(r'href="(/agents/[^"]+\?cursor=[^"]+)" data-testid="older-traces"', newest)
        assert older is not None, "no link to older traces"
        page = (await client.get(older.group(1).replace("&amp;", "&"))).text
        assert "Reply number 0." in page and "Reply number 29." not in page
        assert "data-live-root" not in page  # an older page does not refresh itself away
        assert 'data-testid="newest-traces"' in page


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
async def test_the_owner_acknowledges_a_drift_alert_on_the_agent_page(server: RunningApi,
                                                                      stack: Stack) -> None:
    from playwright.async_api import async_playwright, expect

    async with httpx.AsyncClient(base_url=server.base_url) as client:
        credential, agent_id, alert_id = await drifting_agent(client, stack)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(f"{server.base_url}/agents/{agent_id}")
            form = page.locator("form[data-ack]")
            await form.locator("input[name=credential]").fill(new_credential())
            await form.locator("button").click()
            await expect(form.locator("[data-ack-status]")).to_contain_text("not", timeout=10_000)
            await form.locator("input[name=credential]").fill(credential)
            await form.locator("button").click()
            await expect(form.locator("[data-ack-status]")).to_have_text("Acknowledged", timeout=10_000)
            assert await form.locator("input[name=credential]").input_value() == ""  # never kept
            await page.reload()
            assert await page.get_by_test_id("acknowledged").count() == 1
            assert await page.locator("form[data-ack]").count() == 0
            await page.screenshot(path=str(ARTIFACTS / "drift-acknowledged.png"), full_page=True)
        finally:
            await browser.close()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        alert = (await client.get(f"/v1/agents/{agent_id}/drift")).json()["items"][0]
    assert alert["alert_id"] == alert_id and alert["acknowledged_at"] and alert["status"] == "open"
