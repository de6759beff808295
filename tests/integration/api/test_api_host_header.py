"""No URL the API or dashboard emits carries the request's Host header (or X-Forwarded-Host),
which the client chooses: asset links, links and redirects are root-relative, under root_path."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from smoltbot.api.app import create_app
from tests.integration.api.helpers import Stack, auth, new_credential, seed_agent

FORGED = "evil.example"
HOSTILE = {"host": FORGED, "x-forwarded-host": FORGED, "accept": "text/html"}


def _urls(html: str) -> list[str]:
    return re.findall(r'(?:href|src|action)="([^"]*)"', html)


def _assert_nothing_points_elsewhere(response: httpx.Response, root: str = "") -> None:
    assert FORGED not in response.text, response.text[:500]
    for name, value in response.headers.items():
        assert FORGED not in value, (name, value)
    for url in _urls(response.text):
        assert url.startswith(root + "/") and not url.startswith("//"), url


async def test_dashboard_pages_and_errors_do_not_reflect_a_forged_host(api: httpx.AsyncClient,
                                                                        stack: Stack) -> None:
    seeded = await seed_agent(api, stack)
    trace_id = seeded.traces[0]["trace_id"]
    pages = ["/", f"/agents/{seeded.agent_id}", f"/agents/{seeded.agent_id}/live",
             f"/agents/{seeded.agent_id}/traces/{trace_id}", "/agents/smolt-00000000", "/no/such/page",
             "/?cursor=forged"]
    for path in pages:
        response = await api.get(path, headers=HOSTILE)
        assert response.status_code in (200, 400, 404), (path, response.status_code)
        _assert_nothing_points_elsewhere(response)
    page = await api.get(f"/agents/{seeded.agent_id}", headers=HOSTILE)
    assert {"/static/app.css", "/static/dashboard.js", "/static/favicon.svg"} <= set(_urls(page.text))


async def test_trailing_slash_redirects_stay_on_the_callers_origin(api: httpx.AsyncClient) -> None:
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(new_credential()))).json()["agent_id"]
    for path, target in (("/v1/agents/", "/v1/agents"), (f"/agents/{agent_id}/", f"/agents/{agent_id}"),
                         ("/v1/agents/?limit=2", "/v1/agents?limit=2")):
        response = await api.get(path, headers=HOSTILE)
        assert response.status_code == 307, (path, response.status_code)
        assert response.headers["location"] == target


@pytest.fixture
async def prefixed(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    settings = stack.settings.model_copy(update={"root_path": "/smoltbot"})
    app = create_app(settings, registry_address=stack.registry_address,
                     observer_address=stack.observer_address)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://api.test") as client:
        yield client


async def test_under_a_root_path_links_and_redirects_keep_the_prefix_and_not_the_host(
        prefixed: httpx.AsyncClient) -> None:
    agent_id = (await prefixed.post("/smoltbot/v1/agents/resolve",
                                    headers=auth(new_credential()))).json()["agent_id"]
    page = await prefixed.get(f"/smoltbot/agents/{agent_id}", headers=HOSTILE)
    assert page.status_code == 200
    _assert_nothing_points_elsewhere(page, root="/smoltbot")
    assert "/smoltbot/static/app.css" in _urls(page.text)
    for path in ("/smoltbot/v1/agents/", "/v1/agents/"):  # a proxy that forwards the prefix, or strips it
        redirect = await prefixed.get(path, headers=HOSTILE)
        assert redirect.status_code == 307 and redirect.headers["location"] == "/smoltbot/v1/agents"


async def test_error_pages_repeat_at_most_a_bounded_part_of_the_path(api: httpx.AsyncClient) -> None:
    planted = "/Your-account-is-locked-call-this-number" + "-x" * 2000
    for accept in ("text/html", "application/json"):
        response = await api.get(planted, headers={"accept": accept})
        assert response.status_code == 404
        assert planted[:120] in response.text and planted[:200] not in response.text
