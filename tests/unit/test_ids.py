"""The one home of id shapes (core.ids): every id our services mint passes every validator that
checks that kind of id, in every service, and the validators refuse what is not an id."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from smoltbot.cli.errors import ConfigError
from smoltbot.core import ids
from smoltbot.core.errors import InvalidArgument
from smoltbot.core.identity import agent_hash
from smoltbot.core.sessions import usable_session_id


def _hashes() -> list[str]:
    # Every hash length the contract allows, and core.identity's own (64 digits).
    made = [agent_hash(secrets.token_urlsafe(16), b"secret") for _ in range(3)]
    return [*made, "ab" * 16, "c" * 33, "0123456789abcdef" * 8]


def _agent_ids() -> list[str]:
    return [candidate for digest in _hashes() for candidate in ids.agent_id_candidates(digest)]


def _session_ids() -> list[str]:
    names = ["my task", "x" * 256, "x" * 257, "tab\there", "caf\u00e9 \u2603", "\udcff bytes", "\x00",
             "a/b?c#d"]
    return [ids.new_session_id() for _ in range(3)] + [usable_session_id(name) for name in names]


def _trace_ids() -> list[str]:
    return [ids.trace_id_for(ids.new_exchange_id(), index) for index in (0, 1, 99, 10_000)]


def _exchange_ids() -> list[str]:
    return [ids.new_exchange_id() for _ in range(5)]


def _api_patterns(tmp_path: Path) -> dict[str, set[str]]:
    """The patterns the API's OpenAPI document gives each kind of id (parameters and body fields)."""
    from smoltbot.api.app import create_app
    from smoltbot.core.settings import load_settings

    spec = create_app(load_settings(home=tmp_path, hash_secret="unit")).openapi()
    found: dict[str, set[str]] = {}
    for operations in spec["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                for option in [schema, *schema.get("anyOf", [])]:
                    if "pattern" in option:
                        found.setdefault(parameter["name"], set()).add(option["pattern"])
    for schema in spec["components"]["schemas"].values():
        for name, prop in schema.get("properties", {}).items():
            if "pattern" in prop:
                found.setdefault(name, set()).add(prop["pattern"])
    return found


def _service_checks(kind: str, tmp_path: Path) -> list[tuple[str, Callable[[str], object]]]:
    """Each service's check of this kind of id, as the service runs it (it raises InvalidArgument
    or returns False when the id is refused)."""
    from smoltbot.cli import config_store as cli
    from smoltbot.observer import validation as observer

    def pattern(text: str) -> Callable[[str], object]:
        return lambda value: re.fullmatch(text.removeprefix("^").removesuffix("$"), value) is not None

    api_patterns = sorted(_api_patterns(tmp_path).get(kind, ()))
    api = [(f"API {kind} pattern {text}", pattern(text)) for text in api_patterns]
    checks: dict[str, list[tuple[str, Callable[[str], object]]]] = {
        "agent_id": [("core.validate_agent_id", ids.validate_agent_id),
                     ("cli config agent_id", lambda value: cli.normalize_value("agent_id", value)),
                     ("observer validate_agent_id", observer.validate_agent_id)],
        "agent_hash": [("core.validate_agent_hash", ids.validate_agent_hash)],
        "session_id": [("core.validate_session_id", ids.validate_session_id),
                       ("observer validate_session_filter", observer.validate_session_filter)],
        "trace_id": [("core.validate_trace_id", ids.validate_trace_id)],
        "exchange_id": [("core.validate_exchange_id", ids.validate_exchange_id)],
    }
    return api + checks[kind]


def test_the_api_checks_ids_in_parameters_and_bodies(tmp_path: Path) -> None:
    # The test below reads the API's patterns from its OpenAPI document: it must find them.
    patterns = _api_patterns(tmp_path)
    assert {"agent_id", "session_id", "trace_id", "tool_use_id"} <= set(patterns)


MINTED: dict[str, Callable[[], list[str]]] = {
    "agent_id": _agent_ids, "agent_hash": _hashes, "session_id": _session_ids, "trace_id": _trace_ids,
    "exchange_id": _exchange_ids,
}


@pytest.mark.parametrize("kind", sorted(MINTED))
def test_every_minted_id_passes_every_validator_of_its_kind(kind: str, tmp_path: Path) -> None:
    refused = []
    checks = _service_checks(kind, tmp_path)
    for value in MINTED[kind]():
        for name, check in checks:
            try:
                if check(value) is False:
                    refused.append((name, value))
            except (InvalidArgument, ConfigError) as error:
                refused.append((name, f"{value!r}: {error}"))
    assert not refused


def test_an_agent_id_is_the_prefix_and_leading_hex_of_its_hash() -> None:
    digest = agent_hash("sk-ant-example", b"secret")
    candidates = list(ids.agent_id_candidates(digest))
    assert candidates[0] == "smolt-" + digest[:8]
    assert candidates[-1] == "smolt-" + digest
    assert [len(c) - len("smolt-") for c in candidates] == [*range(8, 64, 2), 64]
    assert all(ids.agent_id_matches_hash(candidate, digest) for candidate in candidates)
    assert ids.agent_id_matches_hash(candidates[0], digest.upper())
    assert not ids.agent_id_matches_hash("smolt-" + ("0" if digest[0] != "0" else "1") + digest[1:8], digest)
    assert not ids.agent_id_matches_hash(digest[:8], digest)


@pytest.mark.parametrize(("validate", "value", "field"), [
    (ids.validate_agent_id, "", "agent_id"),
    (ids.validate_agent_id, "smolt-1234567", "agent_id"),
    (ids.validate_agent_id, "smolt-ABCDEF01", "agent_id"),
    (ids.validate_agent_id, "smolt-" + "a" * 129, "agent_id"),
    (ids.validate_agent_id, "agent-12345678", "agent_id"),
    (ids.validate_agent_hash, "", "agent_hash"),
    (ids.validate_agent_hash, "ab" * 15 + "a", "agent_hash"),
    (ids.validate_agent_hash, "a" * 129, "agent_hash"),
    (ids.validate_agent_hash, "xy" * 16, "agent_hash"),
    (ids.validate_session_id, "", "session_id"),
    (ids.validate_session_id, "x" * 257, "session_id"),
    (ids.validate_session_id, "line\nbreak", "session_id"),
    (ids.validate_trace_id, "", "trace_id"),
    (ids.validate_trace_id, "-leading-dash", "trace_id"),
    (ids.validate_trace_id, "t" * 97, "trace_id"),
    (ids.validate_trace_id, "has space", "trace_id"),
    (ids.validate_exchange_id, "ab" * 15, "exchange_id"),
    (ids.validate_exchange_id, "zz" * 16, "exchange_id"),
    (ids.validate_tool_use_id, "", "tool_use_id"),
    (ids.validate_tool_use_id, "toolu_" + "x" * 251, "tool_use_id"),
    (ids.validate_tool_use_id, "toolu 1", "tool_use_id"),
])
def test_validators_refuse_what_is_not_an_id_and_name_the_field(
        validate: Callable[[str], str], value: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate(value)
    assert caught.value.field == field


def test_validators_return_the_stored_form() -> None:
    assert ids.validate_agent_hash("AB" * 16) == "ab" * 16
    assert ids.validate_exchange_id("CD" * 16) == "cd" * 16
    assert ids.validate_tool_use_id("toolu_01A-b") == "toolu_01A-b"
    assert ids.validate_session_id("my task") == "my task"


def test_an_over_long_session_id_says_how_long_it_was() -> None:
    with pytest.raises(InvalidArgument) as caught:
        ids.validate_session_id("x" * 300)
    assert caught.value.reason == "FIELD_TOO_LONG" and "300" in str(caught.value)


def test_the_session_pattern_refuses_control_characters_and_allows_the_rest() -> None:
    pattern = re.compile(ids.SESSION_ID_PATTERN)
    assert pattern.match("my task: 1/2 \u2603")
    assert not pattern.match("bell\x07") and not pattern.match("c1\x85") and not pattern.match("")
    assert not pattern.match("x" * 257)
