"""A real Registry, Observer and gateway in front of the Anthropic stand-in, with one agent whose
card the test sets (`EnforceStack.put_card`); and the same in front of the OpenAI and Gemini
stand-ins, one agent per credential (`ProviderStack`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from smoltbot.core.identity import agent_hash, load_hash_secret
from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway, start_gateway
from tests.integration.api.conftest import api, stack
from tests.integration.observer.conftest import ObserverStack, observer_stack

# The Observer tests' and the API tests' fixtures, for the records and API tests here.
__all__ = ["api", "observer_stack", "stack"]
from tests.support.anthropic_standin import AnthropicStandin
from tests.support.gemini_standin import GeminiStandin
from tests.support.openai_standin import OpenAIStandin

CREDENTIAL = "sk-ant-api03-enforce-0123456789abcdef"
MODEL = "claude-opus-4-7"


def card_json(mode: str, **autonomy: Any) -> str:
    return json.dumps({
        "integrity_mode": mode,
        "principal": {"type": "unspecified", "relationship": "delegated_authority"},
        "values": {"declared": ["transparency", "honesty"]},
        "autonomy": {"bounded_actions": [], **autonomy},
        "audit": {"retention_days": 30, "queryable": False, "trace_format": "ap-trace-v1"},
    })


def tool(name: str, **fixed: str) -> dict[str, Any]:
    """A tool the stand-in calls with exactly `fixed` as its input (one-value enums)."""
    properties = {key: {"type": "string", "enum": [value]} for key, value in fixed.items()}
    return {"name": name, "description": f"the {name} tool",
            "input_schema": {"type": "object", "properties": properties}}


async def gateway_knows(gateway: RunningGateway, agent_id: str, card_id: str) -> None:
    """Waits until the gateway's card watch has delivered `card_id`: the gateway promises a new
    card applies within a second (its own test checks that), not to the very next call after
    PutCard returns, and a loaded machine showed the difference. With the watch down, the gateway
    reads the card per call, so there is nothing to wait for."""
    cards = gateway.gateway.enforcer.cards
    deadline = time.monotonic() + 10
    while cards.live:
        cached = cards.cached(agent_id)
        if cached is not None and cached.get("card_id") == card_id:
            return
        assert time.monotonic() < deadline, f"the gateway's card watch never delivered card {card_id}"
        await asyncio.sleep(0.01)


class EnforceStack:
    def __init__(self, observer: ObserverStack, gateway: RunningGateway, standin: AnthropicStandin,
                 settings: Settings) -> None:
        self.observer = observer
        self.gateway = gateway
        self.standin = standin
        self.agent_hash = agent_hash(CREDENTIAL, load_hash_secret(Path(settings.home), settings.hash_secret))
        self.agent_id = ""

    def client(self, direct: bool = False) -> anthropic.AsyncAnthropic:
        base = self.standin.base_url if direct else self.gateway.base_url + "/anthropic"
        return anthropic.AsyncAnthropic(api_key=CREDENTIAL, base_url=base, max_retries=0)

    async def put_card(self, card: str) -> str:
        card_id = await self.observer.put_card(self.agent_id, self.agent_hash, card)
        await gateway_knows(self.gateway, self.agent_id, card_id)
        return card_id


@pytest.fixture
async def standin() -> AsyncIterator[AnthropicStandin]:
    server = AnthropicStandin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def enforce_stack(standin: AnthropicStandin,
                        settings_factory: Callable[..., Settings]) -> AsyncIterator[EnforceStack]:
    settings = settings_factory(upstream_url=standin.base_url)
    observer_stack = ObserverStack(settings)
    gateway = None
    try:
        await observer_stack.start_registry()
        observer = await observer_stack.start_observer()
        gateway = await start_gateway(observer_stack.observer_settings,
                                      registry_address=f"127.0.0.1:{observer_stack.registry_port}",
                                      observer_address=f"127.0.0.1:{observer.port}")
        stack = EnforceStack(observer_stack, gateway, standin, settings)
        async with stack.client() as client:  # the agent exists once a call was accepted
            for _attempt in range(20):  # a cold gateway waits for the Registry only briefly
                raw = await client.messages.with_raw_response.create(
                    model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}])
                stack.agent_id = raw.headers.get("x-smoltbot-agent", "")
                if stack.agent_id:
                    break
        assert stack.agent_id, "the gateway never named the agent"
        yield stack
    finally:
        if gateway is not None:
            await gateway.stop()
        await observer_stack.close()


# --- OpenAI and Gemini -------------------------------------------------------------------------

OPENAI_KEY = "sk-proj-enforce-0123456789abcdefghijklmn"
GEMINI_KEY = "AIzaSyEnforce0123456789abcdefghijklmnop"


class ProviderStack:
    """The real Registry, Observer and gateway in front of the OpenAI and Gemini stand-ins, with
    one agent per credential (`openai`, `gemini`: (agent_id, agent_hash)) whose card the test sets."""

    def __init__(self, observer: ObserverStack, gateway: RunningGateway, openai_standin: OpenAIStandin,
                 gemini_standin: GeminiStandin, settings: Settings) -> None:
        self.observer = observer
        self.gateway = gateway
        self.openai_standin = openai_standin
        self.gemini_standin = gemini_standin
        secret = load_hash_secret(Path(settings.home), settings.hash_secret)
        self.openai = ("", agent_hash(OPENAI_KEY, secret))
        self.gemini = ("", agent_hash(GEMINI_KEY, secret))

    def openai_client(self, direct: bool = False) -> openai.AsyncOpenAI:
        base = self.openai_standin.base_url + "/v1" if direct else self.gateway.base_url + "/openai/v1"
        return openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=base, max_retries=0)

    def gemini_client(self, http: httpx.AsyncClient, direct: bool = False) -> genai.Client:
        base = self.gemini_standin.base_url if direct else self.gateway.base_url + "/gemini"
        # Our own httpx client: with aiohttp installed, google-genai would subclass aiohttp.ClientSession.
        return genai.Client(api_key=GEMINI_KEY, http_options=genai_types.HttpOptions(
            base_url=base, httpx_async_client=http, retry_options=genai_types.HttpRetryOptions(attempts=1)))

    async def put_card(self, agent: tuple[str, str], card: str) -> str:
        card_id = await self.observer.put_card(agent[0], agent[1], card)
        await gateway_knows(self.gateway, agent[0], card_id)
        return card_id


@pytest.fixture
async def provider_stack(settings_factory: Callable[..., Settings]) -> AsyncIterator[ProviderStack]:
    async with OpenAIStandin() as openai_standin, GeminiStandin() as gemini_standin:
        settings = settings_factory(openai_upstream_url=openai_standin.base_url,
                                    gemini_upstream_url=gemini_standin.base_url)
        observer_stack = ObserverStack(settings)
        gateway = None
        try:
            await observer_stack.start_registry()
            observer = await observer_stack.start_observer()
            gateway = await start_gateway(observer_stack.observer_settings,
                                          registry_address=f"127.0.0.1:{observer_stack.registry_port}",
                                          observer_address=f"127.0.0.1:{observer.port}")
            stack = ProviderStack(observer_stack, gateway, openai_standin, gemini_standin, settings)
            # The agents the gateway will name for the two credentials (ResolveAgent creates them).
            stack.openai = await observer_stack.agent(stack.openai[1])
            stack.gemini = await observer_stack.agent(stack.gemini[1])
            yield stack
        finally:
            if gateway is not None:
                await gateway.stop()
            await observer_stack.close()
