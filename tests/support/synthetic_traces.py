"""Synthetic observer rows written straight into the tables (a bulk loader, not the API): what
one processed exchange leaves behind (exchange record, trace, violation, usage row, drift input,
a tool-execution report), with the shapes the observer writes. For retention tests and
`bench/trace_scale.py`, where millions of traces through the real pipeline would take hours.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from smoltbot.core.storage import Database
from smoltbot.observer.tables import (
    drift_pending,
    exchange_payloads,
    exchange_usage,
    exchanges,
    tool_executions,
    trace_violations,
    traces,
)

__all__ = ["TABLES", "bulk_insert", "exchange_rows", "merge"]

#: Insert order (parents before the rows that reference them).
TABLES = (exchanges, exchange_payloads, traces, trace_violations, drift_pending, exchange_usage,
          tool_executions)


def _trace(trace_id: str, agent_id: str, session_id: str, at: datetime, index: int, violated: bool) -> str:
    return json.dumps({
        "trace_id": trace_id, "agent_id": agent_id, "card_id": f"card-{agent_id}",
        "timestamp": at.isoformat(),
        "action": {"type": "execute", "name": "read_file", "category": "bounded",
                   "parameters": {"path": f"/tmp/file-{index}.txt"}},
        "decision": {"alternatives_considered": [{"option_id": "read_file", "description": "Read the file"}],
                     "selected": "read_file", "selection_reasoning": "The user asked for the file.",
                     "values_applied": ["transparency"]},
        "escalation": {"evaluated": True, "required": False, "reason": "no trigger matched"},
        "context": {"session_id": session_id, "conversation_turn": 1, "metadata": {
            "exchange_id": trace_id[:32], "decision_index": 0}},
        "verification": {"verified": not violated, "violations": [
            {"type": "UNBOUNDED_ACTION", "severity": "high", "description": "not in bounded_actions"}
        ] if violated else []},
        "observation": {"exchange_id": trace_id[:32], "decision_index": 0, "record_kind": "decision",
                        "model": "claude-sonnet-4-5", "outcome": "complete", "analyzer": "local",
                        "reasoning": {"present": True, "length": 42}},
    }, separators=(",", ":"))


def exchange_rows(agent_id: str, agent_hash: str, at: datetime, index: int, *, session_id: str = "",
                  payload: bool = False, state: str = "done", violated: bool | None = None,
                  report: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The rows of one exchange of `agent_id` that happened at `at` (`index` makes its ids);
    `payload`: its raw payload is still stored (a failed exchange's)."""
    exchange_id = f"{abs(hash((agent_id, index))):016x}{index:016x}"[-32:]
    trace_id = f"{exchange_id}-0"
    session_id = session_id or f"sess-{agent_id}-{index // 50}"
    violated = index % 7 == 0 if violated is None else violated
    tool_use_id = f"toolu_{exchange_id}"
    rows: dict[str, list[dict[str, Any]]] = {table.name: [] for table in TABLES}
    rows["exchanges"].append({
        "exchange_id": exchange_id, "agent_hash": agent_hash, "agent_id": agent_id, "session_id": session_id,
        "received_at": at, "occurred_at": at, "payload_bytes": 100, "state": state, "attempts": 1,
        "next_attempt_at": at, "lease_owner": None, "lease_expires_at": None, "last_error": None,
        "finished_at": at, "record_kind": "decision",
    })
    if payload:
        rows["exchange_payloads"].append({"exchange_id": exchange_id, "payload": b"raw request body " * 4})
    rows["traces"].append({
        "trace_id": trace_id, "exchange_id": exchange_id, "decision_index": 0, "agent_id": agent_id,
        "session_id": session_id, "card_id": f"card-{agent_id}", "timestamp": at, "verified": not violated,
        "violation_count": 1 if violated else 0, "action_type": "execute", "action_name": "read_file",
        "tool_use_id": tool_use_id, "executed": True if report else None, "has_reasoning": True,
        "model_analysis": False, "failed": False, "outcome": "complete", "created_at": at,
        "trace_json": _trace(trace_id, agent_id, session_id, at, index, violated), "record_kind": "decision",
    })
    if violated:
        rows["trace_violations"].append({"trace_id": trace_id, "position": 0, "agent_id": agent_id,
                                         "type": "UNBOUNDED_ACTION", "severity": "high"})
    rows["drift_pending"].append({"trace_id": trace_id, "agent_id": agent_id, "agent_hash": agent_hash,
                                  "card_id": f"card-{agent_id}", "timestamp": at})
    rows["exchange_usage"].append({
        "exchange_id": exchange_id, "agent_id": agent_id, "session_id": session_id, "occurred_at": at,
        "api": "messages", "provider": "anthropic", "model": "claude-sonnet-4-5", "input_tokens": 1200,
        "cache_read_tokens": 0, "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0,
        "cache_write_unknown_ttl_tokens": 0, "output_tokens": 300, "reasoning_tokens": None,
        "price_conditions": "", "cost_usd": "0.0081", "cost_picousd": 8_100_000_000, "cost_reason": "",
        "price_checked": "2026-11-01", "session_rung": "header", "sub_agent_source": "", "sub_agent_id": None,
        "parent_agent_id": None, "agent_type": "", "request_kind": "", "is_sub_agent": False,
        "starts_turn": True, "turn_position": 1, "conversation_turn": 1 + index % 50,
    })
    if report:
        rows["tool_executions"].append({"agent_id": agent_id, "tool_use_id": tool_use_id, "executed": True,
                                        "reported_at": at})
    return rows


def merge(parts: Iterable[dict[str, list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    merged: dict[str, list[dict[str, Any]]] = {table.name: [] for table in TABLES}
    for part in parts:
        for name, rows in part.items():
            merged[name].extend(rows)
    return merged


async def bulk_insert(db: Database, rows: dict[str, list[dict[str, Any]]], chunk: int = 2000) -> None:
    """Multi-row inserts, one transaction per chunk of each table (parents first)."""
    for table in TABLES:
        items = rows.get(table.name) or []
        for start in range(0, len(items), chunk):
            async with db.begin() as conn:
                await conn.execute(sa.insert(table), items[start:start + chunk])
