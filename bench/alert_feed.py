"""What alerts cost the observer: one feed pass, and sending deliveries.

    .venv/bin/python bench/alert_feed.py [--traces 2000] [--deliveries 300]

On SQLite in a temporary directory: the time of one `AlertFeed.run_once` for one subscribed
agent with 0 (the baseline: a pass that finds nothing) and then `--traces` violating traces
stored within the settle window (each pass re-reads the window; the outbox ignores what it
queued before, so the second pass over the same traces shows the steady cost). Then
`--deliveries` deliveries sent by `WebhookSender` to a local aiohttp receiver, beside the same
number of plain httpx POSTs of the same bodies to it (the baseline: what the network and the
receiver cost without signing, leasing and recording).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from aiohttp import web

from smoltbot.core.settings import load_settings
from smoltbot.core.storage import migrate, open_database, utcnow
from smoltbot.observer.alerts.feed import AlertFeed
from smoltbot.observer.alerts.sender import WebhookSender
from smoltbot.observer.alerts.store import AlertStore, SubscriptionRow
from smoltbot.observer.tables import trace_violations, traces

AGENT = "smolt-0a1b2c3d"


def _trace_rows(count: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    now = utcnow()
    rows, violations = [], []
    for n in range(count):
        trace_id = uuid.uuid4().hex
        rows.append(
            {
                "trace_id": trace_id,
                "exchange_id": uuid.uuid4().hex,
                "decision_index": 0,
                "agent_id": AGENT,
                "session_id": None,
                "card_id": "ac-1",
                "timestamp": now,
                "verified": False,
                "violation_count": 2,
                "action_type": "execute",
                "action_name": f"delete_file_{n % 7}",
                "tool_use_id": None,
                "executed": None,
                "has_reasoning": True,
                "model_analysis": False,
                "failed": False,
                "outcome": "complete",
                "created_at": now,
                "trace_json": "{}",
                "record_kind": "decision",
            }
        )
        violations += [
            {
                "trace_id": trace_id,
                "position": 0,
                "agent_id": AGENT,
                "type": "forbidden_action",
                "severity": "critical",
            },
            {
                "trace_id": trace_id,
                "position": 1,
                "agent_id": AGENT,
                "type": "missed_escalation",
                "severity": "high",
            },
        ]
    return rows, violations


async def _timed(call) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def main(trace_count: int, delivery_count: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(
            home=home, hash_secret="bench", webhook_allow_private=True, webhook_backoff_base=0.01
        )
        db = open_database(settings.effective_database_url)
        await migrate(db)
        store = AlertStore(db)
        await store.add_subscription(
            SubscriptionRow(
                "as-" + uuid.uuid4().hex,
                AGENT,
                "http://127.0.0.1:9/hook",
                "whsec_bench",
                ("violation", "missed_escalation", "record_set_aside", "failure_rate", "drift"),
                "low",
                0.5,
                "json",
                utcnow() - timedelta(seconds=1),
            )
        )
        feed = AlertFeed(store, settings)
        await feed.run_once()  # connections opened, statements compiled
        empty = await _timed(feed.run_once)
        rows, violations = _trace_rows(trace_count)
        async with db.begin() as conn:
            for start in range(0, len(rows), 100):
                await conn.execute(traces.insert(), rows[start : start + 100])
            for start in range(0, len(violations), 200):
                await conn.execute(trace_violations.insert(), violations[start : start + 200])
        first = await _timed(feed.run_once)
        again = await _timed(feed.run_once)
        print(f"feed pass, nothing new:                     {empty * 1000:8.1f} ms (baseline)")
        print(
            f"feed pass, {trace_count} traces queued (x2 events): {first * 1000:8.1f} ms  "
            f"({first / empty:.0f}x; {first / (2 * trace_count) * 1e6:.0f} us per delivery queued)"
        )
        print(
            f"feed pass, the same {trace_count} traces again:  {again * 1000:8.1f} ms  ({again / empty:.0f}x)"
        )

        received = 0

        async def handle(request: web.Request) -> web.Response:
            nonlocal received
            await request.read()
            received += 1
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/hook"
        async with db.begin() as conn:
            from smoltbot.observer.tables import alert_deliveries, alert_subscriptions

            await conn.execute(alert_subscriptions.update().values(url=url))
            await conn.execute(alert_deliveries.delete())
        rows, violations = _trace_rows(delivery_count // 2)
        async with db.begin() as conn:
            await conn.execute(traces.delete())
            await conn.execute(trace_violations.delete())
            for start in range(0, len(rows), 100):
                await conn.execute(traces.insert(), rows[start : start + 100])
            for start in range(0, len(violations), 200):
                await conn.execute(trace_violations.insert(), violations[start : start + 200])
        queued = await feed.run_once()
        sender = WebhookSender(store, settings, owner="bench")

        async def send_all() -> None:
            while await sender.run_once():
                pass

        sent = await _timed(send_all)
        await sender.close()
        body = b'{"event":"violation","summary":"' + b"x" * 300 + b'"}'
        async with httpx.AsyncClient() as client:

            async def plain() -> None:
                for start in range(0, queued, 32):
                    await asyncio.gather(
                        *(client.post(url, content=body) for _ in range(min(32, queued - start)))
                    )

            baseline = await _timed(plain)
        await runner.cleanup()
        await db.close()
        print(f"{queued} deliveries, plain httpx POSTs:        {queued / baseline:8.0f} /s (baseline)")
        print(
            f"{queued} deliveries by WebhookSender:          {queued / sent:8.0f} /s  "
            f"({sent / baseline:.1f}x the time: signing, leasing and recording each; received {received})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--deliveries", type=int, default=300)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.traces, arguments.deliveries))
