"""The API (and dashboard) and the gateway behind a reverse proxy that serves them under a path
prefix and terminates TLS: forwarded headers, SMOLTBOT_ROOT_PATH, and links that still work.

The proxy is a small aiohttp one in this file: it maps /smoltbot/... to the API (stripping the
prefix, or forwarding it as some proxies do) and /llm/... to the gateway, and adds
X-Forwarded-For/-Proto/-Host as nginx or an ingress controller would.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anthropic
import httpx
import pytest
from aiohttp import web

from smoltbot.core.settings import Settings
from tests.support.anthropic_standin import AnthropicStandin

pytestmark = pytest.mark.timeout(60)

PREFIX = "/smoltbot"
_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


class PrefixProxy:
    """Routes `prefix/...` to `target`, with or without the prefix, adding forwarded headers."""

    def __init__(self, routes: dict[str, tuple[str, bool]]) -> None:
        self.routes = routes  # prefix -> (target base URL, strip the prefix?)
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession(auto_decompress=False)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        route = next(((prefix, target, strip) for prefix, (target, strip) in self.routes.items()
                      if path == prefix or path.startswith(prefix + "/")), None)
        if route is None:
            return web.Response(status=404, text="no route in the proxy")
        prefix, target, strip = route
        upstream = target + (path[len(prefix):] or "/" if strip else path)
        if request.rel_url.raw_query_string:
            upstream += "?" + request.rel_url.raw_query_string
        headers = {name: value for name, value in request.headers.items() if name.lower() not in _HOP}
        headers.update({"X-Forwarded-For": request.remote or "", "X-Forwarded-Proto": "https",
                        "X-Forwarded-Host": "smoltbot.example.com", "Host": "smoltbot.example.com"})
        assert self.session is not None
        async with self.session.request(request.method, upstream, headers=headers, data=await request.read(),
                                        allow_redirects=False) as reply:
            body = await reply.read()
            out = {name: value for name, value in reply.headers.items() if name.lower() not in _HOP}
            return web.Response(status=reply.status, headers=out, body=body)


@dataclass
class Backends:
    settings: Settings
    registry_address: str
    observer_address: str


@pytest.fixture
async def backends(settings_factory: Callable[..., Settings]) -> AsyncIterator[Backends]:
    from smoltbot.observer.server import build_server as build_observer
    from smoltbot.registry.server import build_server as build_registry

    upstream = AnthropicStandin()  # resolve asks it whether it accepts the credential
    settings = settings_factory(upstream_url=await upstream.start())
    registry = await build_registry(settings, address="127.0.0.1:0")
    await registry.start()
    settings = settings.model_copy(update={"registry_address": f"127.0.0.1:{registry.port}",
                                           "observer_poll_interval": 0.1})
    observer = await build_observer(settings, address="127.0.0.1:0")
    await observer.start()
    settings = settings.model_copy(update={"observer_address": f"127.0.0.1:{observer.port}"})
    try:
        yield Backends(settings, settings.registry_address, settings.observer_address)
    finally:
        await observer.stop(0.5)
        await registry.stop(0.5)
        await upstream.stop()


async def start_api_behind_proxy(settings: Settings, *, strip: bool) -> tuple[Any, PrefixProxy]:
    from smoltbot.api.app import start_api

    api = await start_api(settings)
    proxy = PrefixProxy({PREFIX: (api.base_url, strip)})
    await proxy.start()
    return api, proxy


def local_links(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"#]+)"', html)


@pytest.mark.parametrize("strip", [True, False], ids=["proxy-strips-prefix", "proxy-forwards-prefix"])
async def test_the_dashboard_works_under_a_root_path(backends: Backends, strip: bool) -> None:
    settings = backends.settings.model_copy(update={"root_path": PREFIX})
    api, proxy = await start_api_behind_proxy(settings, strip=strip)
    try:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
            # An agent, so the index page links to an agent page.
            claim = await http.post(
                f"{PREFIX}/v1/agents/resolve", headers={"x-api-key": "sk-ant-api03-proxy-1"}
            )
            assert claim.status_code == 200, claim.text
            agent_id = claim.json()["agent_id"]

            index = await http.get(f"{PREFIX}/", headers={"accept": "text/html"})
            assert index.status_code == 200
            assert f'<body data-root="{PREFIX}">' in index.text
            seen: set[str] = set()
            pages = [index.text]
            while pages:
                for link in local_links(pages.pop()):
                    parts = urlsplit(link)
                    if parts.netloc:  # absolute (url_for): must point at the public origin
                        assert parts.scheme == "https" and parts.netloc == "smoltbot.example.com", link
                    path = parts.path + (f"?{parts.query}" if parts.query else "")
                    assert path.startswith(PREFIX + "/"), f"{link} escapes the root path"
                    if path in seen:
                        continue
                    seen.add(path)
                    reply = await http.get(path, headers={"accept": "text/html"})
                    assert reply.status_code == 200, (link, reply.status_code, reply.text[:200])
                    if reply.headers["content-type"].startswith("text/html"):
                        pages.append(reply.text)
            assert f"{PREFIX}/agents/{agent_id}" in seen
            assert {f"{PREFIX}/static/dashboard.js", f"{PREFIX}/openapi.json"} <= seen

            # The API itself, and its errors, under the prefix.
            assert (await http.get(f"{PREFIX}/v1/agents/{agent_id}")).json()["agent_id"] == agent_id
            missing = await http.get(f"{PREFIX}/v1/nothing-here")
            assert missing.status_code == 404 and missing.json()["error"]["reason"] == "ROUTE_NOT_FOUND"
            wrong = await http.delete(f"{PREFIX}/v1/agents/{agent_id}")
            assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
    finally:
        await proxy.stop()
        await api.stop()


async def test_forwarded_headers_count_only_from_trusted_proxies(backends: Backends) -> None:
    # The proxy connects from 127.0.0.1. Trusted: links use the public scheme and host.
    trusted = backends.settings.model_copy(update={"forwarded_allow_ips": "127.0.0.1", "root_path": PREFIX})
    api, proxy = await start_api_behind_proxy(trusted, strip=True)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            page = (await http.get(f"{proxy.url}{PREFIX}/", headers={"accept": "text/html"})).text
            # Links are root-relative: never built from Host / X-Forwarded-Host (docs/api.md).
            assert f'href="{PREFIX}/static/app.css"' in page and "smoltbot.example.com" not in page
    finally:
        await proxy.stop()
        await api.stop()
    # Not trusted: X-Forwarded-Proto is ignored (a client cannot claim https for itself).
    untrusted = backends.settings.model_copy(
        update={"forwarded_allow_ips": "10.20.30.40", "root_path": PREFIX}
    )
    api, proxy = await start_api_behind_proxy(untrusted, strip=True)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            page = (await http.get(f"{proxy.url}{PREFIX}/", headers={"accept": "text/html"})).text
            assert f'href="{PREFIX}/static/app.css"' in page and "smoltbot.example.com" not in page
    finally:
        await proxy.stop()
        await api.stop()


async def test_the_gateway_works_under_a_prefix_behind_a_proxy(backends: Backends) -> None:
    """The gateway reads no client address; a proxy that strips its prefix is all it needs."""
    from smoltbot.gateway import start_gateway

    standin = AnthropicStandin()
    await standin.start()
    gateway = await start_gateway(backends.settings.model_copy(update={"upstream_url": standin.base_url}))
    proxy = PrefixProxy({"/llm": (gateway.base_url, True)})
    await proxy.start()
    try:
        async with anthropic.AsyncAnthropic(
            base_url=f"{proxy.url}/llm/anthropic", api_key="sk-ant-api03-proxy-2", max_retries=0
        ) as sdk:
            reply = await sdk.messages.with_raw_response.create(
                model="claude-haiku-4-5", max_tokens=32, messages=[{"role": "user", "content": "hi"}])
            assert (await reply.parse()).content
            assert reply.headers["x-smoltbot-agent"]
    finally:
        await proxy.stop()
        await gateway.stop()
        await standin.stop()
