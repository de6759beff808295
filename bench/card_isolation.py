"""One agent's heavy card must not slow anyone else's traces.

    python bench/card_isolation.py [--victim-rate 10] [--heavy-rate 20] [--seconds 8] [--tools 8]

Two parts:

* Per trace: the cost of checking one tool-call trace against a card at the limits
  (`MAX_ESCALATION_TRIGGERS` triggers sharing `MAX_CARD_CONDITION_TERMS` terms), as
  `apply_escalation` + `verify_trace` do it for every trace: with the parsed conditions cached
  per card (today), and with every condition parsed again each time (what was done before).
* End to end: a real Registry and Observer (SQLite, in this process; worker processes as
  `smoltbot up` has them). A victim agent with the default card sends `--victim-rate`
  exchanges/s for `--seconds`: alone, beside another agent sending `--heavy-rate` exchanges/s
  of `--tools` tool calls each with the default card, then the same load with the heavy card.
  Reported: the victim's time-to-trace (sent -> its exchange stored as traces), p50/p95, and
  the ratios (beside the heavy card / alone, and / beside the same load with the default card).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SERVICE_TOKEN = "bench-card-isolation-token-0123456789abcdef"


def heavy_card() -> dict[str, Any]:
    from smoltbot.core.aap.cards import MAX_CARD_BYTES, MAX_CARD_CONDITION_TERMS, MAX_ESCALATION_TRIGGERS
    from smoltbot.core.aap.conditions import MAX_CONDITION_LENGTH, MAX_CONDITION_TERMS

    # As long as the card's size limit allows (a little room for the rest of the card).
    length = min(MAX_CONDITION_LENGTH, (MAX_CARD_BYTES - 2048) // MAX_ESCALATION_TRIGGERS - 64)
    triggers = []
    for t in range(MAX_ESCALATION_TRIGGERS):
        terms = []
        for i in range(min(MAX_CONDITION_TERMS, MAX_CARD_CONDITION_TERMS // MAX_ESCALATION_TRIGGERS)):
            term = f"parameters.field_{t}_{i}.sub == 'v{i}'"
            if len(" or ".join([*terms, term])) > length:
                break
            terms.append(term)
        triggers.append({"condition": " or ".join(terms), "action": "escalate", "reason": f"heavy {t}"})
    return {
        "card_version": "unified/2026-04-26",
        "principal": {"type": "human", "identifier": "bench", "relationship": "delegated_authority"},
        "values": {"declared": ["transparency", "honesty", "harm_prevention", "principal_benefit"]},
        "autonomy": {"bounded_actions": [], "escalation_triggers": triggers},
        "audit": {"retention_days": 30, "queryable": False},
    }


def per_trace(rounds: int = 200) -> dict[str, float]:
    from datetime import UTC, datetime

    from smoltbot.core.aap import conditions, verification
    from smoltbot.core.aap.cards import normalize_card

    card = normalize_card(heavy_card(), agent_id="smolt-bench")
    trace = {"trace_id": "tr-1", "card_id": card["card_id"], "agent_id": "smolt-bench",
             "action": {"type": "execute", "name": "read_file", "parameters": {"path": "/srv/a"}},
             "decision": {"values_applied": ["transparency"], "confidence": 0.9}, "context": {"metadata": {}}}
    now = datetime.now(UTC)

    def check() -> None:
        verification.verify_trace(verification.apply_escalation(dict(trace), card), card, now=now)

    check()  # parses once into the per-card cache
    start = time.perf_counter()
    for _ in range(rounds):
        check()
    cached = (time.perf_counter() - start) / rounds
    texts = [t["condition"] for t in card["autonomy"]["escalation_triggers"]]
    start = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            conditions.parse(text)
    parse_once = (time.perf_counter() - start) / rounds
    # Before, every trigger was parsed in apply_escalation and again in verify_trace.
    return {"triggers": len(texts), "terms": conditions.parse(texts[0]).terms,
            "check_cached_ms": cached * 1000, "check_parsing_each_time_ms": (cached + 2 * parse_once) * 1000}


async def end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    import grpc
    import sqlalchemy as sa

    from smoltbot.core.service_auth import ServiceCredential, attach_credential
    from smoltbot.core.settings import load_settings
    from smoltbot.core.storage import open_database
    from smoltbot.observer.server import build_server as build_observer
    from smoltbot.registry.server import build_server as build_registry
    from smoltbot.v1 import observer_service_pb2 as pb
    from smoltbot.v1 import observer_service_pb2_grpc, registry_service_pb2_grpc
    from smoltbot.v1 import registry_service_pb2 as rpb
    from tests.integration.observer.exchanges import make_exchange, message, text, thinking, tool_use

    home = Path(tempfile.mkdtemp(prefix="smoltbot-bench-cards-"))
    settings = load_settings(home=home, hash_secret="bench", service_token=SERVICE_TOKEN, log_level="WARNING",
                             registry_address="127.0.0.1:0", observer_address="127.0.0.1:0")
    registry = await build_registry(settings, address="127.0.0.1:0")
    await registry.start()
    settings = settings.model_copy(update={"registry_address": f"127.0.0.1:{registry.port}"})
    observer = await build_observer(settings.model_copy(update={"observer_poll_interval": 0.2}),
                                    address="127.0.0.1:0")
    await observer.start()
    interceptors = attach_credential(ServiceCredential(SERVICE_TOKEN))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{observer.port}", interceptors=interceptors)
    registry_channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}", interceptors=interceptors)
    stub = observer_service_pb2_grpc.ObserverServiceStub(channel)
    registry_stub = registry_service_pb2_grpc.RegistryServiceStub(registry_channel)
    db = open_database(settings.effective_database_url)

    async def agent() -> tuple[str, str]:
        agent_hash = secrets.token_hex(32)
        response = await registry_stub.ResolveAgent(rpb.ResolveAgentRequest(agent_hash=agent_hash))
        return response.agent.agent_id, agent_hash

    _, victim_hash = await agent()
    _, plain_hash = await agent()
    heavy_id, heavy_hash = await agent()
    await registry_stub.PutCard(rpb.PutCardRequest(agent_id=heavy_id, agent_hash=heavy_hash,
                                                   card_json=json.dumps(heavy_card())))
    await asyncio.sleep(0.1)  # exchanges below start after the card was stored

    def victim_exchange() -> Any:
        return make_exchange(victim_hash, message(thinking("Read the readme."),
                                                  tool_use("read_file", {"path": "/srv/readme.md"}),
                                                  stop_reason="tool_use"))

    def load_exchange(agent_hash: str) -> Any:
        calls = [tool_use("read_file", {"path": f"/srv/{i}", **{f"field_0_{i}": {"sub": "x"}}})
                 for i in range(args.tools)]
        return make_exchange(agent_hash, message(thinking("Many reads."), *calls, text("ok"),
                                                 stop_reason="tool_use"))

    async def finished(ids: list[str]) -> set[str]:
        async with db.read() as conn:
            rows = (await conn.execute(sa.text(
                "SELECT exchange_id FROM exchanges WHERE state IN ('done', 'failed')"))).all()
        return {row[0] for row in rows} & set(ids)

    async def run(load_hash: str | None) -> dict[str, float]:
        call = stub.Ingest()
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        stop = asyncio.Event()

        async def send(rate: float, build: Any, victim: bool) -> None:
            start = time.perf_counter()
            for i in range(int(rate * args.seconds)):
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                exchange = build()
                if victim:
                    sent[exchange.exchange_id] = time.perf_counter()
                await call.write(pb.IngestRequest(exchange=exchange))

        async def poll() -> None:
            while not stop.is_set():
                done = await finished([key for key in sent if key not in seen])
                now = time.perf_counter()
                for key in done:
                    seen.setdefault(key, now)
                await asyncio.sleep(0.01)

        async def drain() -> None:
            async for _ack in call:
                pass

        drainer = asyncio.create_task(drain())
        poller = asyncio.create_task(poll())
        senders = [send(args.victim_rate, victim_exchange, True)]
        if load_hash is not None:
            senders.append(send(args.heavy_rate, lambda: load_exchange(load_hash), False))
        await asyncio.gather(*senders)
        await call.done_writing()
        await drainer
        deadline = time.perf_counter() + 60
        while len(seen) < len(sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await poller
        delays = sorted((seen[key] - sent[key]) * 1000 for key in sent if key in seen)
        return {"victim_exchanges": len(sent), "traced": len(delays), "p50_ms": statistics.median(delays),
                "p95_ms": delays[int(0.95 * (len(delays) - 1))]}

    try:
        alone = await run(None)
        beside_plain = await run(plain_hash)
        beside = await run(heavy_hash)
    finally:
        await channel.close()
        await registry_channel.close()
        await db.close()
        await observer.stop(1.0)
        await registry.stop(1.0)
    return {"alone": alone, "beside_default_card": beside_plain, "beside_heavy_card": beside,
            "p50_ratio": beside["p50_ms"] / alone["p50_ms"], "p95_ratio": beside["p95_ms"] / alone["p95_ms"],
            "p50_ratio_vs_default": beside["p50_ms"] / beside_plain["p50_ms"],
            "p95_ratio_vs_default": beside["p95_ms"] / beside_plain["p95_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--victim-rate", type=float, default=10)
    parser.add_argument("--heavy-rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--tools", type=int, default=8, help="tool calls per heavy exchange (one trace each)")
    parser.add_argument("--per-trace-only", action="store_true")
    args = parser.parse_args()
    cost = per_trace()
    print(f"per trace, heavy card ({cost['triggers']} triggers of {cost['terms']} terms): "
          f"{cost['check_cached_ms']:.2f} ms with conditions cached per card, "
          f"{cost['check_parsing_each_time_ms']:.2f} ms parsing them each time "
          f"(x{cost['check_parsing_each_time_ms'] / cost['check_cached_ms']:.1f})")
    if args.per_trace_only:
        return
    result = asyncio.run(end_to_end(args))
    for name in ("alone", "beside_default_card", "beside_heavy_card"):
        row = result[name]
        print(f"victim time-to-trace {name:>19}: p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms "
              f"({row['traced']}/{row['victim_exchanges']} traced)")
    print(f"ratio beside heavy card / alone: p50 x{result['p50_ratio']:.2f}, p95 x{result['p95_ratio']:.2f}; "
          f"/ beside the same load with the default card: p50 x{result['p50_ratio_vs_default']:.2f}, "
          f"p95 x{result['p95_ratio_vs_default']:.2f} "
          f"(load: {args.heavy_rate:g}/s x {args.tools} tool calls)")


if __name__ == "__main__":
    main()
