"""The agent hash and the installation secret (core/identity.py)."""

from __future__ import annotations

import hashlib
import hmac
import stat
import threading
from pathlib import Path

import pytest

from smoltbot.core.identity import (
    AGENT_HASH_HEX_LENGTH,
    CREDENTIAL_HEADERS,
    agent_hash,
    credential_from_headers,
    load_hash_secret,
)


class Headers(dict[str, str]):
    """A case-insensitive mapping, like aiohttp's and starlette's headers."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__({key.lower(): value for key, value in values.items()})

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


def test_agent_hash_is_a_keyed_hmac_sha256_of_at_least_128_bits() -> None:
    digest = agent_hash("sk-ant-api03-secret", b"server-secret")
    assert digest == hmac.new(b"server-secret", b"sk-ant-api03-secret", hashlib.sha256).hexdigest()
    assert len(digest) == AGENT_HASH_HEX_LENGTH >= 32
    assert int(digest, 16) >= 0 and digest == digest.lower()


def test_agent_hash_is_stable_per_credential_and_depends_on_the_secret() -> None:
    assert agent_hash("key-a", b"s1") == agent_hash("key-a", b"s1")
    assert agent_hash("key-a", b"s1") != agent_hash("key-b", b"s1")
    assert agent_hash("key-a", b"s1") != agent_hash("key-a", b"s2")
    assert "key-a" not in agent_hash("key-a", b"s1")


@pytest.mark.parametrize(("headers", "expected"), [
    ({"x-api-key": "sk-1"}, "sk-1"),
    ({"X-Api-Key": "  sk-2  "}, "sk-2"),
    ({"authorization": "Bearer tok-3"}, "tok-3"),
    ({"Authorization": "bearer   tok-4 "}, "tok-4"),
    ({"x-api-key": "sk-5", "authorization": "Bearer tok-5"}, "sk-5"),
    ({"x-api-key": "   ", "authorization": "Bearer tok-6"}, "tok-6"),
    ({"authorization": "Basic dXNlcjpwYXNz"}, None),
    ({"authorization": "Bearer "}, None),
    ({}, None),
])
def test_credential_comes_from_x_api_key_then_bearer(headers: dict[str, str], expected: str | None) -> None:
    assert credential_from_headers(Headers(headers)) == expected


def test_credential_headers_are_all_listed_for_scrubbing() -> None:
    assert {"x-api-key", "authorization"} <= CREDENTIAL_HEADERS


def test_configured_secret_wins_and_writes_nothing(tmp_path: Path) -> None:
    assert load_hash_secret(tmp_path / "home", "configured") == b"configured"
    assert not (tmp_path / "home").exists()


def test_generated_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_hash_secret(tmp_path)
    second = load_hash_secret(tmp_path)
    assert first == second and len(first) >= 32
    assert stat.S_IMODE((tmp_path / "hash_secret").stat().st_mode) == 0o600


def test_processes_starting_together_agree_on_the_secret(tmp_path: Path) -> None:
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        results.append(load_hash_secret(tmp_path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1
