"""What the observer's telemetry hook costs per stored exchange, on the event loop.

    .venv/bin/python bench/otel_export_cost.py [--exchanges 2000]

For exchanges whose request history is small and ~1 MiB, prints the time of
`ExchangeTelemetry.committed` per exchange: metrics only (export off), and metrics plus spans
(export on, into a queue nobody drains beyond its bound, so the OTLP network time, which is on
the exporter's own thread, is not counted), beside the same run's `Exchange.FromString` of the
payload as a baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from smoltbot.observer import pipeline
from smoltbot.observer.accounting import facts_of
from smoltbot.observer.metrics import ObserverMetrics
from smoltbot.observer.otel.exporter import SpanShipper
from smoltbot.observer.otel.telemetry import ExchangeTelemetry
from smoltbot.observer.queue import Finished, StoredTrace
from smoltbot.v1 import exchange_pb2


class _Nowhere(SpanExporter):
    def export(self, spans):  # type: ignore[no-untyped-def]
        return SpanExportResult.SUCCESS


def _exchange(history_bytes: int) -> exchange_pb2.Exchange:
    filler = "x" * max(0, history_bytes)
    request = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "metadata": {},
               "messages": [{"role": "user", "content": filler}, {"role": "assistant", "content": "ok"},
                            {"role": "user", "content": "Read the config"}]}
    reply = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
             "model": "claude-sonnet-4-5", "stop_reason": "tool_use", "stop_sequence": None,
             "content": [{"type": "text", "text": "Reading it."},
                         {"type": "tool_use", "id": "toolu_1", "name": "read_file",
                          "input": {"path": "a.py"}}],
             "usage": {"input_tokens": 10, "cache_read_input_tokens": 900, "output_tokens": 40}}
    now = datetime.now(UTC)
    stamp = exchange_pb2.ExchangeTimings()
    stamp.started_at.FromDatetime(now - timedelta(seconds=1))
    stamp.first_byte_at.FromDatetime(now - timedelta(milliseconds=700))
    stamp.ended_at.FromDatetime(now)
    return exchange_pb2.Exchange(
        exchange_id=uuid.uuid4().hex, agent_hash="0" * 64, agent_id="smolt-bench", provider="anthropic",
        request=exchange_pb2.CapturedRequest(method="POST", path="/v1/messages",
                                             body=json.dumps(request).encode()),
        response=exchange_pb2.CapturedResponse(status=200, body=json.dumps(reply).encode()),
        timings=stamp, outcome=exchange_pb2.EXCHANGE_OUTCOME_COMPLETE)


def _finished(exchange: exchange_pb2.Exchange, payload: bytes) -> Finished:
    job = pipeline.Job(exchange_id=exchange.exchange_id, agent_id="smolt-bench", session_id="sess-1",
                       card={}, payload=payload, store_reasoning="redacted", observed_at=datetime.now(UTC))
    result = pipeline.compute(job)
    traces = [StoredTrace(trace) for trace in result.traces]
    for stored in traces:
        stored.trace["context"]["conversation_turn"] = 1
    return Finished(exchange.exchange_id, "0" * 64, "smolt-bench", "sess-1", traces,
                    facts=facts_of(exchange, "claude-sonnet-4-5"))


def _per_exchange(run, count: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for index in range(count):
        started = time.perf_counter()
        run(index)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def _row(history: int, count: int) -> str:
    exchange = _exchange(history)
    payload = exchange.SerializeToString()
    finished = _finished(exchange, payload)
    payloads = {finished.exchange_id: payload}
    decode = _per_exchange(lambda _: exchange_pb2.Exchange.FromString(payload), count)
    metrics_only = ExchangeTelemetry(ObserverMetrics())
    plain = _per_exchange(lambda _: metrics_only.committed([finished], payloads), count)
    shipper = SpanShipper(_Nowhere(), max_queue=1_000_000, max_batch=512)
    exporting = ExchangeTelemetry(ObserverMetrics(), shipper)
    spans = _per_exchange(lambda _: exporting.committed([finished], payloads), count)
    shipper.close(30)
    return f"{len(payload):>10} {decode:>12.1f} {plain:>18.1f} {spans:>19.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exchanges", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'payload':>10} {'decode (us)':>12} {'metrics only (us)':>18} {'metrics+spans (us)':>19}")
    for history in (2_000, 1_000_000):
        print(_row(history, args.exchanges))


if __name__ == "__main__":
    main()
