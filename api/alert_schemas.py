"""Request and response models of /v1/agents/{agent_id}/alerts (webhook subscriptions and
their deliveries; docs/alerts.md), and their conversion from the AlertService protos."""

from __future__ import annotations

from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field

from smoltbot.api.schemas import Cursor, Timestamp
from smoltbot.v1 import alert_service_pb2

__all__ = [
    "AlertDelivery",
    "AlertDeliveryList",
    "AlertSubscription",
    "AlertSubscriptionList",
    "AlertSubscriptionRemoved",
    "CreatedAlertSubscription",
    "NewAlertSubscription",
    "delivery_out",
    "subscription_out",
]

EventName = Literal["violation", "missed_escalation", "drift", "failure_rate", "record_set_aside"]


class NewAlertSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2048,
        description="Where to POST events: http:// or https://, no user:password@. "
        "Private and loopback addresses only when the operator allows them.",
        examples=["https://hooks.slack.com/services/T000/B000/XXXX"],
    )
    events: list[EventName] = Field(
        min_length=1, max_length=5, description="The events to send.", examples=[["violation", "drift"]]
    )
    min_severity: Literal["low", "medium", "high", "critical"] = Field(
        default="low", description="Violations below this severity are not sent."
    )
    failure_rate_threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="failure_rate only: the share of failed calls in one window that "
        "raises an alert (default 0.5).",
    )
    format: Literal["json", "slack"] = Field(
        default="json",
        description='"slack": a {"text": ...} body that '
        "Slack's incoming webhooks (and Mattermost, Discord's /slack) take.",
    )


class AlertSubscription(BaseModel):
    subscription_id: str
    agent_id: str
    url: str = Field(description="The full URL (shown to the owner only).")
    destination: str = Field(description="scheme://host[:port] of the URL.")
    events: list[str]
    min_severity: str
    failure_rate_threshold: float
    format: str
    created_at: Timestamp | None = None


class CreatedAlertSubscription(AlertSubscription):
    secret: str = Field(
        description="The signing secret: shown this once, never again. Keep it to check the "
        "smoltbot-signature header of each delivery."
    )


class AlertSubscriptionRemoved(BaseModel):
    agent_id: str
    subscription_id: str


class AlertSubscriptionList(BaseModel):
    items: list[AlertSubscription] = Field(description="Oldest first.")
    next_cursor: Cursor


class AlertDelivery(BaseModel):
    delivery_id: str = Field(description="Also the idempotency key (smoltbot-idempotency-key header).")
    subscription_id: str
    agent_id: str
    event: str
    summary: str
    state: str = Field(description="pending | sending | delivered | failed (given up).")
    attempts: int
    last_status: int = Field(
        description="The receiver's HTTP status on the last attempt; 0: none (timeout, connection refused)."
    )
    last_error: str
    created_at: Timestamp | None = None
    next_attempt_at: Timestamp | None = None
    delivered_at: Timestamp | None = None


class AlertDeliveryList(BaseModel):
    items: list[AlertDelivery] = Field(description="Newest first.")
    next_cursor: Cursor


def _fields(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def subscription_out(subscription: alert_service_pb2.AlertSubscription) -> AlertSubscription:
    return AlertSubscription(**_fields(subscription))


def delivery_out(delivery: alert_service_pb2.AlertDelivery) -> AlertDelivery:
    return AlertDelivery(**_fields(delivery))
