"""The Observer's read side and tool-execution reports, proto-free: what the servicer calls.

Traces come back as trace.proto JSON dicts (AAP fields + verification + observation).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from smoltbot.core.errors import InvalidArgument, NotFound, Unauthenticated
from smoltbot.core.ids import (
    validate_agent_hash,
    validate_session_id,
    validate_tool_use_id,
    validate_trace_id,
)
from smoltbot.core.pagination import decode_page_token, next_page, page_size
from smoltbot.core.settings import Settings
from smoltbot.observer.enforcement import ENFORCEMENT_ACTIONS
from smoltbot.observer.evidence_store import EvidenceStore, SessionHistory
from smoltbot.observer.integrity import Integrity
from smoltbot.observer.providers import PROVIDERS
from smoltbot.observer.record_kinds import TRACE_KINDS
from smoltbot.observer.registry_client import RegistryClient
from smoltbot.observer.trace_store import TraceStore
from smoltbot.observer.usage_store import GROUP_BYS, SessionSummary, SessionUsage, UsageStore, UsageSums
from smoltbot.observer.validation import validate_agent_id, validate_session_filter

__all__ = ["MAX_SESSIONS_PER_READ", "Queries", "parse_order_by"]

#: Sessions one GetSessionsUsage names at most: a page of sessions as the dashboard and
#: `smoltbot sessions` show them, in one statement per table whatever the page.
MAX_SESSIONS_PER_READ = 100

_ORDERS = {"timestamp desc": True, "timestamp asc": False}


def parse_order_by(order_by: str) -> bool:
    """True for newest first. "" is the default ("timestamp desc")."""
    normalized = " ".join(order_by.lower().split())
    if not normalized:
        return True
    if normalized not in _ORDERS:
        raise InvalidArgument("order_by", f"must be 'timestamp desc' or 'timestamp asc', got {order_by!r}")
    return _ORDERS[normalized]


def _scope(**filters: Any) -> str:
    # A token is only valid for the same filters and order.
    digest = hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"traces:{digest}"


class Queries:
    def __init__(self, store: TraceStore, registry: RegistryClient, settings: Settings,
                 usage: UsageStore | None = None) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.usage = usage if usage is not None else UsageStore(store.db)

    async def agent_usage(self, agent_id: str, since: datetime | None, until: datetime | None,
                          group_by: str) -> tuple[UsageSums, list[tuple[str, UsageSums]], str]:
        validate_agent_id(agent_id, required=True)
        group_by = group_by or "day"
        if group_by not in GROUP_BYS:
            raise InvalidArgument("group_by", f"must be one of {', '.join(GROUP_BYS)}, got {group_by!r}")
        if since is not None and until is not None and until < since:
            raise InvalidArgument("until", "must not be before since")
        total, groups = await self.usage.agent_usage(agent_id, since, until, group_by)
        return total, groups, group_by

    async def history_sessions(self, agent_id: str) -> tuple[int, int]:
        """(sessions whose history was checked, sessions whose history checks out): docs/evidence.md."""
        validate_agent_id(agent_id, required=True)
        return await EvidenceStore(self.store.db, self.settings).agent_sessions(agent_id)

    async def sessions_usage(self, agent_id: str, session_ids: Sequence[str]) -> list[SessionSummary]:
        """The totals of the agent's sessions among `session_ids` that have recorded calls."""
        validate_agent_id(agent_id, required=True)
        if len(session_ids) > MAX_SESSIONS_PER_READ:
            raise InvalidArgument("session_ids", f"must name at most {MAX_SESSIONS_PER_READ} sessions, "
                                                 f"got {len(session_ids)}: ask for the rest in another call")
        for session_id in session_ids:
            validate_session_id(session_id, "session_ids")
        return await self.usage.session_summaries(agent_id, session_ids)

    async def session_usage(self, agent_id: str, session_id: str) -> tuple[SessionUsage, SessionHistory]:
        """The session's usage, and its history checks (where its resent history diverged)."""
        validate_agent_id(agent_id)
        if not session_id:
            raise InvalidArgument("session_id", "is required")
        validate_session_filter(session_id)
        if not agent_id:
            agents = await self.usage.session_agents(session_id)
            if len(agents) > 1:
                raise InvalidArgument("agent_id", f"several agents have a session {session_id!r}: "
                                                  "say which with agent_id")
            agent_id = agents[0] if agents else ""
        found = await self.usage.session(agent_id, session_id) if agent_id else None
        if found is None:
            raise NotFound(f"session {session_id!r} has no recorded model calls",
                           reason="SESSION_NOT_FOUND", session_id=session_id)
        history = await EvidenceStore(self.store.db, self.settings).session_history(agent_id, session_id)
        return found, history

    async def list_traces(self, *, agent_id: str = "", session_id: str = "", verified: bool | None = None,
                          since: datetime | None = None, until: datetime | None = None, size: int = 0,
                          token: str = "", order_by: str = "",
                          record_kind: str = "", provider: str = "",
                          enforcement: Sequence[str] = ()) -> tuple[list[dict[str, Any]], str]:
        descending = parse_order_by(order_by)
        if record_kind and record_kind not in TRACE_KINDS:
            raise InvalidArgument("record_kind",
                                  f"must be one of {', '.join(TRACE_KINDS)} (or empty for both)")
        if provider and provider not in PROVIDERS:
            raise InvalidArgument("provider", f"must be one of {', '.join(PROVIDERS)} (or empty for all)")
        for action in enforcement:
            if action not in ENFORCEMENT_ACTIONS:
                raise InvalidArgument("enforcement",
                                      f"{action!r} is not one of {', '.join(ENFORCEMENT_ACTIONS)}")
        enforcement = sorted(set(enforcement))
        limit = page_size(size)
        validate_agent_id(agent_id)
        validate_session_filter(session_id)
        if since is not None and until is not None and until < since:
            raise InvalidArgument("until", "must not be before since")
        scope = _scope(agent_id=agent_id, session_id=session_id, verified=verified, since=since, until=until,
                       descending=descending, **({"record_kind": record_kind} if record_kind else {}),
                       **({"provider": provider} if provider else {}),
                       **({"enforcement": ",".join(enforcement)} if enforcement else {}))
        after = decode_page_token(token, scope=scope, types=(datetime, str))
        rows = await self.store.list_traces(
            agent_id=agent_id, session_id=session_id, verified=verified, since=since, until=until,
            descending=descending, after=after, limit=limit + 1,
            record_kind=record_kind, provider=provider, enforcement=enforcement,
        )
        page, next_token = next_page(rows, limit, scope=scope, key=lambda row: (row[0], row[1]))
        return [row[2] for row in page], next_token

    async def get_trace(self, trace_id: str) -> dict[str, Any]:
        validate_trace_id(trace_id)
        trace = await self.store.get_trace(trace_id)
        if trace is None:
            raise NotFound(f"trace {trace_id!r} not found", reason="TRACE_NOT_FOUND", trace_id=trace_id)
        return trace

    async def integrity(self, agent_id: str) -> Integrity:
        validate_agent_id(agent_id, required=True)
        return await self.store.integrity(agent_id, self.settings.integrity_window)

    async def report_tool_execution(
        self, agent_id: str, agent_hash: str, tool_use_id: str, executed: bool
    ) -> int:
        """Marks the agent's trace of that tool call executed (or not); a report that arrives
        before the trace is kept and applied when the trace is stored. Returns traces marked."""
        if not agent_hash:
            raise Unauthenticated("agent_hash is required to report on behalf of an agent")
        validate_agent_hash(agent_hash)
        validate_agent_id(agent_id, required=True)
        validate_tool_use_id(tool_use_id)
        await self.registry.check_owner(agent_id, agent_hash.lower())
        return await self.store.report_execution(agent_id, tool_use_id, executed)
