"""What an alert is: the event kinds a subscription may ask for, violation severities, the
event body a receiver gets (smoltbot JSON or a Slack-compatible ``{"text": ...}``), and the
idempotency key of one event for one subscription."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DRIFT",
    "EVENTS",
    "FAILURE_RATE",
    "FORMATS",
    "MISSED_ESCALATION",
    "RECORD_SET_ASIDE",
    "SEVERITIES",
    "VIOLATION",
    "AlertEvent",
    "delivery_id_for",
    "render_body",
    "severity_rank",
]

VIOLATION = "violation"
MISSED_ESCALATION = "missed_escalation"
DRIFT = "drift"
FAILURE_RATE = "failure_rate"
RECORD_SET_ASIDE = "record_set_aside"
EVENTS = (VIOLATION, MISSED_ESCALATION, DRIFT, FAILURE_RATE, RECORD_SET_ASIDE)

#: Violation severities, lowest first (core.aap.verification gives medium, high, critical).
SEVERITIES = ("low", "medium", "high", "critical")
FORMATS = ("json", "slack")


def severity_rank(severity: str) -> int:
    """Position in SEVERITIES; an unknown severity ranks highest, so it is never held back."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return len(SEVERITIES)


@dataclass(frozen=True)
class AlertEvent:
    """One thing that happened to an agent, as the feed found it in the stored records."""

    #: One of EVENTS.
    event: str
    #: Unique for this event among all of the agent's events of this kind (e.g. the trace id).
    key: str
    agent_id: str
    #: ISO 8601 UTC time of what happened.
    occurred_at: str
    summary: str
    data: dict[str, Any]

    @property
    def event_key(self) -> str:
        return f"{self.event}:{self.key}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "event": self.event,
                "agent_id": self.agent_id,
                "occurred_at": self.occurred_at,
                "summary": self.summary,
                "data": self.data,
            },
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        )


def delivery_id_for(subscription_id: str, event_key: str) -> str:
    """The delivery id, which is also the idempotency key: the same for one event and one
    subscription however often the event is found or the delivery tried."""
    digest = hashlib.sha256(f"{subscription_id}\n{event_key}".encode()).hexdigest()
    return "ad-" + digest[:40]


def render_body(
    event_json: str, *, delivery_id: str, subscription_id: str, fmt: str, dashboard_url: str = ""
) -> bytes:
    """The bytes sent for a stored event: the smoltbot event with its ids, or Slack's shape."""
    event = json.loads(event_json)
    if fmt == "slack":
        link = f" <{dashboard_url}/agents/{event['agent_id']}|open>" if dashboard_url else ""
        text = (
            f"smoltbot {event['event'].replace('_', ' ')} for {event['agent_id']}: {event['summary']}{link}"
        )
        return json.dumps({"text": text}, ensure_ascii=False).encode()
    body = {"id": delivery_id, "subscription_id": subscription_id, **event}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
