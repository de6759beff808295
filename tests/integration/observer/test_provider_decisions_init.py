"""`smoltbot init --provider openai|gemini` against a real local stack (registry, observer, API,
gateway) with the OpenAI and Gemini stand-ins upstream: the agent id is the one the gateway gives
the provider's key (the id the agent's own calls are recorded under), the lines printed are that
provider's base URL variable (and for OpenAI the Codex CLI provider block), a key the provider
refuses creates nothing, and the key is never written anywhere."""

from __future__ import annotations

import asyncio
import json
import secrets
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from smoltbot.cli.main import app
from smoltbot.core.settings import Settings
from tests.support.gemini_standin import GeminiStandin
from tests.support.openai_standin import OpenAIStandin

pytestmark = pytest.mark.timeout(60)

_ISOLATED_ENV = ("SMOLTBOT_API_URL", "SMOLTBOT_GATEWAY_URL", "SMOLTBOT_API_PORT", "SMOLTBOT_GATEWAY_PORT",
                 "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "GEMINI_API_KEY",
                 "GOOGLE_API_KEY", "SMOLTBOT_DEBUG")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'smoltbot.db'}"


@pytest.fixture
async def local(settings_factory: Callable[..., Settings]) -> AsyncIterator[tuple[str, str, OpenAIStandin,
                                                                               GeminiStandin]]:
    from smoltbot.api.app import start_api
    from smoltbot.gateway import start_gateway
    from smoltbot.observer.server import build_server as build_observer
    from smoltbot.registry.server import build_server as build_registry

    async with OpenAIStandin() as openai_standin, GeminiStandin() as gemini_standin:
        settings = settings_factory(openai_upstream_url=openai_standin.base_url,
                                    gemini_upstream_url=gemini_standin.base_url)
        registry = await build_registry(settings, address="127.0.0.1:0")
        await registry.start()
        registry_address = f"127.0.0.1:{registry.port}"
        settings = settings.model_copy(update={"registry_address": registry_address})
        observer = await build_observer(settings, address="127.0.0.1:0")
        await observer.start()
        observer_address = f"127.0.0.1:{observer.port}"
        api = await start_api(settings, registry_address=registry_address, observer_address=observer_address)
        gateway = await start_gateway(settings, registry_address=registry_address,
                                      observer_address=observer_address)
        try:
            yield api.base_url, gateway.base_url, openai_standin, gemini_standin
        finally:
            await gateway.stop()
            await api.stop()
            await observer.stop(0.5)
            await registry.stop(0.5)


async def _init(tmp_path: Path, api_url: str, monkeypatch: pytest.MonkeyPatch, *args: str,
                **env: str) -> tuple[Result, Path]:
    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "user"
    home.mkdir(exist_ok=True)
    merged = {"HOME": str(home), "SMOLTBOT_HOME": str(home / ".smoltbot"), "SMOLTBOT_API_URL": api_url,
              "NO_COLOR": "1", **env}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["init", "--yes", *args], env=merged)
    return result, home


def _nowhere(secret: str, *texts: str, under: Path) -> None:
    for text in texts:
        assert secret not in text
    for path in under.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


async def test_init_for_openai_names_the_gateways_agent_and_prints_the_codex_block(
        local: tuple[str, str, OpenAIStandin, GeminiStandin], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    api_url, gateway_url, openai_standin, _ = local
    key = f"sk-proj-init-SECRET-{secrets.token_hex(12)}"
    result, home = await _init(tmp_path, api_url, monkeypatch, "--provider", "openai",
                               "--gateway", gateway_url,
                               OPENAI_API_KEY=key)
    assert result.exit_code == 0, result.output
    agent_id = json.loads((home / ".smoltbot" / "config.json").read_text())["agent_id"]
    # The agent's own call through the gateway is recorded under the same agent.
    async with httpx.AsyncClient() as http:
        call = await http.get(f"{gateway_url}/openai/v1/models", headers={"authorization": f"Bearer {key}"})
    assert call.headers["x-smoltbot-agent"] == agent_id
    assert [r.credential for r in openai_standin.requests] == [key, key]
    assert f"export OPENAI_BASE_URL={gateway_url}/openai/v1\n" in result.stdout
    after = result.stdout.split("config.toml (with OPENAI_API_KEY exported):\n", 1)[1]
    block = after.split("\nDashboard:")[0]
    codex = tomllib.loads("\n".join(line.removeprefix("  ") for line in block.splitlines()))
    assert codex["model_provider"] == "smoltbot"
    assert codex["model_providers"]["smoltbot"] == {
        "name": "OpenAI through smoltbot", "base_url": f"{gateway_url}/openai/v1",
        "env_key": "OPENAI_API_KEY", "wire_api": "responses"}
    assert "ANTHROPIC_BASE_URL" not in result.stdout
    _nowhere(key, result.stdout, result.stderr, under=home)


async def test_init_for_gemini_prints_its_base_url_variable_and_json(
        local: tuple[str, str, OpenAIStandin, GeminiStandin], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    api_url, gateway_url, _, gemini_standin = local
    key = f"AIzaSyInitSECRET{secrets.token_hex(10)}"
    result, home = await _init(tmp_path, api_url, monkeypatch, "--provider", "gemini",
                               "--gateway", gateway_url,
                               "--json", GEMINI_API_KEY=key)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["provider"], shown["base_url_variable"], shown["base_url"]) == (
        "gemini", "GOOGLE_GEMINI_BASE_URL", f"{gateway_url}/gemini")
    assert shown["agent_id"] == json.loads((home / ".smoltbot" / "config.json").read_text())["agent_id"]
    assert [r.credential for r in gemini_standin.requests] == [key]
    _nowhere(key, result.stdout, result.stderr, under=home)


async def test_init_for_openai_with_a_refused_key_creates_nothing_and_says_what_to_set(
        local: tuple[str, str, OpenAIStandin, GeminiStandin], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    api_url, gateway_url, openai_standin, _ = local
    openai_standin.accepted_keys = {"sk-the-real-one"}
    result, home = await _init(tmp_path, api_url, monkeypatch, "--provider", "openai",
                               "--gateway", gateway_url,
                               OPENAI_API_KEY="sk-wrong-key-0123456789")
    assert result.exit_code == 1
    assert "openai did not accept the credential in OPENAI_API_KEY (HTTP 401)" in result.output
    assert not (home / ".smoltbot" / "config.json").exists()
    async with httpx.AsyncClient() as http:
        agents = (await http.get(f"{api_url}/v1/agents")).json()["items"]
    assert agents == []
    missing, _ = await _init(tmp_path, api_url, monkeypatch, "--provider", "gemini", "--gateway", gateway_url)
    assert missing.exit_code == 1 and "set GOOGLE_API_KEY or GEMINI_API_KEY" in missing.output
