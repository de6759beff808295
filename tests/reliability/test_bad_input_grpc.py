"""Invalid messages to every RPC of RegistryService, ObserverService and AlertService: each gets
INVALID_ARGUMENT with an ErrorInfo naming the field (Ingest, a stream, answers REJECTED per
message instead, naming the field in its message). The case table must cover every RPC the
services declare, so a new RPC cannot slip past this test.

Runs against the shared stack's real registry and observer processes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from smoltbot.core.errors import error_info_of
from smoltbot.core.service_auth import ServiceCredential, attach_credential_sync
from smoltbot.v1 import (
    agent_pb2,
    alert_service_pb2,
    alert_service_pb2_grpc,
    exchange_pb2,
    observer_service_pb2,
    observer_service_pb2_grpc,
    registry_service_pb2_grpc,
)
from smoltbot.v1 import registry_service_pb2 as rpb
from tests.reliability.harness import Stack

pytestmark = pytest.mark.timeout(90)

HUGE = "x" * 200_000
BAD_TOKEN = "!!not-a-page-token!!"
FORGED_TOKEN = "eyJzIjoib3RoZXIiLCJrIjpbXX0"  # base64 of {"s":"other","k":[]}: another list's token
HASH = secrets.token_hex(32)
OTHER_HASH = secrets.token_hex(32)
FAR = timestamp_pb2.Timestamp(seconds=10**13)  # year ~318857: not a datetime


def _registry_cases(agent_id: str) -> dict[str, list[tuple[Any, str]]]:
    """RPC -> [(request, the field the error must name)]."""
    owner = {"agent_id": agent_id, "agent_hash": HASH}
    return {
        "ResolveAgent": [
            (rpb.ResolveAgentRequest(agent_hash=""), "agent_hash"),
            (rpb.ResolveAgentRequest(agent_hash="z" * 64), "agent_hash"),
            (rpb.ResolveAgentRequest(agent_hash="a" * 20), "agent_hash"),
            (rpb.ResolveAgentRequest(agent_hash="a" * 200_000), "agent_hash"),
        ],
        "GetAgent": [
            (rpb.GetAgentRequest(agent_id=""), "agent_id"),
            (rpb.GetAgentRequest(agent_id=HUGE), "agent_id"),
            (rpb.GetAgentRequest(agent_id="smolt-\u00e9\u00e9; DROP TABLE agents"), "agent_id"),
        ],
        "ListAgents": [
            (rpb.ListAgentsRequest(page_size=-1), "page_size"),
            (rpb.ListAgentsRequest(page_token=BAD_TOKEN), "page_token"),
            (rpb.ListAgentsRequest(page_token=FORGED_TOKEN), "page_token"),
            (rpb.ListAgentsRequest(page_token=HUGE), "page_token"),
        ],
        "TouchAgent": [
            (rpb.TouchAgentRequest(agent_id=""), "agent_id"),
            (rpb.TouchAgentRequest(agent_id=HUGE), "agent_id"),
            (rpb.TouchAgentRequest(agent_id=agent_id, seen_at=FAR), "seen_at"),
            (rpb.TouchAgentRequest(agent_id=agent_id, session_id=HUGE), "session_id"),
        ],
        "DeleteAgent": [
            (rpb.DeleteAgentRequest(agent_id="", agent_hash=HASH), "agent_id"),
            (rpb.DeleteAgentRequest(agent_id=HUGE, agent_hash=HASH), "agent_id"),
            (rpb.DeleteAgentRequest(agent_id=agent_id, agent_hash="not-hex" * 10), "agent_hash"),
        ],
        "ClaimAgent": [
            (rpb.ClaimAgentRequest(agent_id="", agent_hash=HASH), "agent_id"),
            (rpb.ClaimAgentRequest(agent_id=agent_id, agent_hash="not-hex" * 10), "agent_hash"),
            (rpb.ClaimAgentRequest(**owner, email="x" * 10_000 + "@example.com"), "email"),
            (rpb.ClaimAgentRequest(**owner, email="not an email"), "email"),
        ],
        "ResolveSession": [
            (rpb.ResolveSessionRequest(agent_id=""), "agent_id"),
            (rpb.ResolveSessionRequest(agent_id=agent_id, hint_source=99), "hint_source"),
            (rpb.ResolveSessionRequest(agent_id=agent_id, session_hint=HUGE), "session_hint"),
            (rpb.ResolveSessionRequest(agent_id=agent_id, at=FAR), "at"),
        ],
        "ReportSessionEvent": [
            (rpb.ReportSessionEventRequest(**owner, session_id="s-1"), "event"),
            (rpb.ReportSessionEventRequest(**owner, session_id="", event=agent_pb2.SESSION_EVENT_STARTED),
             "session_id"),
            (rpb.ReportSessionEventRequest(**owner, session_id=HUGE, event=agent_pb2.SESSION_EVENT_STARTED),
             "session_id"),
            (rpb.ReportSessionEventRequest(**owner, session_id="s-1", event=agent_pb2.SESSION_EVENT_TURN,
                                           turn_count=-3), "turn_count"),
            (rpb.ReportSessionEventRequest(**owner, session_id="s-1", event=agent_pb2.SESSION_EVENT_STARTED,
                                           occurred_at=FAR), "occurred_at"),
        ],
        "ListSessions": [
            (rpb.ListSessionsRequest(agent_id=""), "agent_id"),
            (rpb.ListSessionsRequest(agent_id=agent_id, page_size=-5), "page_size"),
            (rpb.ListSessionsRequest(agent_id=agent_id, page_token=BAD_TOKEN), "page_token"),
        ],
        "GetActiveCard": [
            (rpb.GetActiveCardRequest(agent_id=""), "agent_id"),
            (rpb.GetActiveCardRequest(agent_id=HUGE), "agent_id"),
        ],
        "PutCard": [
            (rpb.PutCardRequest(**owner, card_json="{not json"), "card_json"),
            (rpb.PutCardRequest(**owner, card_json="[1, 2]"), "card_json"),
            (rpb.PutCardRequest(**owner), "card"),
            (rpb.PutCardRequest(agent_id="", agent_hash=HASH, card_json="{}"), "agent_id"),
        ],
        "WatchCards": [
            (rpb.WatchCardsRequest(agent_ids=[""]), "agent_ids"),
            (rpb.WatchCardsRequest(agent_ids=[agent_id, HUGE]), "agent_ids"),
            (rpb.WatchCardsRequest(agent_ids=[agent_id] * 1001), "agent_ids"),
        ],
        "ListCards": [
            (rpb.ListCardsRequest(agent_id=""), "agent_id"),
            (rpb.ListCardsRequest(agent_id=agent_id, page_size=-1), "page_size"),
            (rpb.ListCardsRequest(agent_id=agent_id, page_token=FORGED_TOKEN), "page_token"),
        ],
    }


def _observer_cases(agent_id: str) -> dict[str, list[tuple[Any, str]]]:
    pb = observer_service_pb2
    since = timestamp_pb2.Timestamp(seconds=2_000_000_000)
    until = timestamp_pb2.Timestamp(seconds=1_000_000_000)
    return {
        "ListTraces": [
            (pb.ListTracesRequest(page_size=-1), "page_size"),
            (pb.ListTracesRequest(page_token=BAD_TOKEN), "page_token"),
            (pb.ListTracesRequest(page_token=FORGED_TOKEN), "page_token"),
            (pb.ListTracesRequest(order_by="sideways"), "order_by"),
            (pb.ListTracesRequest(since=since, until=until), "until"),
            (pb.ListTracesRequest(since=FAR), "since"),
            (pb.ListTracesRequest(agent_id=HUGE), "agent_id"),
            (pb.ListTracesRequest(session_id=HUGE), "session_id"),
            (pb.ListTracesRequest(provider="mistral"), "provider"),
        ],
        "GetTrace": [
            (pb.GetTraceRequest(trace_id=""), "trace_id"),
            # Not NOT_FOUND echoing 200 KB in its trailers (over gRPC's 16 KiB metadata limit).
            (pb.GetTraceRequest(trace_id=HUGE), "trace_id"),
        ],
        "GetIntegrity": [
            (pb.GetIntegrityRequest(agent_id=""), "agent_id"),
            (pb.GetIntegrityRequest(agent_id=HUGE), "agent_id"),
        ],
        "ListDriftAlerts": [  # an empty agent_id lists every agent's alerts, by design
            (pb.ListDriftAlertsRequest(agent_id=agent_id, page_size=-1), "page_size"),
            (pb.ListDriftAlertsRequest(agent_id=agent_id, page_token=BAD_TOKEN), "page_token"),
        ],
        "ReportToolExecution": [
            (
                pb.ReportToolExecutionRequest(agent_id=agent_id, agent_hash="zz" * 32, tool_use_id="toolu_1"),
                "agent_hash",
            ),
            (
                pb.ReportToolExecutionRequest(
                    agent_id=agent_id, agent_hash=HASH, tool_use_id="bad id; rm -rf"
                ),
                "tool_use_id",
            ),
            (
                pb.ReportToolExecutionRequest(agent_id=agent_id, agent_hash=HASH, tool_use_id=HUGE),
                "tool_use_id",
            ),
            (pb.ReportToolExecutionRequest(agent_id="", agent_hash=HASH, tool_use_id="toolu_1"), "agent_id"),
        ],
        "DeleteAgentData": [
            (pb.DeleteAgentDataRequest(agent_id="", agent_hash=HASH), "agent_id"),
            (pb.DeleteAgentDataRequest(agent_id=HUGE, agent_hash=HASH), "agent_id"),
            (pb.DeleteAgentDataRequest(agent_id=agent_id, agent_hash="zz" * 32), "agent_hash"),
        ],
        "AcknowledgeDriftAlert": [
            (pb.AcknowledgeDriftAlertRequest(agent_id=agent_id, agent_hash="zz" * 32, alert_id="da-1"),
             "agent_hash"),
            (pb.AcknowledgeDriftAlertRequest(agent_id="", agent_hash=HASH, alert_id="da-1"), "agent_id"),
            (pb.AcknowledgeDriftAlertRequest(agent_id=agent_id, agent_hash=HASH, alert_id=""), "alert_id"),
            (pb.AcknowledgeDriftAlertRequest(agent_id=agent_id, agent_hash=HASH, alert_id=HUGE), "alert_id"),
        ],
        "GetAgentUsage": [
            (pb.GetAgentUsageRequest(agent_id=""), "agent_id"),
            (pb.GetAgentUsageRequest(agent_id=HUGE), "agent_id"),
            (pb.GetAgentUsageRequest(agent_id=agent_id, group_by="weekday"), "group_by"),
            (pb.GetAgentUsageRequest(agent_id=agent_id, since=since, until=until), "until"),
            (pb.GetAgentUsageRequest(agent_id=agent_id, since=FAR), "since"),
        ],
        "GetSessionUsage": [
            (pb.GetSessionUsageRequest(agent_id=agent_id, session_id=""), "session_id"),
            (pb.GetSessionUsageRequest(agent_id=agent_id, session_id=HUGE), "session_id"),
            (pb.GetSessionUsageRequest(agent_id=HUGE, session_id="s-1"), "agent_id"),
        ],
        "GetSessionsUsage": [
            (pb.GetSessionsUsageRequest(agent_id="", session_ids=["s-1"]), "agent_id"),
            (pb.GetSessionsUsageRequest(agent_id=HUGE, session_ids=["s-1"]), "agent_id"),
            (pb.GetSessionsUsageRequest(agent_id=agent_id, session_ids=[f"s-{n}" for n in range(101)]),
             "session_ids"),
            (pb.GetSessionsUsageRequest(agent_id=agent_id, session_ids=["s-1", ""]), "session_ids"),
            (pb.GetSessionsUsageRequest(agent_id=agent_id, session_ids=[HUGE]), "session_ids"),
        ],
    }


def _alert_cases(agent_id: str) -> dict[str, list[tuple[Any, str]]]:
    apb = alert_service_pb2
    hook = {"url": "https://hooks.example.com/x", "events": ["drift"]}

    def create(**fields: Any) -> alert_service_pb2.CreateAlertSubscriptionRequest:
        values = {"agent_id": agent_id, "agent_hash": HASH, **hook, **fields}
        return apb.CreateAlertSubscriptionRequest(**values)

    return {
        "CreateAlertSubscription": [
            (create(url=""), "url"),
            (create(url="ftp://hooks.example.com/x"), "url"),
            (create(url="https://" + HUGE), "url"),
            (create(url="https://user:pw@hooks.example.com/x"), "url"),
            (create(events=[]), "events"),
            (create(events=["everything"]), "events"),
            (create(min_severity="extreme"), "min_severity"),
            (create(format="xml"), "format"),
            (create(events=["failure_rate"], failure_rate_threshold=2.0), "failure_rate_threshold"),
            (create(agent_hash="zz" * 32), "agent_hash"),
            (create(agent_id=""), "agent_id"),
        ],
        "ListAlertSubscriptions": [
            (apb.ListAlertSubscriptionsRequest(agent_id=""), "agent_id"),
            (apb.ListAlertSubscriptionsRequest(agent_id=HUGE), "agent_id"),
            (apb.ListAlertSubscriptionsRequest(agent_id=agent_id, page_size=-1), "page_size"),
            (apb.ListAlertSubscriptionsRequest(agent_id=agent_id, page_token=BAD_TOKEN), "page_token"),
            (apb.ListAlertSubscriptionsRequest(agent_id=agent_id, caller_agent_hash="zz" * 32),
             "caller_agent_hash"),
        ],
        "DeleteAlertSubscription": [
            (apb.DeleteAlertSubscriptionRequest(agent_id=agent_id, agent_hash=HASH, subscription_id=""),
             "subscription_id"),
            (apb.DeleteAlertSubscriptionRequest(agent_id=agent_id, agent_hash=HASH, subscription_id=HUGE),
             "subscription_id"),
            (apb.DeleteAlertSubscriptionRequest(agent_id=agent_id, agent_hash="zz" * 32,
                                                subscription_id="as-3f9c2a71"), "agent_hash"),
        ],
        "ListAlertDeliveries": [
            (apb.ListAlertDeliveriesRequest(agent_id=""), "agent_id"),
            (apb.ListAlertDeliveriesRequest(agent_id=agent_id, subscription_id="not-an-id"),
             "subscription_id"),
            (apb.ListAlertDeliveriesRequest(agent_id=agent_id, page_size=-1), "page_size"),
            (apb.ListAlertDeliveriesRequest(agent_id=agent_id, page_token=FORGED_TOKEN), "page_token"),
        ],
    }


def _ingest_cases() -> list[tuple[observer_service_pb2.IngestRequest, str]]:
    def exchange(**fields: Any) -> observer_service_pb2.IngestRequest:
        values = {"exchange_id": secrets.token_hex(16), "agent_hash": HASH, **fields}
        return observer_service_pb2.IngestRequest(exchange=exchange_pb2.Exchange(**values))

    return [
        (observer_service_pb2.IngestRequest(), "exchange"),
        (exchange(exchange_id=""), "exchange_id"),
        (exchange(exchange_id="g" * 32), "exchange_id"),
        (exchange(exchange_id=HUGE), "exchange_id"),
        (exchange(agent_hash=""), "agent_hash"),
        (exchange(agent_hash="not-hex-at-all-" * 4), "agent_hash"),
        (exchange(agent_hash="a" * 200_000), "agent_hash"),
    ]


@pytest.fixture(scope="module")
def channels(shared_stack: Stack) -> Iterator[tuple[grpc.Channel, grpc.Channel]]:
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    credential = ServiceCredential(home=shared_stack.home)
    with attach_credential_sync(grpc.insecure_channel(shared_stack.registry_address, options=options),
                                credential) as registry, \
            attach_credential_sync(grpc.insecure_channel(shared_stack.observer_address, options=options),
                                   credential) as observer:
        yield registry, observer


@pytest.fixture(scope="module")
def agent_id(channels: tuple[grpc.Channel, grpc.Channel]) -> str:
    stub = registry_service_pb2_grpc.RegistryServiceStub(channels[0])
    return stub.ResolveAgent(rpb.ResolveAgentRequest(agent_hash=HASH), timeout=10).agent.agent_id


def _field_named(error: grpc.RpcError, field: str) -> bool:
    info = error_info_of(error)
    if info is not None and info.metadata.get("field") == field:
        return True
    return (error.details() or "").startswith(f"{field}:")


def _service_methods(module: Any, service: str) -> set[str]:
    return {method.name for method in module.DESCRIPTOR.services_by_name[service].methods}


@pytest.mark.parametrize("service", ["RegistryService", "ObserverService", "AlertService"])
def test_every_rpc_answers_invalid_messages_with_invalid_argument_naming_the_field(
        channels: tuple[grpc.Channel, grpc.Channel], agent_id: str, service: str) -> None:
    if service == "RegistryService":
        stub: Any = registry_service_pb2_grpc.RegistryServiceStub(channels[0])
        cases = _registry_cases(agent_id)
        declared = _service_methods(rpb, service)
    elif service == "AlertService":  # served by the observer process
        stub = alert_service_pb2_grpc.AlertServiceStub(channels[1])
        cases = _alert_cases(agent_id)
        declared = _service_methods(alert_service_pb2, service)
    else:
        stub = observer_service_pb2_grpc.ObserverServiceStub(channels[1])
        cases = _observer_cases(agent_id)
        declared = _service_methods(observer_service_pb2, service) - {"Ingest"}  # a stream: see below
    assert set(cases) == declared, f"RPCs without invalid-input cases: {declared - set(cases)}"
    wrong = _check_cases(stub, cases)
    assert not wrong, "\n".join(wrong)


def _check_cases(stub: Any, cases: dict[str, list[tuple[Any, str]]]) -> list[str]:
    wrong: list[str] = []
    for method, requests in cases.items():
        for request, field in requests:
            label = f"{method}({_describe(request)})"
            try:
                answer = getattr(stub, method)(request, timeout=15)
                if method.startswith("Watch"):  # a server stream answers when read
                    next(answer)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    wrong.append(
                        f"{label}: {error.code().name} {error.details()!r}, want INVALID_ARGUMENT on {field}"
                    )
                elif not _field_named(error, field):
                    info = error_info_of(error)
                    wrong.append(
                        f"{label}: INVALID_ARGUMENT names {info.metadata.get('field') if info else None!r} "
                        f"({error.details()!r}), want {field!r}"
                    )
            else:
                wrong.append(f"{label}: accepted, want INVALID_ARGUMENT on {field}")
    return wrong


def test_ingest_rejects_each_invalid_exchange_naming_the_field_and_keeps_the_stream_open(
        channels: tuple[grpc.Channel, grpc.Channel]) -> None:
    stub = observer_service_pb2_grpc.ObserverServiceStub(channels[1])
    cases = _ingest_cases()
    valid = observer_service_pb2.IngestRequest(exchange=exchange_pb2.Exchange(
        exchange_id=secrets.token_hex(16), agent_hash=OTHER_HASH))
    replies = list(stub.Ingest(iter([request for request, _ in cases] + [valid]), timeout=30))
    assert len(replies) == len(cases) + 1
    for (_request, field), reply in zip(cases, replies, strict=False):
        assert reply.status == observer_service_pb2.INGEST_STATUS_REJECTED, (field, reply)
        assert field in reply.message, (field, reply.message)
    # The stream survived the bad ones: the valid exchange after them was stored.
    assert replies[-1].status == observer_service_pb2.INGEST_STATUS_ACCEPTED
    assert replies[-1].exchange_id == valid.exchange.exchange_id


def _describe(request: Any) -> str:
    parts = []
    for descriptor, value in request.ListFields():
        shown = repr(value)
        parts.append(f"{descriptor.name}={shown[:24] + '...' if len(shown) > 24 else shown}")
    return ", ".join(parts)


CARD_JSON = (
    '{"card_version": "unified/2026-04-26", "principal": {"type": "human", "identifier": "owner", '
    '"relationship": "delegated_authority"}, '
    '"values": {"declared": ["transparency"]}, "autonomy": {"bounded_actions": ["respond"], '
    '"forbidden_actions": [], "escalation_triggers": []}, '
    '"audit": {"retention_days": 30, "queryable": false, "trace_format": "ap-trace-v1"}}'
)
#: Writes on behalf of an agent: the fields each needs besides agent_id and agent_hash.
OWNED_WRITES: dict[str, dict[str, Any]] = {
    "ClaimAgent": {},
    "PutCard": {"card_json": CARD_JSON},
    "ReportSessionEvent": {"session_id": "s-ownership", "event": agent_pb2.SESSION_EVENT_STARTED},
    "ReportToolExecution": {"tool_use_id": "toolu_ownership", "executed": True},
    "TouchAgent": {},
    "ResolveSession": {},
    "AcknowledgeDriftAlert": {"alert_id": "da-3f9c2a71"},
    "DeleteAgent": {},
    "DeleteAgentData": {},
    "CreateAlertSubscription": {"url": "https://hooks.example.com/x", "events": ["drift"]},
    "DeleteAlertSubscription": {"subscription_id": "as-3f9c2a71"},
}


def test_every_write_on_behalf_of_an_agent_needs_that_agents_hash(
        channels: tuple[grpc.Channel, grpc.Channel], agent_id: str) -> None:
    """Found from the descriptors: every RPC whose request carries agent_id and agent_hash.
    A missing hash is UNAUTHENTICATED, another agent's PERMISSION_DENIED."""
    stubs = {
        "RegistryService": (registry_service_pb2_grpc.RegistryServiceStub(channels[0]), rpb),
        "ObserverService": (observer_service_pb2_grpc.ObserverServiceStub(channels[1]), observer_service_pb2),
        "AlertService": (alert_service_pb2_grpc.AlertServiceStub(channels[1]), alert_service_pb2),
    }
    other = registry_service_pb2_grpc.RegistryServiceStub(channels[0]).ResolveAgent(
        rpb.ResolveAgentRequest(agent_hash=OTHER_HASH), timeout=10).agent.agent_id
    assert other != agent_id
    found = set()
    wrong = []
    for service, (stub, module) in stubs.items():
        for method in module.DESCRIPTOR.services_by_name[service].methods:
            fields = {f.name for f in method.input_type.fields}
            if not {"agent_id", "agent_hash"} <= fields:
                continue
            found.add(method.name)
            request_type = getattr(module, method.input_type.name)
            extra = OWNED_WRITES.get(method.name, {})
            for agent_hash, code in (("", grpc.StatusCode.UNAUTHENTICATED),
                                     (OTHER_HASH, grpc.StatusCode.PERMISSION_DENIED)):
                try:
                    getattr(stub, method.name)(
                        request_type(agent_id=agent_id, agent_hash=agent_hash, **extra), timeout=15
                    )
                except grpc.RpcError as error:
                    if error.code() != code:
                        wrong.append(
                            f"{method.name} hash={agent_hash[:8]!r}: {error.code().name} {error.details()!r}"
                        )
                else:
                    wrong.append(f"{method.name} hash={agent_hash[:8]!r}: accepted, want {code.name}")
    assert found == set(OWNED_WRITES), f"owned writes without a case here: {found - set(OWNED_WRITES)}"
    assert not wrong, "\n".join(wrong)
