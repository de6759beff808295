"""`AlertService`: protos to `Subscriptions` calls and back, nothing else."""

from __future__ import annotations

import grpc

from smoltbot.core.grpc_server import grpc_errors
from smoltbot.core.protoconv import to_timestamp
from smoltbot.observer.alerts.destinations import destination_of
from smoltbot.observer.alerts.store import DeliveryRow, SubscriptionRow
from smoltbot.observer.alerts.subscriptions import Subscriptions
from smoltbot.v1 import alert_service_pb2 as pb
from smoltbot.v1 import alert_service_pb2_grpc

__all__ = ["AlertServicer", "delivery_to_proto", "subscription_to_proto"]


def subscription_to_proto(row: SubscriptionRow, *, with_url: bool) -> pb.AlertSubscription:
    return pb.AlertSubscription(
        subscription_id=row.subscription_id,
        agent_id=row.agent_id,
        url=row.url if with_url else "",
        destination=destination_of(row.url),
        events=list(row.events),
        min_severity=row.min_severity,
        failure_rate_threshold=row.failure_rate_threshold,
        format=row.format,
        created_at=to_timestamp(row.created_at, "created_at"),
    )


def delivery_to_proto(row: DeliveryRow) -> pb.AlertDelivery:
    message = pb.AlertDelivery(
        delivery_id=row.delivery_id,
        subscription_id=row.subscription_id,
        agent_id=row.agent_id,
        event=row.event,
        summary=row.summary,
        state=row.state,
        attempts=row.attempts,
        last_status=row.last_status,
        last_error=row.last_error,
        created_at=to_timestamp(row.created_at, "created_at"),
    )
    if row.state in ("pending", "sending"):
        message.next_attempt_at.CopyFrom(to_timestamp(row.next_attempt_at, "next_attempt_at"))
    if row.delivered_at is not None:
        message.delivered_at.CopyFrom(to_timestamp(row.delivered_at, "delivered_at"))
    return message


class AlertServicer(alert_service_pb2_grpc.AlertServiceServicer):
    def __init__(self, subscriptions: Subscriptions) -> None:
        self._subscriptions = subscriptions

    @grpc_errors
    async def CreateAlertSubscription(
        self, request: pb.CreateAlertSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateAlertSubscriptionResponse:
        created = await self._subscriptions.create(
            request.agent_id,
            request.agent_hash,
            request.url,
            list(request.events),
            request.min_severity,
            request.failure_rate_threshold if request.HasField("failure_rate_threshold") else None,
            request.format,
        )
        return pb.CreateAlertSubscriptionResponse(
            subscription=subscription_to_proto(created.subscription, with_url=True), secret=created.secret
        )

    @grpc_errors
    async def ListAlertSubscriptions(
        self, request: pb.ListAlertSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAlertSubscriptionsResponse:
        rows, token, owner = await self._subscriptions.list_subscriptions(
            request.agent_id, request.caller_agent_hash, request.page_size, request.page_token
        )
        return pb.ListAlertSubscriptionsResponse(
            subscriptions=[subscription_to_proto(row, with_url=owner) for row in rows], next_page_token=token
        )

    @grpc_errors
    async def DeleteAlertSubscription(
        self, request: pb.DeleteAlertSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAlertSubscriptionResponse:
        await self._subscriptions.delete(request.agent_id, request.agent_hash, request.subscription_id)
        return pb.DeleteAlertSubscriptionResponse()

    @grpc_errors
    async def ListAlertDeliveries(
        self, request: pb.ListAlertDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAlertDeliveriesResponse:
        rows, token = await self._subscriptions.deliveries(
            request.agent_id, request.subscription_id, request.page_size, request.page_token
        )
        return pb.ListAlertDeliveriesResponse(
            deliveries=[delivery_to_proto(row) for row in rows], next_page_token=token
        )
