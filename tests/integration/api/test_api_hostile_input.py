"""Input no fuzzer of the OpenAPI document generates: bodies nested deeper than a parser recurses,
JSON that is not JSON (NaN, lone surrogates, duplicate keys), odd encodings, huge numbers,
credentials that are not text, and giant headers. Each gets a 4xx in the one error shape, never
a 500, and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.api.helpers import Stack, auth, new_credential


def _assert_client_error(response: httpx.Response, what: str) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (what, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == response.status_code and error["message"], (what, error)
    return error


@pytest.fixture
async def owned(api: httpx.AsyncClient) -> tuple[str, str]:
    credential = new_credential()
    agent_id = (await api.post("/v1/agents/resolve", headers=auth(credential))).json()["agent_id"]
    return credential, agent_id


def _bodies(agent_id: str) -> dict[str, bytes]:
    deep_card = b'{"card_version":"unified/2026-04-26","extensions":' + b'{"a":' * 5000 + b"1" + b"}" * 5001
    return {
        "deep_array": b"[" * 100_000 + b"]" * 100_000,
        "deep_object_in_card": deep_card,
        "nan": b'{"card_version": NaN}',
        "infinity_turn": (b'{"agent_id":"' + agent_id.encode() + b'","session_id":"s1","event":"turn",'
                          b'"turn_count":Infinity}'),
        "huge_number": (b'{"agent_id":"' + agent_id.encode() + b'","session_id":"s1","event":"turn",'
                        b'"turn_count":' + b"9" * 5000 + b"}"),
        "lone_surrogate": b'{"card_version":"\\ud800"}',
        "nul_in_string": b'{"card_version":"unified/2026-04-26","principal":{"identifier":"a\\u0000b"}}',
        "not_utf8": b'{"card_version":"\xff\xfe"}',
        "utf16": '{"card_version":"unified/2026-04-26"}'.encode("utf-16"),
        "bom": b'\xef\xbb\xbf{"card_version":"unified/2026-04-26"}',
        "truncated": b'{"card_version":"unif',
        "top_level_string": b'"card"',
        "empty": b"",
    }


async def test_hostile_json_bodies_are_client_errors_on_every_write(api: httpx.AsyncClient,
                                                                    owned: tuple[str, str]) -> None:
    credential, agent_id = owned
    writes = [("PUT", f"/v1/agents/{agent_id}/card"), ("POST", "/v1/sessions"),
              ("POST", "/v1/tool-executions"), ("POST", f"/v1/agents/{agent_id}/claim")]
    for method, path in writes:
        for name, body in _bodies(agent_id).items():
            response = await api.request(method, path, content=body, headers={
                **auth(credential), "content-type": "application/json"})
            if path.endswith("/claim") and name == "empty":
                assert response.status_code == 200  # the claim body is optional
                continue
            _assert_client_error(response, f"{method} {path} {name}")
    cards = (await api.get(f"/v1/agents/{agent_id}/cards")).json()["items"]
    assert len(cards) == 1  # the default card only: nothing hostile was stored
    assert (await api.get(f"/v1/agents/{agent_id}/sessions")).json()["items"] == []


async def test_a_valid_card_carrying_nul_or_a_lone_surrogate_is_refused_or_stored_whole(
        api: httpx.AsyncClient, owned: tuple[str, str]) -> None:
    # PostgreSQL text cannot hold NUL and UTF-8 cannot hold a lone surrogate: a driver error here
    # would be a 500. Either the card is refused naming the problem, or it reads back as sent.
    from smoltbot.api.routers.cards import _CARD_EXAMPLE

    credential, agent_id = owned
    for bad in (r"a\u0000b", r"\ud800", r"\udfff\ud800"):  # JSON escapes, as a client sends them
        body = json.dumps(_CARD_EXAMPLE).replace('"alice@example.com"', f'"{bad}"').encode()
        response = await api.put(f"/v1/agents/{agent_id}/card", content=body,
                                 headers={**auth(credential), "content-type": "application/json"})
        assert response.status_code < 500, (bad, response.text[:300])
        if response.status_code == 200:
            card = (await api.get(f"/v1/agents/{agent_id}/card")).json()
            assert card["principal"]["identifier"] == json.loads(f'"{bad}"')
        else:
            _assert_client_error(response, bad)


async def test_numbers_json_cannot_carry_are_refused_before_they_are_stored(
        api: httpx.AsyncClient, owned: tuple[str, str]) -> None:
    # A stored NaN would make every later read of the card a 500 (JSON responses cannot carry it).
    from smoltbot.api.routers.cards import _CARD_EXAMPLE

    credential, agent_id = owned
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps(_CARD_EXAMPLE).replace('"retention_days": 90',
                                                 f'"retention_days": {constant}').encode()
        assert constant.encode() in body
        response = await api.put(f"/v1/agents/{agent_id}/card", content=body,
                                 headers={**auth(credential), "content-type": "application/json"})
        error = _assert_client_error(response, constant)
        assert constant in error["message"]
    assert (await api.get(f"/v1/agents/{agent_id}/card")).status_code == 200


async def test_a_claim_email_with_a_lone_surrogate_is_refused(api: httpx.AsyncClient,
                                                              owned: tuple[str, str]) -> None:
    credential, agent_id = owned
    response = await api.post(f"/v1/agents/{agent_id}/claim", content=b'{"email": "\\ud800@example.com"}',
                              headers={**auth(credential), "content-type": "application/json"})
    error = _assert_client_error(response, "email")
    assert "surrogate" in error["message"]
    assert (await api.get(f"/v1/agents/{agent_id}")).json()["claimed"] is False


@pytest.mark.parametrize("credential", ["\udcff-not-text", "x" * 20_000, " "])
async def test_odd_credentials_are_refused_or_hashed_never_a_500(api: httpx.AsyncClient, stack: Stack,
                                                                 credential: str) -> None:
    raw = credential.encode("utf-8", "surrogateescape")
    response = await api.post("/v1/agents/resolve", headers=[(b"x-api-key", raw)])
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        _assert_client_error(response, repr(credential[:20]))
    assert credential.strip() not in response.text or not credential.strip()


async def test_query_parameters_of_hostile_shape_are_client_errors(api: httpx.AsyncClient,
                                                                   owned: tuple[str, str]) -> None:
    _, agent_id = owned
    cases = [
        ("/v1/traces", {"since": "0001-01-01T00:00:00+14:00"}),
        ("/v1/traces", {"until": "9999-12-31T23:59:59-14:00"}),
        ("/v1/traces", {"since": "2026-13-45"}),
        ("/v1/traces", {"limit": "9" * 400}),
        ("/v1/traces", {"session_id": "a\x00b"}),
        ("/v1/traces", {"agent_id": "smolt-" + "a" * 5000}),
        (f"/v1/agents/{agent_id}/traces", {"verified": "maybe"}),
        (f"/v1/agents/{agent_id}/traces", {"order": "sideways"}),
        (f"/v1/agents/{agent_id}/sessions", {"limit": "-1"}),
        ("/v1/agents", {"cursor": "\u00e9t\u00e9"}),
        ("/v1/agents", {"cursor": "x" * 5000}),
    ]
    for path, params in cases:
        _assert_client_error(await api.get(path, params=params), f"{path} {params}")
