"""A real Registry, Observer and gateway in front of the Anthropic stand-in, for sessions whose
histories the tests resend honestly or not (`EvidenceStack.call` names the session)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from smoltbot.api.app import create_app
from smoltbot.core.identity import agent_hash, load_hash_secret
from smoltbot.core.settings import Settings
from smoltbot.gateway import RunningGateway, start_gateway
from smoltbot.v1 import trace_pb2
from tests.integration.observer.conftest import ObserverStack, observer_stack  # noqa: F401 - shared here
from tests.support.anthropic_standin import AnthropicStandin

CREDENTIAL = "sk-ant-api03-evidence-0123456789abcdef"
MODEL = "claude-opus-4-7"


def tool(name: str, **fixed: str) -> dict[str, Any]:
    """A tool the stand-in calls with exactly `fixed` as its input (one-value enums)."""
    properties = {key: {"type": "string", "enum": [value]} for key, value in fixed.items()}
    return {"name": name, "description": f"the {name} tool",
            "input_schema": {"type": "object", "properties": properties}}


def card_json(**evidence: Any) -> str:
    card: dict[str, Any] = {
        "integrity_mode": "observe",
        "principal": {"type": "unspecified", "relationship": "delegated_authority"},
        "values": {"declared": ["transparency", "honesty"]},
        "autonomy": {"bounded_actions": []},
        "audit": {"retention_days": 30, "queryable": False, "trace_format": "ap-trace-v1"},
    }
    if evidence:
        card["extensions"] = {"evidence": evidence}
    return json.dumps(card)


class EvidenceStack:
    def __init__(self, observer: ObserverStack, gateway: RunningGateway, standin: AnthropicStandin) -> None:
        self.observer = observer
        self.gateway = gateway
        self.standin = standin
        self.agent_id = ""
        self.agent_hash = ""

    def client(self, direct: bool = False) -> anthropic.AsyncAnthropic:
        base = self.standin.base_url if direct else self.gateway.base_url + "/anthropic"
        return anthropic.AsyncAnthropic(api_key=CREDENTIAL, base_url=base, max_retries=0)

    async def call(self, session: str, messages: list[dict[str, Any]], *, scenario: str = "text",
                   tools: list[dict[str, Any]] | None = None, direct: bool = False,
                   system: str | None = None) -> dict[str, Any]:
        """One Messages call in `session`; the assistant message as the client would send it back."""
        kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": messages,
                                  "extra_headers": {"x-standin-scenario": scenario,
                                                    "x-smoltbot-session": session}}
        if tools:
            kwargs["tools"] = tools
        if system:
            kwargs["system"] = system
        async with self.client(direct) as client:
            reply = await client.messages.create(**kwargs)
        return {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]}

    async def exchanges(self, session: str, count: int, timeout: float = 30) -> list[list[trace_pb2.ApTrace]]:
        """The traces of the session's `count` calls, grouped by call, in call order."""
        traces = await self.observer.wait_for_traces(count, agent_id=self.agent_id, session_id=session,
                                                     timeout=timeout)
        grouped: dict[str, list[trace_pb2.ApTrace]] = {}
        for trace in sorted(traces, key=lambda t: (t.timestamp.ToDatetime(), t.observation.decision_index)):
            grouped.setdefault(trace.observation.exchange_id, []).append(trace)
        await self.observer.wait_finished(list(grouped), timeout=timeout)
        assert len(grouped) == count, f"{len(grouped)} calls traced in {session}, expected {count}"
        return list(grouped.values())


@pytest.fixture
async def standin() -> AsyncIterator[AnthropicStandin]:
    server = AnthropicStandin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def evidence_stack(standin: AnthropicStandin, database_url: str,
                         settings_factory: Callable[..., Settings]) -> AsyncIterator[EvidenceStack]:
    """On both databases (`database_url`): the ledger is storage."""
    settings = settings_factory(upstream_url=standin.base_url)
    stack_parts = ObserverStack(settings)
    gateway = None
    try:
        await stack_parts.start_registry()
        observer = await stack_parts.start_observer()
        gateway = await start_gateway(stack_parts.observer_settings,
                                      registry_address=f"127.0.0.1:{stack_parts.registry_port}",
                                      observer_address=f"127.0.0.1:{observer.port}")
        stack = EvidenceStack(stack_parts, gateway, standin)
        async with stack.client() as client:  # the agent exists once a call was accepted
            for _attempt in range(20):  # a cold gateway waits for the Registry only briefly
                raw = await client.messages.with_raw_response.create(
                    model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}])
                stack.agent_id = raw.headers.get("x-smoltbot-agent", "")
                if stack.agent_id:
                    break
        assert stack.agent_id, "the gateway never named the agent"
        stack.agent_hash = agent_hash(CREDENTIAL, load_hash_secret(Path(settings.home), settings.hash_secret))
        yield stack
    finally:
        if gateway is not None:
            await gateway.stop()
        await stack_parts.close()


@pytest.fixture
async def api(evidence_stack: EvidenceStack) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API over the stack's Registry and Observer, in process (ASGI)."""
    parts = evidence_stack.observer
    assert parts.observer is not None
    app = create_app(parts.observer_settings, registry_address=f"127.0.0.1:{parts.registry_port}",
                     observer_address=f"127.0.0.1:{parts.observer.port}")
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://api.test") as client:
        yield client
