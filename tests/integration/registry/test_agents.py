"""Agents over real gRPC: get-or-create, ids, lookups, listing, claims, touches."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import timestamp_pb2

from smoltbot.v1 import registry_service_pb2 as pb

from .conftest import RegistryFactory, RunningRegistry, assert_rpc_error, new_hash

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


async def test_resolve_agent_creates_once_then_returns_the_same_agent(registry: RunningRegistry) -> None:
    agent_hash = new_hash("1a2b3c4d")
    first = await registry.stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=agent_hash))
    second = await registry.stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=agent_hash.upper()))

    assert first.created and not second.created
    assert first.agent.agent_id == "smolt-1a2b3c4d" == second.agent.agent_id
    assert first.agent.active_card_id.startswith("ac-")
    assert first.agent.HasField("created_at") and not first.agent.claimed
    assert (await registry.counts())["agents"] == 1


async def test_fifty_concurrent_resolves_of_one_hash_create_exactly_one_agent(
    registry: RunningRegistry,
) -> None:
    agent_hash = new_hash()
    responses = await asyncio.gather(*(
        registry.stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=agent_hash)) for _ in range(50)
    ))

    assert sum(response.created for response in responses) == 1
    assert len({response.agent.agent_id for response in responses}) == 1
    counts = await registry.counts()
    assert counts["agents"] == counts["agent_credentials"] == counts["alignment_cards"] == 1


async def test_hashes_colliding_on_eight_hex_digits_get_distinct_longer_ids(
    registry: RunningRegistry,
) -> None:
    first_hash, second_hash = new_hash("deadbeef00"), new_hash("deadbeef11")
    third_hash = new_hash("deadbeef1122")  # collides with the second on 10 digits too

    first, _ = await registry.resolve(first_hash)
    second, third = await asyncio.gather(
        registry.stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=second_hash)),
        registry.stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=third_hash)),
    )

    assert first == "smolt-deadbeef"
    ids = {first, second.agent.agent_id, third.agent.agent_id}
    assert len(ids) == 3
    # Whichever of the two concurrent calls wins takes "smolt-deadbeef11"; the other takes the
    # next longer prefix of its own hash.
    assert "smolt-deadbeef11" in ids
    for reply, agent_hash in ((second, second_hash), (third, third_hash)):
        agent_id = reply.agent.agent_id
        assert agent_id in {"smolt-" + agent_hash[:10], "smolt-" + agent_hash[:12]}, (agent_id, agent_hash)
    # Each hash keeps its own id on later calls.
    again = await registry.stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=second_hash))
    assert again.agent.agent_id == second.agent.agent_id and not again.created


@pytest.mark.parametrize("bad_hash", ["", "xyz" * 20, "ab" * 15, "a" * 129, "ab cd" * 10])
async def test_resolve_agent_rejects_malformed_hashes_and_writes_nothing(
        registry: RunningRegistry, bad_hash: str) -> None:
    before = await registry.counts()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.stub.ResolveAgent(pb.ResolveAgentRequest(agent_hash=bad_hash))

    assert_rpc_error(caught.value, INVALID, "agent_hash", "FIELD_INVALID")
    assert await registry.counts() == before


async def test_get_agent_finds_known_and_rejects_unknown_or_malformed_ids(registry: RunningRegistry) -> None:
    agent_id, _ = await registry.resolve()
    found = await registry.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id))
    assert found.agent.agent_id == agent_id

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await registry.stub.GetAgent(pb.GetAgentRequest(agent_id="smolt-00000000"))
    assert_rpc_error(unknown.value, grpc.StatusCode.NOT_FOUND, reason="AGENT_NOT_FOUND")
    assert "smolt-00000000" in unknown.value.details()

    for bad in ("", "agent-1", "smolt-" + "0" * 200):
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await registry.stub.GetAgent(pb.GetAgentRequest(agent_id=bad))
        assert_rpc_error(malformed.value, INVALID, "agent_id")


async def test_list_agents_pages_walk_every_agent_once_most_recently_seen_first(
        registry: RunningRegistry) -> None:
    ids = [(await registry.resolve())[0] for _ in range(7)]

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await registry.stub.ListAgents(pb.ListAgentsRequest(page_size=3, page_token=token))
        seen.extend(agent.agent_id for agent in page.agents)
        pages += 1
        token = page.next_page_token
        if not token:
            break

    assert pages == 3
    assert seen == list(reversed(ids))  # created later = seen later
    everything = await registry.stub.ListAgents(pb.ListAgentsRequest())
    assert [agent.agent_id for agent in everything.agents] == seen and not everything.next_page_token


async def test_list_agents_rejects_negative_sizes_and_foreign_tokens(registry: RunningRegistry) -> None:
    agent_id, _ = await registry.resolve()
    await registry.resolve()
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await registry.stub.ListAgents(pb.ListAgentsRequest(page_size=-1))
    assert_rpc_error(negative.value, INVALID, "page_size")

    for bad in ("not-a-token", "e30", "%%%"):
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await registry.stub.ListAgents(pb.ListAgentsRequest(page_token=bad))
        assert_rpc_error(malformed.value, INVALID, "page_token")

    first_page = await registry.stub.ListAgents(pb.ListAgentsRequest(page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as foreign:  # an agents token is not a sessions token
        await registry.stub.ListSessions(pb.ListSessionsRequest(agent_id=agent_id,
                                                                page_token=first_page.next_page_token))
    assert_rpc_error(foreign.value, INVALID, "page_token")

    huge = await registry.stub.ListAgents(pb.ListAgentsRequest(page_size=1_000_000))
    assert len(huge.agents) == 2


async def test_touch_agent_updates_last_seen_coalesced(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    later = datetime.now(UTC) + timedelta(seconds=1)
    await asyncio.gather(*(
        registry.stub.TouchAgent(pb.TouchAgentRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                      seen_at=stamp(later - timedelta(ms))))
        for ms in range(0, 200, 10)
    ))

    for _ in range(100):  # the flush interval is 50 ms in tests
        agent = (await registry.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id))).agent
        if agent.last_seen_at.ToDatetime(tzinfo=UTC) == later:
            break
        await asyncio.sleep(0.02)
    assert agent.last_seen_at.ToDatetime(tzinfo=UTC) == later

    # An older time never moves last_seen backwards.
    await registry.stub.TouchAgent(pb.TouchAgentRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                        seen_at=stamp(later - timedelta(hours=1))))
    await asyncio.sleep(0.2)
    agent = (await registry.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id))).agent
    assert agent.last_seen_at.ToDatetime(tzinfo=UTC) == later


async def test_touch_agent_rejects_unknown_agents_and_sessions(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    with pytest.raises(grpc.aio.AioRpcError) as unknown_agent:
        await registry.stub.TouchAgent(pb.TouchAgentRequest(agent_id="smolt-12345678", agent_hash=new_hash()))
    assert_rpc_error(unknown_agent.value, grpc.StatusCode.NOT_FOUND, reason="AGENT_NOT_FOUND")

    with pytest.raises(grpc.aio.AioRpcError) as unknown_session:
        await registry.stub.TouchAgent(pb.TouchAgentRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                            session_id="nope"))
    assert_rpc_error(unknown_session.value, grpc.StatusCode.NOT_FOUND, reason="SESSION_NOT_FOUND")

    with pytest.raises(grpc.aio.AioRpcError) as oversized:
        await registry.stub.TouchAgent(pb.TouchAgentRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                            session_id="s" * 257))
    assert_rpc_error(oversized.value, INVALID, "session_id", "FIELD_TOO_LONG")


async def test_touch_agent_needs_the_agents_own_hash_and_moves_nothing_without_it(
        registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    _, other_hash = await registry.resolve()
    before = (await registry.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id))).agent.last_seen_at
    later = stamp(datetime.now(UTC) + timedelta(seconds=3))
    for proof, code in (
        ("", grpc.StatusCode.UNAUTHENTICATED),
        (other_hash, grpc.StatusCode.PERMISSION_DENIED),
        (agent_hash.upper()[:-1] + "0", grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.stub.TouchAgent(
                pb.TouchAgentRequest(agent_id=agent_id, agent_hash=proof, seen_at=later)
            )
        assert_rpc_error(caught.value, code, "agent_hash" if not proof else None)
    await asyncio.sleep(0.2)  # past a flush
    assert (await registry.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id))).agent.last_seen_at == before
    # The owner's hash, in any case, is accepted.
    await registry.stub.TouchAgent(pb.TouchAgentRequest(agent_id=agent_id, agent_hash=agent_hash.upper(),
                                                        seen_at=later))


async def test_graceful_stop_writes_pending_touches(registry_factory: RegistryFactory) -> None:
    registry = await registry_factory(registry_touch_interval=3600)  # only the stop can flush
    agent_id, agent_hash = await registry.resolve()
    session = (await registry.stub.ResolveSession(pb.ResolveSessionRequest(agent_id=agent_id,
                                                                           agent_hash=agent_hash))).session
    seen = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    await registry.stub.TouchAgent(
        pb.TouchAgentRequest(
            agent_id=agent_id, agent_hash=agent_hash, seen_at=stamp(seen), session_id=session.session_id
        )
    )
    assert (await registry.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id))).agent.last_seen_at \
        .ToDatetime(tzinfo=UTC) < seen

    await registry.stop()

    async with registry.db.read() as conn:
        last_seen = (await conn.execute(sa.text("SELECT last_seen_at FROM agents"))).scalar_one()
        activity = (await conn.execute(sa.text("SELECT last_activity_at FROM sessions"))).scalar_one()
    for value in (last_seen, activity):
        if isinstance(value, str):  # SQLite hands raw text to sa.text queries
            value = datetime.fromisoformat(value).replace(tzinfo=UTC)
        assert value == seen


async def test_claim_agent_needs_the_matching_hash_and_happens_once(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    _, other_hash = await registry.resolve()

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await registry.stub.ClaimAgent(pb.ClaimAgentRequest(agent_id=agent_id))
    assert_rpc_error(missing.value, grpc.StatusCode.UNAUTHENTICATED, "agent_hash")
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await registry.stub.ClaimAgent(pb.ClaimAgentRequest(agent_id=agent_id, agent_hash=other_hash))
    assert_rpc_error(wrong.value, grpc.StatusCode.PERMISSION_DENIED, reason="NOT_OWNER")
    with pytest.raises(grpc.aio.AioRpcError) as bad_email:
        await registry.stub.ClaimAgent(pb.ClaimAgentRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                            email="not an email"))
    assert_rpc_error(bad_email.value, INVALID, "email")
    with pytest.raises(grpc.aio.AioRpcError) as long_email:
        await registry.stub.ClaimAgent(pb.ClaimAgentRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                            email="a" * 320 + "@example.com"))
    assert_rpc_error(long_email.value, INVALID, "email", "FIELD_TOO_LONG")
    assert (await registry.counts())["agent_claims"] == 0

    claims = await asyncio.gather(*(
        registry.stub.ClaimAgent(pb.ClaimAgentRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                      email="owner@example.com"))
        for _ in range(5)
    ), return_exceptions=True)
    won = [claim for claim in claims if isinstance(claim, pb.ClaimAgentResponse)]
    lost = [claim for claim in claims if isinstance(claim, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 4
    assert won[0].agent.claimed and won[0].agent.HasField("claimed_at")
    for error in lost:
        assert_rpc_error(error, grpc.StatusCode.ALREADY_EXISTS, reason="AGENT_ALREADY_CLAIMED")
    agent = (await registry.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id))).agent
    assert agent.claimed
