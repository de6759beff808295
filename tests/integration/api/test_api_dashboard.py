"""The dashboard in a real headless Chromium (Debian's), against the real API server and services:
the agent page shows the score with its coverage and the traces, refreshes itself when a new
trace arrives, opens a trace in full, and loads nothing from any other origin."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from smoltbot.api.app import RunningApi, start_api
from tests.integration.api.helpers import Stack, anthropic_response, ingest, make_exchange, seed_agent

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "artifacts" / "api"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture
async def server(stack: Stack) -> AsyncIterator[RunningApi]:
    running = await start_api(stack.settings, "127.0.0.1", 0, registry_address=stack.registry_address,
                              observer_address=stack.observer_address)
    try:
        yield running
    finally:
        await running.stop()


async def test_agent_page_shows_score_and_traces_live_and_opens_a_trace(
    server: RunningApi, stack: Stack
) -> None:
    from playwright.async_api import async_playwright, expect

    async with httpx.AsyncClient(base_url=server.base_url) as client:
        seeded = await seed_agent(client, stack)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    requested: list[str] = []
    problems: list[str] = []

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            # Light first; its live update adds a fourth trace (with reasoning) before the dark pass.
            for scheme, traces, with_reasoning in (("light", 3, 2), ("dark", 4, 3)):
                page = await browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
                page.on("request", lambda request: requested.append(request.url))
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                page.on("console", lambda message: problems.append(message.text)
                        if message.type == "error" else None)

                await page.goto(f"{server.base_url}/")
                await page.click(f"a[href='/agents/{seeded.agent_id}']")
                await page.wait_for_url(f"**/agents/{seeded.agent_id}")
                score = page.get_by_test_id("score")
                assert (await score.inner_text()).strip().endswith("%")
                coverage = await page.get_by_test_id("coverage").inner_text()
                assert "Readable reasoning" in coverage
                assert f"{with_reasoning}/{traces}" in coverage.replace(" ", "").replace("\n", "")
                assert await page.locator("tr.trace-row").count() == traces
                assert "read_file" in await page.get_by_test_id("traces").inner_text()
                await page.wait_for_selector("[data-chart] svg")
                await page.screenshot(path=str(ARTIFACTS / f"agent-{scheme}.png"), full_page=True)

                if scheme == "light":
                    # A new trace arrives while the page is open: it appears without a reload.
                    await ingest(stack, make_exchange(
                        stack, seeded.credential,
                        anthropic_response(text="Done: client errors no longer retry.",
                                           thinking="Tests pass; summarise the change for the user."),
                        agent_id=seeded.agent_id, at=datetime.now(UTC)))
                    await expect(page.locator("tr.trace-row")).to_have_count(4, timeout=20_000)
                    assert await page.locator("tr.trace-row.new").count() == 1

                await page.locator("tr.trace-row a.action", has_text="read_file").first.click()
                await page.wait_for_url(f"**/agents/{seeded.agent_id}/traces/*")
                assert "read_file" in await page.get_by_test_id("trace-title").inner_text()
                assert "retry loop" in await page.inner_text("main")
                await page.click("details.raw summary")
                assert '"verification"' in await page.get_by_test_id("raw-json").inner_text()
                await page.evaluate("() => window.scrollTo(0, 0)")  # the sticky header belongs at the top
                await page.screenshot(path=str(ARTIFACTS / f"trace-{scheme}.png"), full_page=True)

                await page.goto(f"{server.base_url}/agents/smolt-00000000")
                assert "Nothing here" in await page.inner_text("main")
                if scheme == "light":
                    await page.screenshot(path=str(ARTIFACTS / "not-found.png"))
                await page.close()
        finally:
            await browser.close()

    assert requested, "the browser made no requests"
    foreign = [url for url in requested if not url.startswith(server.base_url + "/")]
    assert foreign == [], f"third-party requests: {foreign}"
    # The 404 page logs its status as a console error; anything else is a bug.
    assert [p for p in problems if "404" not in p] == []
