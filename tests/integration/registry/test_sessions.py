"""Sessions over real gRPC: named and inferred sessions, the idle rule, plugin events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from smoltbot.v1 import agent_pb2
from smoltbot.v1 import registry_service_pb2 as pb

from .conftest import RegistryFactory, RunningRegistry, assert_rpc_error, new_hash

INVALID = grpc.StatusCode.INVALID_ARGUMENT
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


async def resolve_at(registry: RunningRegistry, agent_id: str, at: datetime, hint: str = "",
                     source: int = agent_pb2.SESSION_SOURCE_UNSPECIFIED) -> pb.ResolveSessionResponse:
    return await registry.stub.ResolveSession(pb.ResolveSessionRequest(
        agent_id=agent_id, agent_hash=registry.owners[agent_id], session_hint=hint, hint_source=source,
        at=stamp(at)))


async def test_inferred_session_lasts_until_the_idle_timeout(registry_factory: RegistryFactory) -> None:
    registry = await registry_factory(session_idle_minutes=30)
    agent_id, _ = await registry.resolve()

    first = await resolve_at(registry, agent_id, T0)
    within = await resolve_at(registry, agent_id, T0 + timedelta(minutes=29))
    still = await resolve_at(registry, agent_id, T0 + timedelta(minutes=58))  # idle measured from last call
    after_idle = await resolve_at(
        registry, agent_id, T0 + timedelta(minutes=58, seconds=1) + timedelta(minutes=30)
    )

    assert first.created and first.session.source == agent_pb2.SESSION_SOURCE_INFERRED
    assert first.session.session_id.startswith("ses-")
    assert not within.created and within.session.session_id == first.session.session_id
    assert not still.created and still.session.session_id == first.session.session_id
    assert still.session.last_activity_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(minutes=58)
    assert after_idle.created and after_idle.session.session_id != first.session.session_id
    assert (await registry.counts())["sessions"] == 2


async def test_concurrent_inference_starts_one_session(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    responses = await asyncio.gather(*(
        registry.stub.ResolveSession(pb.ResolveSessionRequest(agent_id=agent_id, agent_hash=agent_hash))
        for _ in range(20)
    ))
    assert sum(response.created for response in responses) == 1
    assert len({response.session.session_id for response in responses}) == 1


async def test_named_session_is_used_as_given_and_created_once(registry: RunningRegistry) -> None:
    agent_id, _ = await registry.resolve()
    hint = "claude-code-3f1e0c2a-9d7b-4a51-8c44-1b2f3e4d5c6a"
    responses = await asyncio.gather(*(
        resolve_at(registry, agent_id, T0 + timedelta(seconds=i), hint, agent_pb2.SESSION_SOURCE_CLIENT)
        for i in range(10)
    ))
    assert sum(response.created for response in responses) == 1
    assert {response.session.session_id for response in responses} == {hint}
    assert all(response.session.source == agent_pb2.SESSION_SOURCE_CLIENT for response in responses)
    # A named session does not disturb the inferred one, and vice versa.
    inferred = await resolve_at(registry, agent_id, T0)
    assert inferred.created and inferred.session.session_id != hint
    assert (await registry.counts())["sessions"] == 2


async def test_resolve_session_rejects_bad_input_and_writes_nothing(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    _, other_hash = await registry.resolve()
    before = await registry.counts()
    owner = {"agent_id": agent_id, "agent_hash": agent_hash}
    stranger = new_hash()
    cases = [
        (pb.ResolveSessionRequest(**owner, session_hint="h" * 257), INVALID, "session_hint"),
        (pb.ResolveSessionRequest(**owner, session_hint="a\nb"), INVALID, "session_hint"),
        (
            pb.ResolveSessionRequest(
                **owner, session_hint="x", hint_source=agent_pb2.SESSION_SOURCE_INFERRED
            ),
            INVALID,
            "hint_source",
        ),
        (pb.ResolveSessionRequest(agent_id="", agent_hash=agent_hash), INVALID, "agent_id"),
        (pb.ResolveSessionRequest(agent_id=agent_id, agent_hash="not-hex"), INVALID, "agent_hash"),
        (
            pb.ResolveSessionRequest(agent_id="smolt-99999999", agent_hash=stranger),
            grpc.StatusCode.NOT_FOUND,
            None,
        ),
        (
            pb.ResolveSessionRequest(agent_id="smolt-99999999", agent_hash=stranger, session_hint="x"),
            grpc.StatusCode.NOT_FOUND,
            None,
        ),
        # Sessions are the agent's public record: only its credential's holder may start or move them.
        (pb.ResolveSessionRequest(agent_id=agent_id), grpc.StatusCode.UNAUTHENTICATED, "agent_hash"),
        (
            pb.ResolveSessionRequest(agent_id=agent_id, session_hint="x"),
            grpc.StatusCode.UNAUTHENTICATED,
            "agent_hash",
        ),
        (
            pb.ResolveSessionRequest(agent_id=agent_id, agent_hash=other_hash),
            grpc.StatusCode.PERMISSION_DENIED,
            None,
        ),
        (
            pb.ResolveSessionRequest(agent_id=agent_id, agent_hash=other_hash, session_hint="x"),
            grpc.StatusCode.PERMISSION_DENIED,
            None,
        ),
    ]
    for request, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.stub.ResolveSession(request)
        assert_rpc_error(caught.value, code, field)
    assert await registry.counts() == before


async def test_session_events_start_count_turns_and_end(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()

    def event(kind: int, at: datetime, **extra: object) -> pb.ReportSessionEventRequest:
        return pb.ReportSessionEventRequest(agent_id=agent_id, agent_hash=agent_hash, session_id="oc-1",
                                            event=kind, occurred_at=stamp(at), **extra)

    started = (await registry.stub.ReportSessionEvent(event(agent_pb2.SESSION_EVENT_STARTED, T0))).session
    assert (
        started.source == agent_pb2.SESSION_SOURCE_PLUGIN
        and started.status == agent_pb2.SESSION_STATUS_ACTIVE
    )
    assert started.started_at.ToDatetime(tzinfo=UTC) == T0 and started.turn_count == 0

    for minute in (1, 2):
        turn = (await registry.stub.ReportSessionEvent(
            event(agent_pb2.SESSION_EVENT_TURN, T0 + timedelta(minutes=minute)))).session
    assert turn.turn_count == 2
    set_count = (await registry.stub.ReportSessionEvent(
        event(agent_pb2.SESSION_EVENT_TURN, T0 + timedelta(minutes=3), turn_count=7))).session
    assert set_count.turn_count == 7

    ended = (await registry.stub.ReportSessionEvent(
        event(agent_pb2.SESSION_EVENT_ENDED, T0 + timedelta(minutes=4)))).session
    assert ended.status == agent_pb2.SESSION_STATUS_ENDED and ended.turn_count == 7
    assert ended.ended_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(minutes=4)
    assert ended.last_activity_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(minutes=4)
    assert (await registry.counts())["sessions"] == 1


async def test_session_events_need_the_agents_hash(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    _, other_hash = await registry.resolve()
    before = await registry.counts()
    base = {"agent_id": agent_id, "session_id": "s1", "event": agent_pb2.SESSION_EVENT_STARTED}
    cases = [
        (pb.ReportSessionEventRequest(**base), grpc.StatusCode.UNAUTHENTICATED, "agent_hash"),
        (
            pb.ReportSessionEventRequest(**base, agent_hash=other_hash),
            grpc.StatusCode.PERMISSION_DENIED,
            None,
        ),
        (
            pb.ReportSessionEventRequest(**{**base, "agent_id": "smolt-0badcafe"}, agent_hash=agent_hash),
            grpc.StatusCode.NOT_FOUND,
            None,
        ),
        (
            pb.ReportSessionEventRequest(**{**base, "session_id": ""}, agent_hash=agent_hash),
            INVALID,
            "session_id",
        ),
        (
            pb.ReportSessionEventRequest(**{**base, "session_id": "s" * 300}, agent_hash=agent_hash),
            INVALID,
            "session_id",
        ),
        (
            pb.ReportSessionEventRequest(
                **{**base, "event": agent_pb2.SESSION_EVENT_UNSPECIFIED}, agent_hash=agent_hash
            ),
            INVALID,
            "event",
        ),
        (pb.ReportSessionEventRequest(**base, agent_hash=agent_hash, turn_count=-1), INVALID, "turn_count"),
    ]
    for request, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.stub.ReportSessionEvent(request)
        assert_rpc_error(caught.value, code, field)
    assert await registry.counts() == before


async def test_list_sessions_pages_most_recently_active_first(registry: RunningRegistry) -> None:
    agent_id, _ = await registry.resolve()
    names = [f"named-{i}" for i in range(5)]
    for i, name in enumerate(names):
        await resolve_at(registry, agent_id, T0 + timedelta(minutes=i), name, agent_pb2.SESSION_SOURCE_CLIENT)

    seen: list[str] = []
    token = ""
    while True:
        page = await registry.stub.ListSessions(pb.ListSessionsRequest(agent_id=agent_id, page_size=2,
                                                                       page_token=token))
        seen.extend(session.session_id for session in page.sessions)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(names))

    other_id, _ = await registry.resolve()
    first = await registry.stub.ListSessions(pb.ListSessionsRequest(agent_id=agent_id, page_size=2))
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await registry.stub.ListSessions(pb.ListSessionsRequest(agent_id=other_id,
                                                                page_token=first.next_page_token))
    assert_rpc_error(foreign.value, INVALID, "page_token")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await registry.stub.ListSessions(pb.ListSessionsRequest(agent_id="smolt-0badcafe"))
    assert_rpc_error(unknown.value, grpc.StatusCode.NOT_FOUND)
