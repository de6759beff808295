"""Alignment cards over real gRPC: the default card, versions, validation, listing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy import exc

from smoltbot.core.aap.cards import CARD_VERSION, MAX_CARD_BYTES, MAX_ESCALATION_TRIGGERS
from smoltbot.v1 import card_pb2
from smoltbot.v1 import registry_service_pb2 as pb

from .conftest import RunningRegistry, assert_rpc_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def unified_card(**changes: object) -> dict[str, object]:
    card: dict[str, object] = {
        "card_version": CARD_VERSION,
        "autonomy_mode": "enforce",
        "integrity_mode": "observe",
        "principal": {
            "type": "human",
            "identifier": "alice@example.com",
            "relationship": "delegated_authority",
        },
        "values": {"declared": ["transparency", "honesty"]},
        "autonomy": {
            "bounded_actions": ["read_file", "search"],
            "forbidden_actions": ["delete_file"],
            "escalation_triggers": [
                {"condition": 'action_name == "send_email"', "action": "escalate", "reason": "mail goes out"},
            ],
        },
        "audit": {"retention_days": 30, "queryable": False},
    }
    card.update(changes)
    return card


async def test_new_agents_get_an_unrestricting_default_card(registry: RunningRegistry) -> None:
    agent_id, _ = await registry.resolve()
    card = (await registry.stub.GetActiveCard(pb.GetActiveCardRequest(agent_id=agent_id))).card

    assert card.agent_id == agent_id and card.card_version == CARD_VERSION
    assert list(card.autonomy.bounded_actions) == [] and list(card.autonomy.forbidden_actions) == []
    assert list(card.values.declared)
    assert card.audit.query_endpoint == f"http://127.0.0.1:8000/v1/agents/{agent_id}/traces"
    agent = (await registry.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id))).agent
    assert agent.active_card_id == card.card_id


async def test_put_card_adds_a_version_and_keeps_exactly_one_active(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    default_id = (await registry.stub.GetActiveCard(pb.GetActiveCardRequest(agent_id=agent_id))).card.card_id

    from_json = (await registry.stub.PutCard(pb.PutCardRequest(
        agent_id=agent_id, agent_hash=agent_hash, card_json=json.dumps(unified_card())))).card
    proto_card = json_format.ParseDict(unified_card(autonomy_mode="observe"), card_pb2.AlignmentCard())
    proto_card.card_id = from_json.card_id  # putting a fetched card back makes a new version
    from_proto = (await registry.stub.PutCard(pb.PutCardRequest(
        agent_id=agent_id, agent_hash=agent_hash, card=proto_card))).card

    assert len({default_id, from_json.card_id, from_proto.card_id}) == 3
    assert from_json.autonomy_mode == "enforce" and from_proto.autonomy_mode == "observe"
    assert list(from_proto.autonomy.forbidden_actions) == ["delete_file"]
    assert from_proto.audit.retention_days == 30 and not from_proto.audit.queryable
    active = (await registry.stub.GetActiveCard(pb.GetActiveCardRequest(agent_id=agent_id))).card
    assert active.card_id == from_proto.card_id

    listing = await registry.stub.ListCards(pb.ListCardsRequest(agent_id=agent_id))
    assert [card.card_id for card in listing.cards] == [from_proto.card_id, from_json.card_id, default_id]
    assert listing.active_card_id == from_proto.card_id
    async with registry.db.read() as conn:
        rows = (await conn.execute(sa.text(
            "SELECT version, active FROM alignment_cards WHERE agent_id = :a ORDER BY version"),
            {"a": agent_id})).all()
    assert [(version, bool(active)) for version, active in rows] == [(1, False), (2, False), (3, True)]


async def test_put_card_accepts_legacy_cards_and_stores_them_unified(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    legacy = {
        "aap_version": "0.5.0",
        "principal": {"type": "human", "identifier": "bob", "relationship": "advisory"},
        "values": {"declared": ["honesty"]},
        "autonomy_envelope": {"bounded_actions": ["search"], "escalation_triggers": []},
        "audit_commitment": {"retention_days": 7, "queryable": False},
    }
    card = (await registry.stub.PutCard(pb.PutCardRequest(
        agent_id=agent_id, agent_hash=agent_hash, card_json=json.dumps(legacy)))).card
    assert card.card_version == CARD_VERSION and list(card.autonomy.bounded_actions) == ["search"]


async def test_database_refuses_a_second_active_card(registry: RunningRegistry) -> None:
    agent_id, _ = await registry.resolve()
    with pytest.raises(exc.IntegrityError):
        async with registry.db.begin() as conn:
            await conn.execute(sa.text(
                "INSERT INTO alignment_cards (card_id, agent_id, version, card_json, active, created_at) "
                "VALUES ('ac-rogue', :a, 99, '{}', :t, CURRENT_TIMESTAMP)"), {"a": agent_id, "t": True})


@pytest.mark.parametrize(("source", "field"), [
    ({"card_json": "{not json"}, "card_json"),
    ({"card_json": "[1, 2]"}, "card_json"),
    ({"card_json": " " * (1024 * 1024 + 1)}, "card_json"),
    ({"card_json": json.dumps(unified_card(autonomy_mode="sometimes"))}, "card_json.autonomy_mode"),
    ({"card_json": json.dumps(unified_card(autonomy={"bounded_actions": ["a"], "forbiden_actions": ["b"]}))},
     "card_json.autonomy.forbiden_actions"),
    ({"card_json": json.dumps(unified_card(agent_id="smolt-someoneelse"))}, "card_json.agent_id"),
    ({"card": card_pb2.AlignmentCard(autonomy_mode="observe")}, "card.principal"),
    ({}, "card"),
])
async def test_put_card_rejects_invalid_cards_naming_the_field_and_keeps_the_old_one(
        registry: RunningRegistry, source: dict[str, object], field: str) -> None:
    agent_id, agent_hash = await registry.resolve()
    before = await registry.counts()
    active = (await registry.stub.GetActiveCard(pb.GetActiveCardRequest(agent_id=agent_id))).card

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.stub.PutCard(pb.PutCardRequest(agent_id=agent_id, agent_hash=agent_hash, **source))

    assert_rpc_error(caught.value, INVALID, field)
    assert await registry.counts() == before
    assert (await registry.stub.GetActiveCard(pb.GetActiveCardRequest(agent_id=agent_id))).card == active


async def test_put_card_needs_the_agents_hash(registry: RunningRegistry) -> None:
    agent_id, _ = await registry.resolve()
    _, other_hash = await registry.resolve()
    before = await registry.counts()
    card_json = json.dumps(unified_card())
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await registry.stub.PutCard(pb.PutCardRequest(agent_id=agent_id, card_json=card_json))
    assert_rpc_error(missing.value, grpc.StatusCode.UNAUTHENTICATED, "agent_hash")
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await registry.stub.PutCard(pb.PutCardRequest(agent_id=agent_id, agent_hash=other_hash,
                                                      card_json=card_json))
    assert_rpc_error(wrong.value, grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await registry.stub.PutCard(pb.PutCardRequest(agent_id="smolt-0badcafe", agent_hash=other_hash,
                                                      card_json=card_json))
    assert_rpc_error(unknown.value, grpc.StatusCode.NOT_FOUND)
    assert await registry.counts() == before


async def test_list_cards_pages_newest_first(registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    for _ in range(4):
        await registry.stub.PutCard(pb.PutCardRequest(agent_id=agent_id, agent_hash=agent_hash,
                                                      card_json=json.dumps(unified_card())))
    seen: list[str] = []
    token = ""
    while True:
        page = await registry.stub.ListCards(
            pb.ListCardsRequest(agent_id=agent_id, page_size=2, page_token=token)
        )
        seen.extend(card.card_id for card in page.cards)
        token = page.next_page_token
        if not token:
            break
    everything = await registry.stub.ListCards(pb.ListCardsRequest(agent_id=agent_id))
    assert seen == [card.card_id for card in everything.cards] and len(seen) == 5
    assert everything.active_card_id == seen[0]

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await registry.stub.GetActiveCard(pb.GetActiveCardRequest(agent_id="smolt-0badcafe"))
    assert_rpc_error(unknown.value, grpc.StatusCode.NOT_FOUND)


async def test_put_card_over_a_limit_is_invalid_argument_naming_the_field_and_the_limit(
        registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()
    before = await registry.counts()
    trigger = {"condition": 'action_name == "x"', "action": "log", "reason": "r"}
    too_many = unified_card(autonomy={"escalation_triggers": [trigger] * (MAX_ESCALATION_TRIGGERS + 1)})
    too_big = unified_card(extensions={"blob": "x" * MAX_CARD_BYTES})
    cases = [
        (pb.PutCardRequest(card_json=json.dumps(too_many)), "card_json.autonomy.escalation_triggers",
         "MAX_ESCALATION_TRIGGERS"),
        (pb.PutCardRequest(card=json_format.ParseDict(too_many, card_pb2.AlignmentCard())),
         "card.autonomy.escalation_triggers", "MAX_ESCALATION_TRIGGERS"),
        (pb.PutCardRequest(card_json=json.dumps(too_big)), "card_json", "MAX_CARD_BYTES"),
    ]
    for request, field, limit in cases:
        request.agent_id, request.agent_hash = agent_id, agent_hash
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.stub.PutCard(request)
        assert_rpc_error(caught.value, INVALID, field, reason="LIMIT_EXCEEDED")
        assert limit in (caught.value.details() or "")
    assert await registry.counts() == before


async def test_get_active_card_as_of_answers_the_card_in_force_then_by_when_it_was_stored(
        registry: RunningRegistry) -> None:
    agent_id, agent_hash = await registry.resolve()

    async def as_of(moment: datetime) -> pb.GetActiveCardResponse:
        request = pb.GetActiveCardRequest(agent_id=agent_id)
        request.as_of.FromDatetime(moment)
        return await registry.stub.GetActiveCard(request)

    first = (await registry.stub.GetActiveCard(pb.GetActiveCardRequest(agent_id=agent_id))).card

    async def put(card: dict[str, object]) -> card_pb2.AlignmentCard:
        request = pb.PutCardRequest(agent_id=agent_id, agent_hash=agent_hash, card_json=json.dumps(card))
        return (await registry.stub.PutCard(request)).card

    # The card's own issued_at (set by its author, here long ago) plays no part.
    second = await put(unified_card(issued_at="2020-01-01T00:00:00Z"))
    between = datetime.now(UTC)
    third = await put(unified_card())
    after = datetime.now(UTC)

    early = await as_of(datetime(2000, 1, 1, tzinfo=UTC))
    assert early.card.card_id == first.card_id and not early.HasField("in_force_from")
    middle = await as_of(between)
    assert middle.card.card_id == second.card_id
    assert (middle.in_force_from.ToDatetime(tzinfo=UTC) <= between
            < middle.in_force_until.ToDatetime(tzinfo=UTC))
    assert (await as_of(middle.in_force_until.ToDatetime(tzinfo=UTC))).card.card_id == third.card_id
    latest = await as_of(after)
    assert latest.card.card_id == third.card_id
    # The active card is vouched for up to the Registry's clock when it answered.
    assert latest.in_force_until.ToDatetime(tzinfo=UTC) >= after
    # Without as_of: the active card, as before.
    plain = await registry.stub.GetActiveCard(pb.GetActiveCardRequest(agent_id=agent_id))
    assert plain.card.card_id == third.card_id and not plain.HasField("in_force_until")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        request = pb.GetActiveCardRequest(agent_id="smolt-0badcafe")
        request.as_of.FromDatetime(after)
        await registry.stub.GetActiveCard(request)
    assert_rpc_error(unknown.value, grpc.StatusCode.NOT_FOUND)
