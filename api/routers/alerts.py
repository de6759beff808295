"""/v1/agents/{agent_id}/alerts: the owner's webhook subscriptions, and the history of their
deliveries (docs/alerts.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from smoltbot.api.alert_schemas import (
    AlertDeliveryList,
    AlertSubscriptionList,
    AlertSubscriptionRemoved,
    CreatedAlertSubscription,
    NewAlertSubscription,
    delivery_out,
    subscription_out,
)
from smoltbot.api.backends import AlertStub, Backends
from smoltbot.api.dependencies import AgentIdPath, CallerHash, Cursor, Limit, get_backends, require_owner
from smoltbot.api.errors import READ_ERRORS, WRITE_ERRORS
from smoltbot.api.strict_json import StrictJsonRoute
from smoltbot.v1 import alert_service_pb2 as pb

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/agents/{agent_id}/alerts", tags=["alerts"], responses=READ_ERRORS, route_class=StrictJsonRoute
)


def get_alerts(backends: Annotated[Backends, Depends(get_backends)]) -> AlertStub:
    """The Observer's AlertService, on the Observer's channel (and its interceptor)."""
    return backends.alerts


Alerts = Annotated[AlertStub, Depends(get_alerts)]
SubscriptionIdPath = Annotated[
    str,
    Path(pattern=r"^as-[0-9a-f]{1,45}$", description="A subscription id (as-...).", examples=["as-3f9c2a71"]),
]
_SUBSCRIPTION_FILTER = Query(
    pattern=r"^as-[0-9a-f]{1,45}$", description="Only this subscription's deliveries."
)


@router.post(
    "",
    response_model=CreatedAlertSubscription,
    responses=WRITE_ERRORS,
    summary="Subscribe a URL to the agent's events (the agent's owner, with its credential)",
)
async def create_subscription(
    agent_id: AgentIdPath, body: NewAlertSubscription, alerts: Alerts, caller_hash: CallerHash
) -> CreatedAlertSubscription:
    """The response carries the signing secret, the only time it is shown."""
    require_owner(agent_id, caller_hash)
    request = pb.CreateAlertSubscriptionRequest(
        agent_id=agent_id,
        agent_hash=caller_hash,
        url=body.url,
        events=list(body.events),
        min_severity=body.min_severity,
        format=body.format,
    )
    if body.failure_rate_threshold is not None:
        request.failure_rate_threshold = body.failure_rate_threshold
    response = await alerts.CreateAlertSubscription(request)
    return CreatedAlertSubscription(
        **subscription_out(response.subscription).model_dump(), secret=response.secret
    )


@router.get(
    "",
    response_model=AlertSubscriptionList,
    responses=WRITE_ERRORS,
    summary="The agent's subscriptions, with their URLs (the agent's owner)",
)
async def list_subscriptions(
    agent_id: AgentIdPath, alerts: Alerts, caller_hash: CallerHash, limit: Limit = 50, cursor: Cursor = None
) -> AlertSubscriptionList:
    """URLs may carry a token, so listing them takes the owner's credential (the dashboard shows
    only each one's destination host)."""
    require_owner(agent_id, caller_hash)
    response = await alerts.ListAlertSubscriptions(
        pb.ListAlertSubscriptionsRequest(
            agent_id=agent_id, caller_agent_hash=caller_hash, page_size=limit, page_token=cursor or ""
        )
    )
    return AlertSubscriptionList(
        items=[subscription_out(item) for item in response.subscriptions],
        next_cursor=response.next_page_token or None,
    )


@router.delete(
    "/{subscription_id}",
    response_model=AlertSubscriptionRemoved,
    responses=WRITE_ERRORS,
    summary="Remove a subscription and its deliveries not yet made (the agent's owner)",
)
async def delete_subscription(
    agent_id: AgentIdPath, subscription_id: SubscriptionIdPath, alerts: Alerts, caller_hash: CallerHash
) -> AlertSubscriptionRemoved:
    require_owner(agent_id, caller_hash)
    await alerts.DeleteAlertSubscription(
        pb.DeleteAlertSubscriptionRequest(
            agent_id=agent_id, agent_hash=caller_hash, subscription_id=subscription_id
        )
    )
    return AlertSubscriptionRemoved(agent_id=agent_id, subscription_id=subscription_id)


@router.get(
    "/deliveries",
    response_model=AlertDeliveryList,
    summary="Deliveries, newest first: pending, delivered or failed, with the last error",
)
async def list_deliveries(
    agent_id: AgentIdPath,
    alerts: Alerts,
    limit: Limit = 50,
    cursor: Cursor = None,
    subscription_id: Annotated[str | None, _SUBSCRIPTION_FILTER] = None,
) -> AlertDeliveryList:
    """Public, as the agent's page is: a delivery names its event and outcome, never the URL."""
    response = await alerts.ListAlertDeliveries(
        pb.ListAlertDeliveriesRequest(
            agent_id=agent_id, subscription_id=subscription_id or "", page_size=limit, page_token=cursor or ""
        )
    )
    return AlertDeliveryList(
        items=[delivery_out(item) for item in response.deliveries],
        next_cursor=response.next_page_token or None,
    )
