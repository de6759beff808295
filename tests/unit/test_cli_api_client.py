"""The CLI's API client turns every failure into one ApiError with a message that says what to do."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from smoltbot.cli.api_client import ApiClient, default_api_url, default_gateway_url, resolve_api_url
from smoltbot.cli.config_store import Config
from smoltbot.cli.errors import ApiError, ConfigError

CREDENTIAL = "sk-ant-api03-unit-SECRET"


def _client(handler: httpx.MockTransport) -> ApiClient:
    return ApiClient("http://api.test", transport=handler)


def _error(code: int, reason: str, message: str, field: str | None = None) -> httpx.Response:
    return httpx.Response(code, json={"error": {"code": code, "status": "X", "reason": reason,
                                                "message": message, "field": field}})


def test_a_success_returns_the_json_and_sends_the_credential_only_as_x_api_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"agent_id": "smolt-0a1b2c3d", "created": True})

    with _client(httpx.MockTransport(handler)) as api:
        body = api.call("resolve", credential=CREDENTIAL)

    assert body == {"agent_id": "smolt-0a1b2c3d", "created": True}
    assert seen[0].method == "POST" and seen[0].url.path == "/v1/agents/resolve"
    assert seen[0].headers["x-api-key"] == CREDENTIAL
    assert CREDENTIAL not in str(seen[0].url)


def test_query_parameters_are_sent_without_nones() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    with _client(httpx.MockTransport(handler)) as api:
        api.call("agent_traces", agent_id="smolt-0a1b2c3d", params={"limit": 5, "session_id": None})

    assert dict(seen[0].url.params) == {"limit": "5"}


def test_a_parameter_not_listed_in_the_contract_is_refused() -> None:
    with _client(httpx.MockTransport(lambda r: httpx.Response(200, json={}))) as api, \
            pytest.raises(KeyError, match="api_contract"):
        api.call("agent_traces", agent_id="smolt-0a1b2c3d", params={"verified": True})


def test_an_api_error_body_becomes_its_message_status_reason_and_field() -> None:
    handler = httpx.MockTransport(
        lambda r: _error(422, "FIELD_INVALID", "limit: must be at most 1000", "limit")
    )

    with _client(handler) as api, pytest.raises(ApiError) as raised:
        api.call("agent", agent_id="smolt-0a1b2c3d")

    error = raised.value
    assert (error.status, error.reason, error.field) == (422, "FIELD_INVALID", "limit")
    assert error.message == "limit: must be at most 1000 (HTTP 422)"


def test_a_backend_outage_says_the_api_is_up_but_a_service_is_not() -> None:
    handler = httpx.MockTransport(
        lambda r: _error(503, "BACKEND_UNAVAILABLE", "the registry service is unavailable")
    )

    with _client(handler) as api, pytest.raises(ApiError, match="a service behind it is not"):
        api.call("health")


@pytest.mark.parametrize("response", [
    httpx.Response(502, text="<html>Bad Gateway</html>"),
    httpx.Response(404, json={"detail": "Not Found"}),
    httpx.Response(200, text="hello"),
])
def test_something_that_is_not_a_smoltbot_api_is_named_as_such(response: httpx.Response) -> None:
    with _client(httpx.MockTransport(lambda r: response)) as api, \
            pytest.raises(ApiError, match=r"is it a smoltbot API\? \(pass --api URL\)"):
        api.call("health")


def test_connection_refused_says_how_to_start_the_stack() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ApiClient(f"http://127.0.0.1:{port}", timeout=2) as api, pytest.raises(ApiError) as raised:
        api.call("agent", agent_id="smolt-0a1b2c3d", credential=CREDENTIAL)

    assert raised.value.status is None
    assert raised.value.message.startswith(f"cannot reach the smoltbot API at http://127.0.0.1:{port}")
    assert "smoltbot up" in raised.value.message and "--api" in raised.value.message
    assert CREDENTIAL not in raised.value.message


def test_a_timeout_says_the_api_did_not_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with _client(httpx.MockTransport(handler)) as api, pytest.raises(ApiError, match="did not answer within"):
        api.call("health")


def test_the_api_url_is_the_option_else_the_config_else_the_local_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SMOLTBOT_API_PORT", raising=False)
    monkeypatch.delenv("SMOLTBOT_GATEWAY_PORT", raising=False)
    assert resolve_api_url("http://opt:1/", Config(api_url="http://conf:2")) == "http://opt:1"
    assert resolve_api_url(None, Config(api_url="http://conf:2")) == "http://conf:2"
    assert resolve_api_url(None, Config()) == "http://127.0.0.1:8000"
    assert default_gateway_url() == "http://127.0.0.1:8080"
    monkeypatch.setenv("SMOLTBOT_API_PORT", "9001")
    monkeypatch.setenv("SMOLTBOT_GATEWAY_PORT", "9002")
    assert default_api_url() == "http://127.0.0.1:9001"
    assert default_gateway_url() == "http://127.0.0.1:9002"
    monkeypatch.setenv("SMOLTBOT_API_PORT", "http")
    with pytest.raises(ConfigError, match="SMOLTBOT_API_PORT"):
        default_api_url()


def test_error_bodies_are_read_through_the_contract() -> None:
    body = {"error": {"code": 404, "status": "NOT_FOUND", "reason": "AGENT_NOT_FOUND",
                      "message": "agent smolt-0a1b2c3d not found", "field": None}}
    handler = httpx.MockTransport(lambda r: httpx.Response(404, content=json.dumps(body).encode(),
                                                           headers={"content-type": "application/json"}))
    with _client(handler) as api, pytest.raises(ApiError) as raised:
        api.call("agent", agent_id="smolt-0a1b2c3d")
    assert raised.value.reason == "AGENT_NOT_FOUND"


def test_a_credential_no_header_can_carry_is_refused_without_showing_it() -> None:
    with _client(httpx.MockTransport(lambda r: httpx.Response(200, json={}))) as api, \
            pytest.raises(ApiError) as raised:
        api.call("resolve", credential="sk-ant-api03-LINE\nBREAK-SECRET")

    assert "SECRET" not in raised.value.message and "HTTP header" in raised.value.message


def test_error_lines_never_show_the_credential_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from smoltbot.cli.errors import fail

    monkeypatch.setenv("ANTHROPIC_API_KEY", CREDENTIAL)
    fail(f"a library said: bad header {CREDENTIAL!r}\nsecond line")

    assert capsys.readouterr().err == "error: a library said: bad header '[$ANTHROPIC_API_KEY]' second line\n"
