"""What enforce mode costs: holding and checking a tool call, and calls it leaves alone.

    python bench/enforce_overhead.py [--calls 300] [--micro 2000]

1. The filter alone (no network): a streamed answer with one tool call (thinking, text, a
   tool_use block, as the Anthropic stand-in sends it, in its event-per-write chunking) fed
   through `SseEnforcer` against a card with forbidden actions and triggers, against the same
   chunks relayed as they are; and the whole (non-streamed) answer through `rewrite_message`.
   Figure: microseconds added per tool call (target < 200 us), and the ratio for an answer
   without tool calls.
   The same for OpenAI Chat Completions, Responses and Gemini (`alt=sse`) streams, as their
   stand-ins build them, each against the capture's own reassembly of the same stream.
2. Through the real gateway (in-process, with the real Registry and the Anthropic and OpenAI
   stand-ins; exchanges spooled, no Observer), sequential streamed calls of five kinds per
   provider (Anthropic Messages, OpenAI Responses) made in turn: a gateway without the enforcer
   (as before enforce mode) against an observe card and against an enforce card, for answers
   without tool calls, and an enforce card against an observe card for answers with a tool
   call. Figures: median latency per kind and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smoltbot.core.aap.cards import normalize_card  # noqa: E402
from smoltbot.core.aap.enforcement import check_tool_call  # noqa: E402
from smoltbot.core.identity import agent_hash, load_hash_secret  # noqa: E402
from smoltbot.core.settings import load_settings  # noqa: E402
from smoltbot.gateway import start_gateway  # noqa: E402
from smoltbot.gateway.enforce.anthropic import SseEnforcer, rewrite_message  # noqa: E402
from smoltbot.gateway.sse import MessageAccumulator  # noqa: E402
from smoltbot.registry.server import build_server as build_registry  # noqa: E402
from smoltbot.v1 import registry_service_pb2, registry_service_pb2_grpc  # noqa: E402
from tests.support.anthropic_standin import AnthropicStandin  # noqa: E402
from tests.support.openai_standin import OpenAIStandin  # noqa: E402

CREDENTIAL = "sk-ant-api03-bench-enforce-0123456789"
AGENT = "smolt-0123456789abcdef"
TOOLS = [{"name": "read_file", "description": "Read a file", "input_schema": {
    "type": "object", "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}}}}]


def card(mode: str) -> dict[str, Any]:
    return {
        "integrity_mode": mode,
        "principal": {"type": "unspecified", "relationship": "delegated_authority"},
        "values": {"declared": ["transparency"]},
        "autonomy": {"bounded_actions": [], "forbidden_actions": ["bash", "delete_file", "send_email"],
                     "escalation_triggers": [
                         {"condition": 'parameters.path contains "/etc"', "action": "escalate",
                          "reason": "x"},
                         {"condition": 'action_name == "rm"', "action": "deny", "reason": "y"},
                         {"condition": "parameters.amount > 100", "action": "escalate", "reason": "z"}]},
        "audit": {"retention_days": 30, "queryable": False, "trace_format": "ap-trace-v1"},
    }


async def standin_answer(standin: AnthropicStandin, scenario: str, stream: bool) -> tuple[list[bytes], bytes]:
    """The stand-in's answer: its chunks as written (one SSE event each), and the whole body."""
    body = {"model": "claude-opus-4-7", "max_tokens": 256, "stream": stream, "tools": TOOLS,
            "messages": [{"role": "user", "content": "bench"}]}
    headers = {"x-api-key": CREDENTIAL, "x-standin-scenario": scenario, "accept-encoding": "identity"}
    async with httpx.AsyncClient() as client, client.stream(
            "POST", standin.base_url + "/v1/messages", json=body, headers=headers) as response:
        chunks = [chunk async for chunk in response.aiter_raw()]
    return chunks, b"".join(chunks)


def per_call_us(fn: Any, repeat: int) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        samples.append((time.perf_counter() - start) / repeat * 1e6)
    return min(samples)


async def micro(standin: AnthropicStandin, repeat: int) -> None:
    enforce = normalize_card(card("enforce"), agent_id=AGENT)

    def decide(name: str, tool_input: Any, tool_use_id: str) -> Any:
        return check_tool_call(enforce, name, tool_input, tool_use_id)

    tool_chunks, _ = await standin_answer(standin, "thinking_tool_use", True)
    text_chunks, _ = await standin_answer(standin, "thinking", True)
    _, tool_whole = await standin_answer(standin, "thinking_tool_use", False)

    def relay(chunks: list[bytes]) -> Any:
        return lambda: [chunk for chunk in chunks]

    def enforced(chunks: list[bytes]) -> Any:
        def run() -> None:
            enforcer = SseEnforcer(decide, replace=True)
            for chunk in chunks:
                enforcer.feed(chunk)
            enforcer.end()
        return run

    def reassembled(chunks: list[bytes]) -> Any:
        def run() -> None:
            accumulator = MessageAccumulator()
            for chunk in chunks:
                accumulator.feed(chunk)
            accumulator.close()
        return run

    unit = per_call_us(lambda: json.loads(tool_whole), repeat)
    capture = per_call_us(reassembled(tool_chunks), repeat)
    base_tool, with_tool = per_call_us(relay(tool_chunks), repeat), per_call_us(enforced(tool_chunks), repeat)
    base_text, with_text = per_call_us(relay(text_chunks), repeat), per_call_us(enforced(text_chunks), repeat)
    whole = per_call_us(lambda: rewrite_message(tool_whole, decide, replace=True), repeat)
    print("1. the filter alone (per answer, best of 5 x", repeat, "runs)")
    print(f"   streamed answer with one tool call ({len(tool_chunks)} writes): relayed {base_tool:.1f} us, "
          f"held and checked {with_tool:.1f} us -> +{with_tool - base_tool:.1f} us per tool call")
    print(f"   non-streamed answer with one tool call ({len(tool_whole)} bytes): parsed and checked "
          f"{whole:.1f} us")
    print(f"   for scale, on this machine now: json.loads of that body {unit:.1f} us; the same stream "
          f"reassembled as capture already does for every call {capture:.1f} us "
          f"(holding and checking = {(with_tool - base_tool) / capture:.2f}x that)")
    print(f"   streamed answer without tool calls ({len(text_chunks)} writes): relayed {base_text:.1f} us, "
          f"through the filter {with_text:.1f} us (+{with_text - base_text:.1f} us)")


def micro_providers(repeat: int) -> None:
    """The OpenAI and Gemini filters alone: one forbidden tool call held, checked and replaced."""
    from smoltbot.gateway.enforce.gemini import GeminiSseEnforcer
    from smoltbot.gateway.enforce.openai_chat import ChatStreamEnforcer
    from smoltbot.gateway.enforce.openai_responses import ResponsesStreamEnforcer
    from smoltbot.gateway.providers import ChatCompletionReassembler, GeminiReassembler, ResponsesReassembler
    from tests.support.gemini_standin import gemini_chunks
    from tests.support.openai_responses_wire import responses_events
    from tests.support.openai_standin import chat_chunks, plan_reply
    from tests.support.standin_server import Seed, canonical

    enforce = normalize_card(card("enforce"), agent_id=AGENT)

    def decide(name: str, tool_input: Any, tool_use_id: str) -> Any:
        return check_tool_call(enforce, name, tool_input, tool_use_id)

    def tool(name: str) -> dict[str, Any]:
        return {"type": "function", "name": name, "parameters": {
            "type": "object", "properties": {"path": {"type": "string", "enum": ["/home/a/notes"]}}}}

    def openai_stream(responses: bool, scenario: str, name: str = "read_file") -> list[bytes]:
        tools = [tool(name)] if responses else [{"type": "function", "function": {
            k: v for k, v in tool(name).items() if k != "type"}}]
        payload: dict[str, Any] = {"model": "gpt-5.1", "tools": tools}
        payload.update({"input": "bench"} if responses else {"messages": [{"role": "user", "content": "b"}]})
        seed = canonical(payload)
        plan = plan_reply(scenario, Seed(seed), payload, {}, len(seed))
        return responses_events(plan, payload) if responses else chat_chunks(plan, include_usage=True)

    def gemini_stream(scenario: str, name: str = "read_file") -> list[bytes]:
        payload = {"contents": [{"role": "user", "parts": [{"text": "bench"}]}], "tools": [
            {"functionDeclarations": [{"name": name, "parameters": tool(name)["parameters"]}]}]}
        chunks = gemini_chunks(scenario, Seed(canonical(payload)), payload, "gemini-2.5-pro")
        return [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks]

    kinds = [("OpenAI Chat Completions", ChatStreamEnforcer, ChatCompletionReassembler,
              [openai_stream(False, "tool_calls", n) for n in ("read_file", "bash")],
              openai_stream(False, "text")),
             ("OpenAI Responses", ResponsesStreamEnforcer, ResponsesReassembler,
              [openai_stream(True, "reasoning_tool_calls", n) for n in ("read_file", "bash")],
              openai_stream(True, "reasoning")),
             ("Gemini alt=sse", GeminiSseEnforcer, GeminiReassembler,
              [gemini_stream("function_call", n) for n in ("read_file", "bash")], gemini_stream("text"))]
    print("   other providers, streamed (per answer, best of 5 x", repeat, "runs; added to relaying the "
          "same writes as they are):")
    for label, enforcer_class, reassembler_class, (allowed, stopped), text_chunks in kinds:
        def through(chunks: list[bytes], make: Any = enforcer_class) -> Any:
            def run() -> None:
                enforcer = make(decide, replace=True)
                for chunk in chunks:
                    enforcer.feed(chunk)
                enforcer.end()
            return run

        def reassembled(chunks: list[bytes], make: Any = reassembler_class) -> Any:
            def run() -> None:
                reassembler = make()
                for chunk in chunks:
                    reassembler.feed(chunk)
                reassembler.close()
            return run

        def added(chunks: list[bytes]) -> float:
            return per_call_us(through(chunks), repeat) - per_call_us(lambda: [c for c in chunks], repeat)

        capture = per_call_us(reassembled(allowed), repeat)
        held, replaced, text = added(allowed), added(stopped), added(text_chunks)
        print(f"   {label}: one allowed tool call ({len(allowed)} writes) held and checked +{held:.1f} us "
              f"({held / capture:.2f}x the capture's reassembly of that stream, {capture:.1f} us); "
              f"a forbidden one replaced +{replaced:.1f} us; no tool call ({len(text_chunks)} writes) "
              f"+{text:.1f} us")


async def timed_call(client: httpx.AsyncClient, url: str, credential: str, scenario: str,
                     provider: str = "anthropic") -> float:
    if provider == "openai":  # a Responses call, as Codex makes them
        tools = [{"type": "function", "name": t["name"], "parameters": t["input_schema"]} for t in TOOLS]
        body = json.dumps({"model": "gpt-5.1", "stream": True, "tools": tools, "input": "bench"}).encode()
        headers = {"authorization": f"Bearer {credential}", "x-standin-scenario": scenario,
                   "content-type": "application/json"}
        path = "/openai/v1/responses"
    else:
        body = json.dumps({"model": "claude-opus-4-7", "max_tokens": 256, "stream": True, "tools": TOOLS,
                           "messages": [{"role": "user", "content": "bench"}]}).encode()
        headers = {"x-api-key": credential, "x-standin-scenario": scenario,
                   "content-type": "application/json", "anthropic-version": "2023-06-01"}
        path = "/anthropic/v1/messages"
    start = time.perf_counter()
    response = await client.post(url + path, content=body, headers=headers)
    elapsed = (time.perf_counter() - start) * 1000
    assert response.status_code == 200, response.text
    return elapsed


async def end_to_end(standin: AnthropicStandin, openai_standin: OpenAIStandin, calls: int) -> None:
    """Two gateways on one Registry (one with its enforcer switched off, as the relay was before
    enforce mode) and two agents (an observe card, an enforce card); the five kinds of call are made
    in turn, call by call, so that load changes on the machine touch them all alike."""
    from smoltbot.core.grpc_client import open_channel
    from smoltbot.core.tls import client_tls

    home = Path(tempfile.mkdtemp(prefix="smoltbot-bench-enforce-"))
    settings = load_settings(home=home, hash_secret="bench-secret", registry_address="127.0.0.1:0",
                             observer_address="127.0.0.1:1", upstream_url=standin.base_url,
                             openai_upstream_url=openai_standin.base_url,
                             public_api_url="http://127.0.0.1:8000")
    registry = await build_registry(settings)
    await registry.start()
    address = f"127.0.0.1:{registry.port}"
    plain = await start_gateway(settings, registry_address=address, observer_address="127.0.0.1:1")
    plain.gateway.proxy._enforcer = None  # the relay as it was before enforce mode
    enforcing = await start_gateway(settings, registry_address=address, observer_address="127.0.0.1:1")
    channel = open_channel(address, client_tls(settings, address, address))
    stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
    secret = load_hash_secret(home, settings.hash_secret)
    credentials = {"observe": CREDENTIAL + "-observe", "enforce": CREDENTIAL + "-enforce",
                   "openai observe": "sk-proj-bench-observe-0123456789",
                   "openai enforce": "sk-proj-bench-enforce-0123456789"}
    async with httpx.AsyncClient() as client:
        for mode, credential in credentials.items():
            hashed = agent_hash(credential, secret)
            resolved = await stub.ResolveAgent(registry_service_pb2.ResolveAgentRequest(agent_hash=hashed))
            await stub.PutCard(registry_service_pb2.PutCardRequest(
                agent_id=resolved.agent.agent_id, agent_hash=hashed,
                card_json=json.dumps(card(mode.removeprefix("openai ")))))
        kinds = {
            "no enforcer, text": (plain, "observe", "thinking"),
            "observe card, text": (enforcing, "observe", "thinking"),
            "enforce card, text": (enforcing, "enforce", "thinking"),
            "observe card, tool call": (enforcing, "observe", "thinking_tool_use"),
            "enforce card, tool call": (enforcing, "enforce", "thinking_tool_use"),
            "openai: no enforcer, text": (plain, "openai observe", "reasoning"),
            "openai: observe card, text": (enforcing, "openai observe", "reasoning"),
            "openai: enforce card, text": (enforcing, "openai enforce", "reasoning"),
            "openai: observe, tool call": (enforcing, "openai observe", "reasoning_tool_calls"),
            "openai: enforce, tool call": (enforcing, "openai enforce", "reasoning_tool_calls"),
        }
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for n in range(calls + 20):
            for name, (gateway, mode, scenario) in kinds.items():
                provider = "openai" if mode.startswith("openai") else "anthropic"
                elapsed = await timed_call(client, gateway.base_url, credentials[mode], scenario, provider)
                if n >= 20:  # the first calls warm identities and cards
                    times[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"2. through the gateway: streamed calls, {calls} of each kind in turn, median latency")
    for name, value in median.items():
        print(f"   {name:<26} {value:.3f} ms")
    base = median["no enforcer, text"]
    print(f"   observe card / no enforcer: {median['observe card, text'] / base:.3f}; "
          f"enforce card without tool calls / no enforcer: {median['enforce card, text'] / base:.3f}")
    added = median["enforce card, tool call"] - median["observe card, tool call"]
    print(f"   enforce / observe with a tool call: "
          f"{median['enforce card, tool call'] / median['observe card, tool call']:.3f} "
          f"({added * 1000:+.0f} us per call)")
    base = median["openai: no enforcer, text"]
    observe, enforce = median["openai: observe card, text"], median["openai: enforce card, text"]
    tool_ratio = median["openai: enforce, tool call"] / median["openai: observe, tool call"]
    print(f"   OpenAI Responses: observe card / no enforcer: {observe / base:.3f}; enforce card without "
          f"tool calls / no enforcer: {enforce / base:.3f}; enforce / observe with a tool call: "
          f"{tool_ratio:.3f}")
    await channel.close()
    for gateway in (plain, enforcing):
        await gateway.stop()
    await registry.stop(0.5)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--micro", type=int, default=2000)
    args = parser.parse_args()
    async with AnthropicStandin() as standin, OpenAIStandin() as openai_standin:
        await micro(standin, args.micro)
        micro_providers(args.micro)
        await end_to_end(standin, openai_standin, args.calls)


if __name__ == "__main__":
    asyncio.run(main())
